"""One real conversion in a fresh process (tests run it as a subprocess).

    python convert_probe.py PATH TARGET SHAPE  ->  {"ok": bool, "error": str, "missing": [...]}

TARGET: coreml (a TorchScript file or a .pt2) | onnx (a .pt2 through the default dynamo
exporter, or TorchScript through the legacy one). Each attempt gets its own process: a failed
export can poison later conversions in the same process.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import tempfile
import warnings

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)


def main(path: str, target: str, shape: str) -> dict:
    import torch

    out: dict = {"ok": False}
    torchscript = not path.endswith(".pt2")
    model = torch.jit.load(path) if torchscript else torch.export.load(path)
    example = [torch.randn(*(int(d) for d in shape.split("x")))]
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            if target == "coreml":
                import coremltools as ct

                if torchscript:
                    inputs = [ct.TensorType(shape=t.shape) for t in example]
                    ml = ct.convert(model, inputs=inputs, convert_to="mlprogram",
                                    minimum_deployment_target=ct.target.iOS17,
                                    skip_model_load=True)  # fmt: skip
                else:
                    ep = model.run_decompositions({})
                    ml = ct.convert(
                        ep,
                        convert_to="mlprogram",
                        skip_model_load=True,
                        minimum_deployment_target=ct.target.iOS17,
                    )
                out["ops"] = len(list(ml._mil_program.functions["main"].operations))
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    torch.onnx.export(model, tuple(example), f"{tmp}/m.onnx",
                                      dynamo=not torchscript)  # fmt: skip
        out["ok"] = True
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        cause = exc.__cause__
        while cause is not None:
            out["error"] += f" | {type(cause).__name__}: {cause}"[:1000]
            cause = cause.__cause__
        if target == "coreml" and torchscript:
            # the converter's own list of every op it lacks (what ct.convert(debug=True) prints)
            import coremltools as ct
            from coremltools.converters.mil.frontend.torch.converter import TorchConverter

            inputs = [ct.TensorType(shape=t.shape) for t in example]
            _, missing = TorchConverter(torch.jit.load(path), inputs).check_ops()
            out["missing"] = sorted(missing)
    return out


def run_many(cases: list[tuple[str, str, str]]) -> list[dict]:
    """:func:`main` for each (path, target, shape), each in its own fresh process, two at a
    time (the tests' machine has two cores)."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    def one(case: tuple[str, str, str]) -> dict:
        proc = subprocess.run(
            [sys.executable, __file__, *case], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, cases))


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3])))
