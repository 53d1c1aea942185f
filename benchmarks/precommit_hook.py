"""How quick the pre-commit hook is: installing its environment, and checking big checkpoints.

    python benchmarks/precommit_hook.py [--gb 2] [--skip-install]

1. ``pre-commit try-repo`` on this checkout, cold (a fresh store): builds the hook's
   environment (modelgate's core dependencies, no torch) and runs the hook once.
2. ``modelgate check`` in a fresh process on checkpoints of ``--gb`` gigabytes: a torch.save
   state dict, a safetensors file and a .pt2 export would all be read from their metadata, so
   the time should not grow with the file. The safetensors file is sparse (no disk cost).
Prints one line per measurement; nothing is asserted (the tests assert behaviour, not time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# a benchmark times the work: the result cache (on by default) would answer repeat runs
os.environ.setdefault("MODELGATE_NO_CACHE", "1")

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = (
    "pyproject.toml",
    "README.md",
    ".pre-commit-hooks.yaml",
    "modelgate/",
    "rules/",
    "targets/",
)


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=b", "-c", "user.email=b@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def _timed(cmd: list[str], cwd: Path) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - start, done.returncode


def sparse_safetensors(path: Path, gigabytes: float) -> None:
    """A valid safetensors header for one float32 tensor of ``gigabytes``, the data sparse."""
    numel = int(gigabytes * 1e9) // 4
    header = json.dumps({"w": {"dtype": "F32", "shape": [numel], "data_offsets": [0, numel * 4]}})
    raw = header.encode() + b" " * (-len(header) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + numel * 4)


def torch_state_dict(path: Path, gigabytes: float) -> None:
    import torch

    numel = int(gigabytes * 1e9) // 4
    weight = torch.zeros(numel // 576, 64, 3, 3)  # one huge convolution
    torch.save({"conv.weight": weight, "conv.bias": torch.zeros(weight.shape[0])}, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="checkpoint size (default 2)")
    parser.add_argument("--skip-install", action="store_true", help="skip the try-repo timing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelgate-bench-") as tmp_name:
        tmp = Path(tmp_name)
        work = tmp / "work"
        work.mkdir()
        _git(work, "init", "-q")
        sparse_safetensors(work / "big.safetensors", args.gb)
        torch_state_dict(work / "big.pt", args.gb)
        _git(work, "add", "-A")
        check = [sys.executable, "-m", "modelgate", "check"]
        for name in ("big.safetensors", "big.pt"):
            size = (work / name).stat().st_size / 1e9
            seconds, code = _timed([*check, name], work)
            what = f"modelgate check {name} ({size:.1f} GB)"
            print(f"{what:<62}  {seconds:6.2f} s  (exit {code})")
        if not args.skip_install:
            hook_repo = tmp / "hook-repo"
            listed = subprocess.run(
                ["git", "ls-files", "-co", "--exclude-standard"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split("\n")
            for name in listed:
                if name.startswith(PACKAGE) and (ROOT / name).is_file():
                    (hook_repo / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / name, hook_repo / name)
            _git(hook_repo, "init", "-q")
            _git(hook_repo, "add", "-A")
            _git(hook_repo, "commit", "-q", "-m", "snapshot")
            cmd = [sys.executable, "-m", "pre_commit", "try-repo", str(hook_repo), "modelgate",
                   "--files", "big.safetensors", "big.pt"]  # fmt: skip
            seconds, code = _timed(cmd, work)
            what = "pre-commit try-repo: cold hook environment + the hook on both"
            print(f"{what}  {seconds:6.2f} s  (exit {code})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
