"""A fully connected layer holds most of the model.

## What it does
Flags a `Linear` (ONNX `Gemm` / `MatMul` with a constant weight) that holds at least
`min_share` of the model's parameters and at least `min_parameters` of them, or more than
`max_parameters` when that is set. Works from a bare state dict too, where a 2-D `weight`
counts as a fully connected layer.

## Why is this bad?
The usual cause is a `Flatten` of a large feature map straight into a `Linear`:
`AdaptiveAvgPool2d((128, 72))` -> `Flatten` -> `Linear(128*128*72, 1024)` is 1.2 B parameters
(4.8 GB). Core ML conversion of such a layer needs tens of GB of memory or dies, the app
bundle grows by gigabytes, and the layer adds nothing a pooled feature would not.

## Example
```python
self.pool = nn.AdaptiveAvgPool2d((128, 72))
self.head = nn.Linear(128 * 128 * 72, 1024)
```

## Use instead
```python
self.pool = nn.AdaptiveAvgPool2d(1)      # global pooling: one value per channel
self.head = nn.Linear(128, 1024)
```
or reduce channels with a 1x1 convolution before flattening.

## Options
- `min_share` (number, default 0.5): share of the model's parameters a layer must hold.
- `min_parameters` (integer, default 1000000): smaller layers are never flagged.
- `max_parameters` (integer or null, default null): flag any fully connected layer larger
  than this, whatever its share.

## References
- coremltools: Core ML model size and memory, https://apple.github.io/coremltools/docs-guides/source/opt-overview.html
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.finding import Location, Problem
from modelgate.graph import Layer, ModelGraph
from modelgate.rule import Option, dims, human_bytes, human_count

ID = "MG001"
NAME = "oversized-linear"
SEVERITY = "error"
NEEDS = "weights"
OPTIONS = {
    "min_share": Option(float, 0.5, "share of the model's parameters a layer must hold", minimum=0),
    "min_parameters": Option(int, 1_000_000, "smaller layers are never flagged", minimum=0),
    "max_parameters": Option(int, None, "flag any fully connected layer larger than this"),
}

_FLATTENING = {"aten::flatten", "aten::view", "aten::reshape", "aten::_unsafe_view",
               "onnx::Flatten", "onnx::Reshape"}  # fmt: skip
_PASSTHROUGH = {"dropout", "feature_dropout", "alpha_dropout", "relu", "gelu", "silu", "tanh",
                "sigmoid", "hardtanh", "leaky_relu", "contiguous", "clone", "detach", "alias",
                "_to_copy", "to", "identity"}  # fmt: skip


def _weight(layer: Layer) -> tuple[int, ...] | None:
    weight = layer.tensors.get("weight")
    if weight is None or len(weight.shape) != 2:
        return None
    return weight.shape


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    total = graph.parameter_count
    if total == 0:
        return
    for layer in graph.layers.values():
        if layer.kind != "linear":
            continue
        shape = _weight(layer)
        if shape is None:
            continue
        params = layer.numel
        share = params / total
        big_share = params >= options["min_parameters"] and share >= options["min_share"]
        too_big = options["max_parameters"] is not None and params > options["max_parameters"]
        if not (big_share or too_big):
            continue
        what = (
            f"{layer.short_type} {dims(shape)}"
            if not layer.inferred
            else f"2-D weight {dims(shape)}"
        )
        message = (
            f"{layer.path or '(root)'}: {what} holds {human_count(params)} parameters "
            f"({human_bytes(layer.nbytes)}, {share:.0%} of the model)"
        )
        feeder = _feeder(graph, layer.path)
        if feeder:
            message += f"; it is fed by {feeder}"
        yield Problem(
            message,
            Location(
                graph.path,
                module=layer.path or None,
                tensor=layer.tensors["weight"].name,
                source=graph.first_source(layer.path),
            ),
            fix="shrink the features before this layer: global pooling (nn.AdaptiveAvgPool2d(1)) "
            "or a 1x1 convolution ahead of Flatten, so the layer sees channels, not pixels",
            key=layer.path,
        )


def _feeder(graph: ModelGraph, module: str) -> str | None:
    """Describe what the layer's input is, when the graph says: "a flattened 128x128x72 map".

    Walks back through ops that keep the shape (dropout, activations) to the flatten."""
    producers = {out: op for op in graph.ops for out in op.outputs}
    for op in graph.ops:
        if module not in (op.module, op.name):  # ONNX layers are keyed by their node's name
            continue
        if op.opname.lower() not in ("linear", "gemm", "matmul", "addmm"):
            continue
        source = producers.get(op.inputs[0]) if op.inputs else None
        for _ in range(6):
            if source is None or source.target in _FLATTENING:
                break
            if source.opname.lower().rstrip("_") not in _PASSTHROUGH or not source.inputs:
                source = None
                break
            source = producers.get(source.inputs[0])
        if source is None:
            continue
        before = source.inputs[0] if source.inputs else None
        value = graph.value(before) if before else None
        if value is not None and value.shape and len(value.shape) >= 3:
            return f"a flattened {dims(value.shape[1:])} feature map"
        return "a flattened feature map"
    return None
