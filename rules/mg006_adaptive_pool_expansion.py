"""Adaptive pooling whose output size does not divide its input size.

## What it does
For every adaptive average / max pooling op, compares the input's spatial size with the
requested output size. When an output size does not divide the input size, or exceeds it,
the pooling windows overlap or vary in size and no single pooling op can express them.
Needs input shapes: from the model (ONNX, `.pt2`, TorchScript `traced_inputs`) or from the
config / `--input-shape`.

## Why is this bad?
coremltools then lowers the pooling to one slice-and-reduce per output window: an output of
128x72 is 9,216 windows and tens of thousands of ops. Conversion crawls for minutes, the
model is slow on device, and ONNX export has to decompose it the same way.

## Example
```python
nn.AdaptiveAvgPool2d((7, 7))   # after a 10x10 feature map: 10 % 7 != 0
```

## Use instead
```python
nn.AdaptiveAvgPool2d((5, 5))   # 10 % 5 == 0: one avg_pool with kernel 2, stride 2
nn.AdaptiveAvgPool2d(1)        # or global pooling
```
or resize the feature map (`F.interpolate`) to a multiple of the output first.

## Options
None.

## References
- coremltools adaptive pooling lowering, coremltools/converters/mil/frontend/torch/ops.py
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph
from modelgate.rule import Skip, dims

ID = "MG006"
NAME = "adaptive-pool-expansion"
SEVERITY = "error"
NEEDS = "weights"
OPTIONS: dict = {}

_POOLS = {"aten::adaptive_avg_pool1d": 1, "aten::adaptive_avg_pool2d": 2,
          "aten::adaptive_avg_pool3d": 3, "aten::_adaptive_avg_pool2d": 2,
          "aten::_adaptive_avg_pool3d": 3, "aten::adaptive_max_pool1d": 1,
          "aten::adaptive_max_pool2d": 2, "aten::adaptive_max_pool3d": 3}  # fmt: skip
HOW_TO_GIVE_SHAPES = (
    "pass --input-shape NAME=1x3x224x224 or set inputs: [{name: NAME, shape: [1, 3, 224, 224]}] "
    "in modelgate.yaml"
)


def check(graph: ModelGraph, options: dict) -> Iterator[Problem | Skip]:
    pools = [op for op in graph.ops if op.target in _POOLS]
    if not graph.has_graph:
        layers = [layer for layer in graph.layers.values() if layer.kind == "adaptive_pool"]
        if layers:
            yield Skip(
                f"{len(layers)} adaptive pooling layer(s) but no graph to follow shapes through; "
                "check the traced or exported model (.pt2 / TorchScript) instead"
            )
        return
    unknown = 0
    for op in pools:
        rank = _POOLS[op.target]
        value = graph.value(op.inputs[0]) if op.inputs else None
        out = op.args.get("output_size")
        if not isinstance(out, list) or len(out) != rank:
            continue
        if value is None or value.shape is None or len(value.shape) < rank:
            unknown += 1
            continue
        spatial = value.shape[-rank:]
        if not all(isinstance(d, int) for d in spatial):
            unknown += 1
            continue
        out_sizes = [o if isinstance(o, int) else s for o, s in zip(out, spatial, strict=True)]
        bad = [
            (s, o)
            for s, o in zip(spatial, out_sizes, strict=True)
            if isinstance(o, int) and (o > s or s % o)
        ]
        if not bad:
            continue
        windows = 1
        for o in out_sizes:
            windows *= int(o)
        reasons = ", ".join(dict.fromkeys(f"{s} into {o}" for s, o in bad))
        kind = "AdaptiveMaxPool" if "max" in op.target else "AdaptiveAvgPool"
        yield Problem(
            f"{op.module or op.name}: {kind}{rank}d to {dims(tuple(out_sizes))} from a "
            f"{dims(tuple(spatial))} input does not divide ({reasons}): coremltools emits one op "
            f"per output window ({windows:,} windows) and ONNX export must decompose it",
            Location(graph.path, module=op.module, op=op.name, source=op.source),
            fix="make the input a multiple of the output size, pool to a divisor, or use global "
            "pooling (output size 1)",
            key=f"{op.module or op.name}",
        )
    if unknown:
        yield Skip(
            f"{unknown} adaptive pooling op(s) with unknown input shapes; {HOW_TO_GIVE_SHAPES}"
        )
