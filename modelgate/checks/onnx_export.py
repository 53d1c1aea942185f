"""ONNX export (in a step's child process), the full checker, and an ONNX Runtime session.

A torch.export program goes through torch.onnx's default (dynamo) exporter; a TorchScript
module only through the legacy one (``dynamo=False``; the dynamo exporter refuses a
ScriptModule). The checker gets the file's path, not a loaded proto, so that models over
2 GB with external data are checked too. Sessions run sequentially with fixed threads, so
that a latency means the same thing from one run to the next.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

EXPORTING = "exporting to ONNX"


def export(source: Any, kind: str, example: tuple[Any, ...], path: str) -> dict[str, Any]:
    """Write ``path`` (and ``path``.data when the exporter splits weights out); facts."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "torchscript":
            torch.onnx.export(source, example, path, dynamo=False)
            exporter = "torch.onnx (TorchScript exporter)"
        else:
            torch.onnx.export(source, (), path, dynamo=True)
            exporter = "torch.onnx (dynamo exporter)"
    return {"exporter": exporter}


def export_model(emit: Any, job: Any, model: Any, samples: list, folder: str) -> Any:
    """A step's model exported to ``folder``/model.onnx: (path, facts with the exporter,
    seconds, bytes and opset), or None once the failure is emitted as ``job.target``'s."""
    from modelgate.checks import steps

    path = os.path.join(folder, "model.onnx")
    emit.stage(f"{job.target}: {EXPORTING}")
    start = time.perf_counter()
    try:
        facts = export(model.program, model.kind, tuple(steps.tensors(samples[0])), path)
    except Exception as exc:
        emit(job.target, {"ok": False, "stage": EXPORTING, **steps.converter_error(exc, job)})
        return None
    facts["seconds"] = round(time.perf_counter() - start, 3)
    facts["bytes"] = files_bytes(path)
    facts["opset"] = opset(path)
    return path, facts


def files_bytes(path: str) -> int:
    """The model and its external data files (what has to ship)."""
    import onnx

    total = os.path.getsize(path)
    folder = os.path.dirname(path)
    model = onnx.load(path, load_external_data=False)
    seen = set()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value not in seen:
                seen.add(entry.value)
                data = os.path.join(folder, entry.value)
                if os.path.isfile(data):
                    total += os.path.getsize(data)
    return total


def opset(path: str) -> int | None:
    import onnx

    model = onnx.load(path, load_external_data=False)
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def check(path: str) -> None:
    """onnx.checker with the full check (shape inference included); raises on a problem."""
    import onnx

    onnx.checker.check_model(path, full_check=True)


def session(path: str, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def runner(sess: Any) -> Any:
    """A callable: list of input arrays -> list of output arrays."""
    names = [i.name for i in sess.get_inputs()]

    def call(arrays: list[Any]) -> list[Any]:
        return sess.run(None, dict(zip(names, arrays, strict=True)))

    return call
