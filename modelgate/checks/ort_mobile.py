"""ONNX Runtime Mobile's own partitioning analysis, for the ``ort-mobile`` target.

The calls into ``onnxruntime.tools.mobile_helpers.usability_checker`` (what
``python -m onnxruntime.tools.check_onnx_model_mobile_usability`` runs) are not a documented
API, so they are isolated here and tested against that tool's own output. As the tool does,
the model is first optimized to ONNX Runtime's BASIC level, then each execution provider's
support table (shipped in the wheel) partitions the graph: with the shapes as they are, and,
where dynamic shapes cost nodes, as if they were fixed.
"""

from __future__ import annotations

import pathlib
import tempfile
from typing import Any

# execution provider -> the support table the tool reads for it (None: NNAPI's own checker)
EPS = {
    "NNAPI": None,
    "CoreML MLProgram": "coreml_supported_mlprogram_ops.md",
    "CoreML NeuralNetwork": "coreml_supported_neuralnetwork_ops.md",
}
MAX_NODES = 20  # unsupported nodes listed per provider


def analyze(path: str) -> dict[str, Any]:
    """Per execution provider: nodes, supported nodes, partitions, the unsupported ops and
    nodes, the nodes lost to dynamic shapes, ONNX Runtime's verdict, and the same with fixed
    shapes when dynamic shapes cost nodes."""
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    with tempfile.TemporaryDirectory(prefix="modelgate-ort-mobile-") as folder:
        optimized = pathlib.Path(folder) / "model.onnx"
        optimize_model(pathlib.Path(path), optimized, use_external_initializers=True)
        model = ModelProtoWithShapeInfo(optimized.resolve()).model_with_shape_info
        dynamic_inputs, _ = uc.check_shapes(model.graph)
        out: dict[str, Any] = {}
        for ep, table in EPS.items():

            def partition(fixed_required: bool, table: str | None = table) -> Any:
                if table is None:
                    return uc.check_nnapi_partitions(model, fixed_required)
                return uc.check_coreml_partitions(model, fixed_required, table)

            info = partition(True)
            entry = _describe(info, model.graph)
            if info.suitability() != uc.PartitioningInfo.TryWithEP.YES and dynamic_inputs:
                entry["with_fixed_shapes"] = _describe(partition(False), model.graph)
            out[ep] = entry
    return {
        "eps": out,
        "dynamic_inputs": sorted(getattr(i, "name", str(i)) for i in dynamic_inputs),
    }


def _describe(info: Any, graph: Any) -> dict[str, Any]:
    checker = info.supported_ops_checker
    unsupported = [
        # the optimizer's inlined functions leave nodes without names: their first output
        {"op": node.op_type, "node": node.name or f"output {node.output[0]}"}
        for node in graph.node
        if not checker.is_op_supported(node)
    ]
    return {
        "nodes": info.num_nodes,
        "supported_nodes": info.num_supported_nodes,
        "partitions": info.num_partitions,
        "partition_sizes": [len(group) for group in info.supported_groups],
        "unsupported_ops": sorted(info.unsupported_ops),
        "unsupported_nodes": unsupported[:MAX_NODES],
        "dynamic_shape_nodes": info.nodes_unsupported_due_to_dynamic_input,
        "rank_nodes": info.num_unsupported_nodes_due_to_rank,
        "suitability": info.suitability().name,
    }
