"""The result cache: a second run over unchanged models against the first, and one changed.

    python benchmarks/bench_cache.py [--models 8] [--blocks 6]

Writes eight seeded torch.export models (small residual CNNs, each a different width), then
times ``modelgate check --convert coreml --convert onnx --compress palettize-8 --format json``
over the folder in a fresh process each time, with a fresh cache folder:

1. cold: nothing cached, every model converted, compressed and timed;
2. warm: nothing changed; must take at most 10% of the cold run and print the same report
   (the JSON without the cache's markers: ``cached`` on each model and on its latency);
3. one model re-exported with other weights: only it is checked again, which should cost
   about what checking that model alone costs (timed too, with ``--no-cache``).

The checks run from a copy of modelgate's code taken at the start, since the key holds a
digest of the code and an edit to the checkout during the benchmark would miss every entry.

Prints the four wall times, the warm / cold ratio and the one-changed / one-model ratio.

Measured here (2 cores, 8 models, 6 blocks): cold 62.7 s, warm 0.33 s (0.5%, reports
identical), one changed 16.1 s against 14.0 s for that model alone (1.15x).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHECK = ["--convert", "coreml", "--convert", "onnx", "--compress", "palettize-8"]


def export(path: Path, width: int, blocks: int, seed: int) -> None:
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
            self.bn = nn.BatchNorm2d(channels)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.bn(self.conv(x)) + x)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, width, 3, padding=1)
            self.blocks = nn.Sequential(*(Block(width) for _ in range(blocks)))
            self.head = nn.Linear(width, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))

    torch.manual_seed(seed)
    model = Net().eval()
    program = torch.export.export(model, (torch.randn(1, 3, 32, 32),))
    torch.export.save(program, str(path))


def snapshot(folder: Path) -> Path:
    """A copy of modelgate's code (with its rules and targets where the installed package
    has them) to run from: the key holds a digest of the code, so an edit to the checkout
    while the benchmark runs would rightly miss every entry."""
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "modelgate", folder / "modelgate", ignore=skip)
    for part in ("rules", "targets"):
        shutil.copytree(ROOT / part, folder / "modelgate" / part, ignore=skip)
    return folder


CODE: list[Path] = []  # the snapshot the checks run from


def check(folder: Path, cache: Path, *extra: str) -> tuple[float, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k != "MODELGATE_NO_CACHE"}
    env["MODELGATE_NO_PROGRESS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([*map(str, CODE), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "modelgate", "check", *extra, *CHECK, "--format", "json",
               "--cache-dir", str(cache)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"modelgate failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout)


def unmarked(report: dict[str, Any]) -> dict[str, Any]:
    """The report without the cache's markers."""
    out = json.loads(json.dumps(report))
    for model in out["models"]:
        model.pop("cached", None)
        latency = model["metrics"].get("latency")
        if isinstance(latency, dict):
            latency.pop("cached", None)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=6)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="modelgate-bench-cache-"))
    try:
        CODE.append(snapshot(tmp / "code"))
        models = tmp / "models"
        models.mkdir()
        paths = [models / f"net{i}.pt2" for i in range(args.models)]
        for i, path in enumerate(paths):
            export(path, width=16 + 2 * i, blocks=args.blocks, seed=i)
        cache = tmp / "cache"

        cold, first = check(tmp, cache, "models")
        warm, second = check(tmp, cache, "models")
        cached = sum("cached" in m for m in second["models"])
        same = unmarked(first) == unmarked(second)

        one = len(paths) // 2
        export(paths[one], width=16 + 2 * one, blocks=args.blocks, seed=100)  # other weights
        changed, third = check(tmp, cache, "models")
        rechecked = [m["path"] for m in third["models"] if "cached" not in m]
        alone, _ = check(tmp, cache, "--no-cache", str(paths[one].relative_to(tmp)))

        print(f"models: {args.models} torch.export CNNs; check: {' '.join(CHECK)} (+ latency)")
        print(f"cold run (nothing cached):     {cold:7.2f} s")
        print(f"warm run (nothing changed):    {warm:7.2f} s  ({cached} of {args.models} "
              f"from the cache; reports identical: {same})")  # fmt: skip
        print(f"warm / cold:                   {warm / cold:7.1%}  (goal: at most 10%)")
        print(f"one model changed:             {changed:7.2f} s  (checked again: "
              f"{', '.join(rechecked) or 'none'})")  # fmt: skip
        print(f"that model alone, no cache:    {alone:7.2f} s  (one-changed / alone: "
              f"{changed / alone:.2f}x)")  # fmt: skip
        ok = same and cached == args.models and warm <= 0.1 * cold and len(rechecked) == 1
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
