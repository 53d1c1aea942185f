"""What modelgate's full check costs next to the bare coremltools calls it wraps.

    python benchmarks/bench_overhead.py [--runs 3] [--preset palettize-4] [--keep DIR]

Builds a ResNet-18 (defined below: torchvision is not needed), exports it with torch.export
to a .pt2, then times, each in a fresh process and interleaved, ``--runs`` times:

- bare: ``import torch, coremltools``; ``torch.export.load``; ``ct.convert`` to an ML program
  (iOS18, FP16, ``skip_model_load`` as modelgate does); ``palettize_weights`` with the
  preset's config;
- modelgate: ``modelgate check model.pt2 --convert coreml --compress PRESET --format json``
  (loading, the static rules, the conversion, the compression, drift on the default 8
  synthetic samples, latency with the default 2 + 10 runs, the budget, the report).

The bare calls also run with ``OMP_NUM_THREADS=1`` ("bare-1t"): scikit-learn's k-means
(palettization) is faster single-threaded on small weight groups, and modelgate's steps run
with one thread, so the ratio is taken against the faster bare variant. Prints the median
wall and CPU time (this process's children: user + system) of each, and the ratio
modelgate / bare (the goal is <= 1.3). Nothing is asserted: timings are shown here,
the tests assert behaviour.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# a benchmark times the work: the result cache (on by default) would answer repeat runs
os.environ.setdefault("MODELGATE_NO_CACHE", "1")

BARE = r"""
import os, sys, warnings
os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore")
import torch
import coremltools as ct
import coremltools.optimize.coreml as cto

path, preset = sys.argv[1], sys.argv[2]
options = {
    "palettize-8": dict(mode="kmeans", nbits=8, granularity="per_tensor"),
    "palettize-6": dict(mode="kmeans", nbits=6, granularity="per_tensor"),
    "palettize-4": dict(mode="kmeans", nbits=4, granularity="per_grouped_channel", group_size=16),
    "int8": dict(mode="linear_symmetric", dtype="int8", granularity="per_channel"),
    "int4": dict(mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32),
}[preset]
program = torch.export.load(path).run_decompositions({})
mlmodel = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                     skip_model_load=True)  # as modelgate does: Core ML cannot load it on Linux
if preset.startswith("palettize"):
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(**options))
    compressed = cto.palettize_weights(mlmodel, config)
else:
    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(**options))
    compressed = cto.linear_quantize_weights(mlmodel, config)
print("ok")
"""


def resnet18_pt2(path: Path) -> None:
    """A ResNet-18 (torchvision's layout and parameter names), seeded, exported in eval mode."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, inp: int, out: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(out)
            self.downsample = None
            if stride != 1 or inp != out:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out)
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(y)) + identity)

    class ResNet18(nn.Module):
        def __init__(self, classes: int = 1000) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            widths = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
            for i, (inp, out, stride) in enumerate(widths, 1):
                setattr(
                    self,
                    f"layer{i}",
                    nn.Sequential(BasicBlock(inp, out, stride), BasicBlock(out, out)),
                )
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    torch.manual_seed(0)
    model = ResNet18().eval()
    example = (torch.randn(1, 3, 224, 224),)
    torch.export.save(torch.export.export(model, example), str(path))


def timed(
    cmd: list[str], cwd: Path, env: dict[str, str]
) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall s, CPU s of the process tree, result)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--preset", default="palettize-4")
    parser.add_argument("--keep", help="build the model in this folder and keep it")
    args = parser.parse_args(argv)
    folder = Path(args.keep or tempfile.mkdtemp(prefix="modelgate-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "resnet18.pt2"
    if not model.exists():
        resnet18_pt2(model)
    modelgate = [
        sys.executable,
        "-m",
        "modelgate",
        "check",
        str(model),
        "--convert",
        "coreml",
        "--compress",
        args.preset,
        "--format",
        "json",
        "-j",
        "1",
    ]
    bare = [sys.executable, "-c", BARE, str(model), args.preset]
    env = {**os.environ, "MODELGATE_NO_PROGRESS": "1"}
    one = {**env, "OMP_NUM_THREADS": "1"}
    variants = (("bare", bare, env), ("bare-1t", bare, one), ("modelgate", modelgate, env))
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in variants}
    report = None
    for run in range(args.runs):
        for name, cmd, environment in variants:
            wall, cpu, done = timed(cmd, folder, environment)
            if name.startswith("bare") and done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                return 1
            if name == "modelgate":
                if done.returncode not in (0, 1):
                    print(done.stderr[-2000:], file=sys.stderr)
                    return 1
                report = json.loads(done.stdout)
            times[name].append((wall, cpu))
            print(f"run {run + 1}: {name:<9} wall {wall:6.2f} s  cpu {cpu:6.2f} s", flush=True)
    assert report is not None
    metrics = report["models"][0]["metrics"]
    print(f"\nmodel: ResNet-18, {metrics['parameters']:,} parameters, {metrics['file_mb']} MB .pt2")
    print(
        f"modelgate measured: size {metrics.get('size_mb')} MB ({metrics.get('size_from')}), "
        f"drift {metrics.get('drift')}, latency {metrics.get('latency_ms')} ms "
        f"({(metrics.get('latency') or {}).get('runtime')})"
    )
    coreml = metrics.get("conversions", {}).get("coreml", {})
    compressed = metrics.get("compression", {}).get(args.preset, {})
    print(
        f"inside modelgate (last run): convert {coreml.get('seconds')} s, {args.preset} "
        f"{compressed.get('seconds')} s, {compressed.get('skipped')} layer(s) skipped"
    )
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    print(f"median of {args.runs} runs ({os.cpu_count()} CPUs):")
    for name in times:
        print(f"  {name:<9} wall {wall[name]:6.2f} s   cpu {cpu[name]:6.2f} s")
    fastest = min(("bare", "bare-1t"), key=wall.__getitem__)
    print(
        f"  ratio     wall {wall['modelgate'] / wall[fastest]:6.2f}     "
        f"cpu {cpu['modelgate'] / cpu[fastest]:6.2f}     (modelgate / {fastest}; goal: <= 1.3)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
