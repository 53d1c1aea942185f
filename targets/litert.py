"""LiteRT (TensorFlow Lite): litert-torch's converter, and the LiteRT interpreter on this CPU.

The target module for LiteRT (see :mod:`modelgate.target` for what a target declares). The
step converts the ``torch.export`` program's module with ``litert_torch.convert``, writes the
``.tflite`` flatbuffer, and loads it into ``ai_edge_litert``'s interpreter: loading is what
catches builtin ops the runtime lacks (a model using ``topk`` converts, then the interpreter
refuses ``STABLEHLO_SORT``), which is MG108. A program that loads is run for drift and
latency on this CPU. litert-torch's culprit finder is not used: it converts the model once
per candidate subgraph, minutes on a real model, while the converter's own error already
names the op in the cases tried here.

MG003 predicts from ``litert_ops.json``: what litert-torch and the interpreter did with each
op on torch's own OpInfo samples (``tools/gen_target_ops.py litert``). The same table tells
MG108 which op of the graph made the interpreter need a builtin it lacks.
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the step's types; what it uses is imported in the child, when it runs
    import numpy as np

    from modelgate.checks import steps
    from modelgate.checks.isolate import Emit

NAME = "litert"
LABEL = "LiteRT"
EXTRA = "litert"
REQUIRES = ("torch", "litert_torch", "ai_edge_litert")
CONVERSION = "LiteRT conversion"
CONVERTING = "converting to LiteRT"
LOADING = "loading the model into the LiteRT interpreter"
STAGE_LABELS = {LOADING: "LiteRT interpreter"}
LATER_STAGES = (LOADING,)
DRIFT_LABEL = "the LiteRT model"
DRIFT_OF = "LiteRT interpreter (CPU)"
RUNTIME = "LiteRT interpreter"
# MG003 / MG108: what litert-torch and the interpreter did with each op on torch's OpInfo
# samples (tools/gen_target_ops.py litert): LiteRT has no registry that says what loads
OP_TABLE = "litert_ops.json"
MODULES = ("torch", "numpy", "litert_torch", "ai_edge_litert.interpreter")
_MISSING = re.compile(r"Didn't find op for (?:builtin opcode|custom opcode) '([^']+)'")


def refuses(fmt: str) -> str | None:
    if fmt == "onnx":
        return "LiteRT converts PyTorch models, not ONNX files"
    if fmt == "torchscript":
        return "litert-torch converts torch.export programs; save the model with torch.export.save"
    return None


def modules(job: Any) -> list[str]:
    return list(MODULES)


def summary(result: dict[str, Any]) -> str:
    """The target matrix's detail: "flatbuffer, 12 tensors, inputs 1x3x16x16" or what will not
    load."""
    if result.get("missing_kernels"):
        return f"the interpreter has no kernel for {', '.join(result['missing_kernels'])}"
    shapes = ", ".join("x".join(map(str, s)) for s in result.get("input_shapes") or [])
    return f".tflite flatbuffer, {result.get('tensors')} tensors" + (
        f", inputs {shapes}" if shapes else ""
    )  # the shapes it was converted at: dynamic dims are fixed at the sizes filled in


def step(
    emit: Emit,
    job: steps.Job,
    model: steps.Loaded,
    samples: list[list[np.ndarray]],
    reference: list[np.ndarray] | None,
) -> None:
    """In the child: convert, write the ``.tflite``, load it into the interpreter, run it."""
    import warnings

    import litert_torch

    from modelgate.checks import steps

    with steps.scratch(NAME) as folder:
        path = os.path.join(folder, "model.tflite")
        emit.stage(f"litert: {CONVERTING}")
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                converted = litert_torch.convert(model.runner, tuple(steps.tensors(samples[0])))
                converted.export(path)
        except Exception as exc:
            emit(NAME, {"ok": False, "stage": CONVERTING, **steps.converter_error(exc, job)})
            return
        facts: dict[str, Any] = {
            "ok": True,
            "seconds": round(time.perf_counter() - start, 3),
            "bytes": os.path.getsize(path),
        }
        emit.stage(f"litert: {LOADING}")
        try:
            interpreter = load(path, job.settings.measure.threads)
        except Exception as exc:
            missing = _MISSING.findall(str(exc))
            emit(NAME, {**facts, "ok": False, "stage": LOADING, **steps.converter_error(exc, job),
                        **({"missing_kernels": missing, "op": missing[0].split("_")[-1].lower()}
                           if missing else {})})  # fmt: skip
            return
        facts["tensors"] = len(interpreter.get_tensor_details())
        facts["input_shapes"] = [
            [int(d) for d in i["shape"]] for i in interpreter.get_input_details()
        ]
        emit(NAME, facts)
        _run(emit, job, interpreter, samples, reference)


def load(path: str, threads: int = 1) -> Any:
    """The interpreter with the model loaded and its tensors allocated (where missing builtin
    ops are found)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def _run(
    emit: Emit,
    job: Any,
    interpreter: Any,
    samples: list[list[np.ndarray]],
    reference: list[np.ndarray] | None,
) -> None:
    from importlib import metadata

    import numpy as np

    from modelgate.checks import steps

    inputs = interpreter.get_input_details()
    outputs = interpreter.get_output_details()

    def call(sample: list[np.ndarray]) -> list[np.ndarray]:
        for detail, value in zip(inputs, sample, strict=True):
            interpreter.set_tensor(detail["index"], np.asarray(value, dtype=detail["dtype"]))
        interpreter.invoke()
        return [np.array(interpreter.get_tensor(o["index"]), dtype=np.float32) for o in outputs]

    threads = job.settings.measure.threads
    steps.measure_converted(
        emit, job, call, samples, reference,
        runtime=f"LiteRT {metadata.version('ai-edge-litert')} CPU interpreter",
        method="the .tflite run by the LiteRT interpreter on this CPU against torch, same inputs",
        model="the converted .tflite", threads=threads,
    )  # fmt: skip
