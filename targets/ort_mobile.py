"""ONNX Runtime Mobile: how much of the graph its NNAPI and Core ML execution providers take.

The target module for ONNX Runtime on phones (see :mod:`modelgate.target` for what a target
declares). ONNX Runtime's own mobile tooling (:mod:`modelgate.checks.ort_mobile`) partitions
the graph for NNAPI (Android) and the Core ML provider (iOS, ML Program and NeuralNetwork)
from the support tables its wheel ships: supported / total nodes, partitions, the unsupported
ops with their nodes, and the nodes lost to dynamic shapes (with the verdict if the shapes
were fixed). An ONNX file is analysed as given; a torch model is exported to ONNX first. A
provider that takes too little of the graph, or splits it into more than two partitions, is
MG110: the rest runs on the CPU provider with device copies between the parts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the steps' types; what they use is imported in the child, when it runs
    import numpy as np

    from modelgate.checks import steps
    from modelgate.checks.isolate import Emit

NAME = "ort-mobile"
LABEL = "ONNX Runtime Mobile"
EXTRA = "onnx"
REQUIRES = ("torch", "onnx", "onnxruntime")
CONVERSION = "ONNX Runtime Mobile partitioning"
CONVERTING = "partitioning for ONNX Runtime Mobile"
EXPORTING = "exporting to ONNX"
STAGE_LABELS = {EXPORTING: "ONNX export for ONNX Runtime Mobile"}
PREDICTS = False  # its analysis needs onnxruntime's optimizer: --convert ort-mobile runs it
FILE_FORMATS = {"onnx": "the ONNX file"}
FILE_CHECK = "ONNX Runtime Mobile partitioning"
MODULES = ("numpy", "onnx", "onnxruntime", "onnxruntime.tools.mobile_helpers.usability_checker")


def summary(result: dict[str, Any]) -> str:
    """The target matrix's detail: "NNAPI 5/6 nodes in 2 partitions; CoreML MLProgram ..."."""
    parts = []
    for ep, entry in (result.get("eps") or {}).items():
        text = f"{ep} {entry['supported_nodes']}/{entry['nodes']}"
        if entry["partitions"] != 1:
            text += f" in {entry['partitions']} partitions"
        parts.append(text)
    return "; ".join(parts)


def modules(job: Any) -> list[str]:
    torch = ["torch", "onnxscript"] if job.format != "onnx" else []
    return [*torch, *MODULES]


def file_step(emit: Emit, job: steps.Job) -> None:
    """In the child: an ONNX file as given, partitioned by ONNX Runtime's mobile tooling."""
    _analyze(emit, job, job.path, {"exporter": None})


def step(
    emit: Emit,
    job: steps.Job,
    model: steps.Loaded,
    samples: list[list[np.ndarray]],
    reference: list[np.ndarray] | None,
) -> None:
    """In the child: export the model to ONNX, then partition the export."""
    from modelgate.checks import onnx_export, steps

    with steps.scratch(NAME) as folder:
        exported = onnx_export.export_model(emit, job, model, samples, folder)
        if exported is not None:
            path, facts = exported
            _analyze(emit, job, path, {"exporter": facts["exporter"]})


def _analyze(emit: Emit, job: Any, path: str, facts: dict[str, Any]) -> None:
    from modelgate.checks import ort_mobile, steps

    emit.stage(f"ort-mobile: {CONVERTING}")
    try:
        analysis = ort_mobile.analyze(path)
    except Exception as exc:
        emit(NAME, {"ok": False, "stage": CONVERTING, **facts, **steps.converter_error(exc, job)})
        return
    emit(NAME, {"ok": True, **facts, **analysis})
