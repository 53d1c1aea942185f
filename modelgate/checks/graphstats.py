"""Compute and memory from the graph view alone: MACs, and an estimate of peak activations.

A phone runs out of memory long before it runs out of disk: the weights are one figure, the
activations alive at the same moment are the other. Both come from the op list and the
value shapes the loaders recorded (no torch), at the model's input shapes.

MACs count the multiply-accumulates of convolutions, linear layers and matrix products (the
rest is noise next to them). The activation estimate walks the ops in graph order, keeps a
value alive from the op that makes it to its last use, lets views and in-place ops share
their input's memory, and reports the largest total; runtimes that fuse ops need less.
"""

from __future__ import annotations

import math
from typing import Any

from modelgate.graph import ITEMSIZE, ModelGraph, Op

_CONV = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv"}
_CONV_T = {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "convtranspose"}
_LINEAR = {"linear", "addmm", "gemm"}
_MATMUL = {"matmul", "mm", "bmm", "baddbmm", "einsum"}
# ops whose output is a view of (or the same memory as) their first input
_VIEWS = {
    "view",
    "reshape",
    "_reshape_alias",
    "flatten",
    "unflatten",
    "permute",
    "transpose",
    "t",
    "expand",
    "squeeze",
    "unsqueeze",
    "select",
    "slice",
    "narrow",
    "as_strided",
    "alias",
    "detach",
    "unbind",
    "split",
    "split_with_sizes",
    "chunk",
    "view_as",
    "reshape_as",
    "expand_as",
    "contiguous",
    "dropout",
    "identity",
    "numpy_t",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Dropout",
}


def _shape(graph: ModelGraph, name: str) -> tuple[int, ...] | None:
    value = graph.values.get(name)
    if value is None or value.shape is None or not all(isinstance(d, int) for d in value.shape):
        return None
    return tuple(value.shape)  # type: ignore[arg-type]


def _weight_shape(graph: ModelGraph, op: Op) -> tuple[int, ...] | None:
    for name in op.inputs[1:2]:
        shape = _shape(graph, name)
        if shape is not None:
            return shape
        tensor = graph.tensors.get(name)
        if tensor is not None:
            return tensor.shape
    layer = graph.layers.get(op.module or "") if op.module else None
    if layer is not None and "weight" in layer.tensors:
        return layer.tensors["weight"].shape
    return None


def op_macs(graph: ModelGraph, op: Op) -> int | None:
    """Multiply-accumulates of one op; 0 for ops that are not products; None if unknown."""
    kind = op.opname
    base = kind.rstrip("_").lower() if not kind[:1].isupper() else kind.lower()
    if base not in _CONV | _CONV_T | _LINEAR | _MATMUL:
        return 0
    out = _shape(graph, op.outputs[0]) if op.outputs else None
    first = _shape(graph, op.inputs[0]) if op.inputs else None
    if base in _CONV | _CONV_T:
        weight = _weight_shape(graph, op)
        transposed = base in _CONV_T or bool(op.args.get("transposed"))
        if weight is None or not weight or (out if not transposed else first) is None:
            return None
        if transposed:
            return math.prod(first) * math.prod(weight[1:])  # type: ignore[arg-type]
        return math.prod(out) * math.prod(weight[1:])  # type: ignore[arg-type]
    if out is None:
        return None
    if base in _LINEAR:
        inner = first[-1] if first else None
        if base == "addmm" and len(op.inputs) > 1:
            mat = _shape(graph, op.inputs[1])
            inner = mat[-1] if mat else None
        return math.prod(out) * inner if inner else None
    if first is None or base == "einsum":
        return None
    return math.prod(out) * first[-1]


def _nbytes(graph: ModelGraph, name: str) -> int | None:
    value = graph.values.get(name)
    shape = _shape(graph, name)
    if value is None or shape is None:
        return None
    return int(math.prod(shape) * ITEMSIZE.get(value.dtype or "float32", 4))


def stats(graph: ModelGraph) -> dict[str, Any]:
    """``macs`` and ``peak_activation_mb`` (None when the shapes are not known), with how
    much of the graph the figures cover."""
    out: dict[str, Any] = {"macs": None, "peak_activation_mb": None}
    if not graph.has_graph or not graph.ops:
        out["why"] = "no graph of ops in this format"
        return out
    macs, unknown_macs = 0, 0
    for op in graph.ops:
        value = op_macs(graph, op)
        if value is None:
            unknown_macs += 1
        else:
            macs += value
    if unknown_macs == 0 or macs:
        out["macs"] = macs
    if unknown_macs:
        out["macs_ops_unknown"] = unknown_macs
    peak, covered, total = _peak(graph)
    if covered:
        out["peak_activation_mb"] = round(peak / 1e6, 3)
        out["peak_activation_coverage"] = round(covered / total, 3) if total else 1.0
    if out["macs"] is None and out["peak_activation_mb"] is None:
        out["why"] = "value shapes are not known: give input shapes (--input-shape)"
    return out


def _peak(graph: ModelGraph) -> tuple[int, int, int]:
    """(peak bytes, values with a known size, values) over a walk of the ops in order."""
    root: dict[str, str] = {}  # alias -> the value that owns the memory
    last_use: dict[str, int] = {}
    produced = {v.name for v in graph.inputs}
    for index, op in enumerate(graph.ops):
        for name in op.inputs:
            if name in produced:
                last_use[_find(root, name)] = index
        kind = op.opname
        alias = kind.endswith("_") or kind.rstrip("_") in _VIEWS or kind in _VIEWS
        for name in op.outputs:
            produced.add(name)
            if alias and op.inputs and op.inputs[0] in produced:
                root[name] = _find(root, op.inputs[0])
    for value in graph.outputs:  # outputs live to the end
        if value.name in produced:
            last_use[_find(root, value.name)] = len(graph.ops)
    size: dict[str, int] = {}
    known = total = 0
    for name in produced:
        if _find(root, name) != name:
            continue
        total += 1
        nbytes = _nbytes(graph, name)
        if nbytes is not None:
            size[name] = nbytes
            known += 1
    live = sum(size.get(v.name, 0) for v in graph.inputs)
    peak = live
    for index, op in enumerate(graph.ops):
        for name in op.outputs:
            if name in size and _find(root, name) == name:
                live += size[name]
        peak = max(peak, live)
        for name in set(op.inputs) | set(op.outputs):
            owner = _find(root, name)
            if owner == name and name in size and last_use.get(name, index) <= index:
                live -= size.pop(name)
    return peak, known, total


def _find(root: dict[str, str], name: str) -> str:
    while name in root:
        name = root[name]
    return name
