"""modelgate's check per target beside the bare toolchain calls doing the same work.

For one mid-size CNN (about 1.2M parameters, 1x3x96x96), each target is checked with
``modelgate check --target T --convert T`` and, in a fresh process each, done by hand with the
toolchain alone: load the ``.pt2``, convert, load the result, run it on the 8 samples modelgate
measures drift on, then time 2 + 10 runs as modelgate does. Both include their process start
and imports. Prints both wall times and their ratio (goal: at most 1.2x).

    python benchmarks/bench_targets.py [--targets coreml,onnx,executorch,litert,ort-mobile]

Measured here on a fresh clone (2 cores, one run each; modelgate s / bare s / ratio): coreml
12.5 / 13.7 / 0.91, onnx 7.8 / 8.2 / 0.96, executorch 19.5 / 16.2 / 1.20, litert 10.8 / 13.3 /
0.82, ort-mobile 8.4 / 8.2 / 1.02. ExecuTorch alone, twice more: 1.06 and 1.11 (the runs vary
by about 10%).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

# a benchmark times the work: the result cache (on by default) would answer repeat runs
os.environ.setdefault("MODELGATE_NO_CACHE", "1")

BARE = {
    "coreml": """
        import coremltools as ct
        program = torch.export.load(path).run_decompositions({})
        ml = ct.convert(program, minimum_deployment_target=ct.target.iOS16,
                        compute_precision=ct.precision.FLOAT16)
        module = torch.export.load(path).module()
        for x in samples: module(x)   # Core ML cannot run on Linux: torch runs the weights
    """,
    "onnx": """
        import onnx, onnxruntime as ort
        program = torch.export.load(path)
        torch.onnx.export(program, (samples[0],), out + ".onnx", dynamo=True)
        onnx.checker.check_model(out + ".onnx", full_check=True)
        s = ort.InferenceSession(out + ".onnx", providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        run = lambda x: s.run(None, {name: x.numpy()})
        for x in samples: run(x)
        for _ in range(12): run(samples[0])
    """,
    "executorch": """
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
        from executorch.runtime import Runtime
        program = torch.export.load(path)
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        pte = edge.to_executorch()
        method = Runtime.get().load_program(pte.buffer).load_method("forward")
        for x in samples: method.execute([x])
        for _ in range(12): method.execute([samples[0]])
    """,
    "litert": """
        import litert_torch
        from ai_edge_litert.interpreter import Interpreter
        program = torch.export.load(path)
        litert_torch.convert(program.module(), (samples[0],)).export(out + ".tflite")
        it = Interpreter(model_path=out + ".tflite", num_threads=1); it.allocate_tensors()
        i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
        def run(x):
            it.set_tensor(i, x.numpy()); it.invoke(); return it.get_tensor(o)
        for x in samples: run(x)
        for _ in range(12): run(samples[0])
    """,
    "ort-mobile": """
        import pathlib
        from onnxruntime.tools.mobile_helpers import usability_checker as uc
        program = torch.export.load(path)
        torch.onnx.export(program, (samples[0],), out + ".onnx", dynamo=True)
        uc.analyze_model(pathlib.Path(out + ".onnx"))
    """,
}
PRELUDE = """
import sys, warnings, torch
warnings.simplefilter("ignore")
torch.set_num_threads(1)
path, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
samples = [torch.randn(1, 3, 96, 96) for _ in range(8)]
"""
MODEL = """
import torch
from torch import nn
def block(i, o): return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())
model = nn.Sequential(block(3, 32), nn.MaxPool2d(2), block(32, 64), nn.MaxPool2d(2), block(64, 128),
                      nn.MaxPool2d(2), block(128, 256), block(256, 256), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(256, 100)).eval()
torch.manual_seed(0)
torch.export.save(torch.export.export(model, (torch.randn(1, 3, 96, 96),)), sys.argv[1])
"""


def _time(args: list[str], cwd: Path) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=1800)
    return time.perf_counter() - start, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", default=",".join(BARE))
    targets = parser.parse_args().targets.split(",")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        subprocess.run([sys.executable, "-c", "import sys\n" + MODEL, "cnn.pt2"], cwd=root,
                       check=True, capture_output=True)  # fmt: skip
        print(f"{'target':<11} {'modelgate s':>11} {'bare s':>8} {'ratio':>6}")
        for target in targets:
            ours, _ = _time(  # exit 1 is a finding, not a failure of the run
                [sys.executable, "-m", "modelgate", "check", "cnn.pt2", "--target", target,
                 "--convert", target, "--format", "json", "-j", "1", "--fail-on", "error"],
                root,
            )  # fmt: skip
            script = PRELUDE + textwrap.dedent(BARE[target])
            bare, bare_code = _time([sys.executable, "-c", script, "cnn.pt2", "out"], root)
            status = "" if bare_code == 0 else f"  (bare exit {bare_code})"
            print(f"{target:<11} {ours:>11.1f} {bare:>8.1f} {ours / bare:>6.2f}{status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
