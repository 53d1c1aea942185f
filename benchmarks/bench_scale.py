"""Checking a big state dict costs what reading its metadata costs, not its weights.

    python benchmarks/bench_scale.py [--sizes 0.1 1 4] [--folder /tmp]

Builds torch.save (zip format) state dicts of each size in GB, shaped like a transformer's
(4096-wide float32 matrices), and times, each in a fresh process:

- ``modelgate check`` on the file (its whole process tree: the CLI and its worker);
- ``torch.load(weights_only=True)`` of the same file, with the time of the load call alone
  beside the process's (which includes importing torch).

Peak RSS is the largest resident set of any process in the tree (what ``/usr/bin/time -v``
reports). Goal on the 4 GB file: modelgate under 1 s and under 300 MB. Files are deleted as
soon as they are measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# a benchmark times the work: the result cache (on by default) would answer repeat runs
os.environ.setdefault("MODELGATE_NO_CACHE", "1")

# Runs one command and reports its wall time and the peak RSS of its process tree.
MEASURE = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"wall": wall, "peak_mb": peak_kb / 1024, "code": done.returncode,
                  "stdout": done.stdout[-2000:], "stderr": done.stderr[-2000:]}))
"""

TORCH_LOAD = r"""
import sys, time
import torch
start = time.perf_counter()
sd = torch.load(sys.argv[1], weights_only=True, map_location="cpu")
print(f"LOAD {time.perf_counter() - start:.3f} {len(sd)}")
"""


def measure(cmd: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True)
    return json.loads(out.stdout)


def warm(path: Path) -> None:
    """Read the file once, so both readers find it in the page cache alike."""
    with open(path, "rb") as fh:
        while fh.read(64 * 1024 * 1024):
            pass


def build(path: Path, gigabytes: float) -> int:
    """A state dict of ~``gigabytes`` GB: layers of q/k/v/o 4096x4096 float32 plus norms."""
    import torch

    target = int(gigabytes * 1e9)
    state: dict[str, torch.Tensor] = {}
    size, layer = 0, 0
    while size < target:
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            rows = min(4096, max(1, (target - size) // (4096 * 4)))
            state[f"model.layers.{layer}.self_attn.{name}.weight"] = torch.empty(rows, 4096)
            size += rows * 4096 * 4
            if size >= target:
                break
        state[f"model.layers.{layer}.input_layernorm.weight"] = torch.ones(4096)
        size += 4096 * 4
        layer += 1
    torch.save(state, path)
    return len(state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.1, 1.0, 4.0])
    parser.add_argument("--folder", default=None, help="where to write the checkpoints")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="modelgate-scale-", dir=args.folder))
    print(f"{'file':>8} {'tensors':>8} | {'modelgate check':>22} | "
          f"{'torch.load(weights_only=True)':>40}")  # fmt: skip
    print(f"{'':>8} {'':>8} | {'wall':>10} {'peak RSS':>11} | "
          f"{'process':>10} {'load call':>10} {'peak RSS':>11}")  # fmt: skip
    ok = True
    try:
        for gigabytes in args.sizes:
            path = folder / f"state_{gigabytes:g}gb.pt"
            tensors = build(path, gigabytes)
            size = path.stat().st_size
            os.sync()
            warm(path)
            mg = measure([sys.executable, "-m", "modelgate", "check", str(path)])
            tl = measure([sys.executable, "-c", TORCH_LOAD, str(path)])
            load_call = next(
                (float(line.split()[1]) for line in tl["stdout"].splitlines()
                 if line.startswith("LOAD")), float("nan"),
            )  # fmt: skip
            if mg["code"] not in (0, 1) or "Traceback" in mg["stderr"]:
                print(f"modelgate failed: {mg['stderr']}")
                ok = False
            print(f"{size / 1e9:>6.2f}GB {tensors:>8} | {mg['wall']:>8.2f} s "
                  f"{mg['peak_mb']:>8.0f} MB | {tl['wall']:>8.2f} s {load_call:>8.2f} s "
                  f"{tl['peak_mb']:>8.0f} MB")  # fmt: skip
            verdict = (mg["stdout"].splitlines() or ["(no output)"])[0]
            print(f"{'':>17} modelgate said: {verdict}")
            if gigabytes >= 4:
                met = mg["wall"] < 1.0 and mg["peak_mb"] < 300
                print(f"goal on {size / 1e9:.1f} GB (modelgate < 1 s, < 300 MB): "
                      f"{'met' if met else 'NOT met'}")  # fmt: skip
            path.unlink()
    finally:
        for leftover in folder.glob("*"):
            leftover.unlink()
        folder.rmdir()
    return 0 if ok else 1


if __name__ == "__main__":
    start = time.perf_counter()
    code = main()
    print(f"(benchmark took {time.perf_counter() - start:.0f} s)")
    sys.exit(code)
