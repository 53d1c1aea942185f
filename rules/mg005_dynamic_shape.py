"""Inputs with dynamic dimensions, and ops whose output shape depends on the data.

## What it does
For the `coreml` target (ONNX takes dynamic dimensions as they are): for each model input,
names every dimension that is not a fixed number (a symbol such as
`s77` in a `torch.export` program, a `dim_param` such as `batch` in ONNX) and says what each
target needs. Also flags ops whose output shape depends on input values (`nonzero`, `unique`,
`masked_select`, ONNX `NonZero`, ...).

## Why is this bad?
Core ML needs every input shape fixed or declared: a range (`ct.RangeDim(lower, upper)`) or
a set (`ct.EnumeratedShapes`); unbounded dimensions convert only with a default and run off
the Neural Engine. Data-dependent shapes cannot be planned ahead of time: on Core ML they
force dynamic memory allocation and CPU fallback; some converters reject them outright.

## Example
```python
torch.export.export(model, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
```

## Use instead
```python
batch = torch.export.Dim("batch", min=1, max=8)       # bounded
ct.convert(ep, inputs=[ct.TensorType(shape=(ct.RangeDim(1, 8), 3, 224, 224))])
```
or export with the shape the device uses.

## Options
- `allow_dims` (list of strings, default []): symbol or dim_param names that are fine
  (for example "batch" when the app declares it).

## References
- coremltools flexible input shapes, https://apple.github.io/coremltools/docs-guides/source/flexible-inputs.html
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph, shape_str
from modelgate.rule import Option

ID = "MG005"
NAME = "dynamic-shape"
SEVERITY = "warning"
NEEDS = "weights"
OPTIONS = {
    "allow_dims": Option(list, [], "dynamic dimension names that are fine", item_type=str),
}

_DATA_DEPENDENT = {"aten::nonzero", "aten::unique", "aten::_unique", "aten::_unique2",
                   "aten::unique_dim", "aten::unique_consecutive", "aten::masked_select",
                   "aten::argwhere", "aten::nonzero_numpy", "onnx::NonZero", "onnx::Unique",
                   "onnx::Compress"}  # fmt: skip
_UNBOUNDED = 2**62


def _range(graph: ModelGraph, symbol: str) -> tuple[int | None, int | None]:
    rng = graph.symbols.get(symbol, {})
    low, high = rng.get("min"), rng.get("max")
    low = low if isinstance(low, int) else None
    high = high if isinstance(high, int) and high < _UNBOUNDED else None
    return low, high


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    if "coreml" not in options.get("targets", ["coreml"]):
        return  # ONNX and ONNX Runtime take dynamic dimensions as they are
    allowed = set(options["allow_dims"])
    for value in graph.inputs:
        for index in value.dynamic_dims:
            dim = value.shape[index] if value.shape else None
            name = str(dim) if dim is not None else "?"
            if name in allowed:
                continue
            low, high = _range(graph, name) if dim is not None else (None, None)
            if high is not None:
                need = (
                    f"Core ML needs it declared: ct.RangeDim({max(low or 1, 1)}, {high}) "
                    "or ct.EnumeratedShapes"
                )
            else:
                need = (
                    "Core ML needs it fixed or bounded: ct.RangeDim(lower, upper) with an "
                    "upper bound, or ct.EnumeratedShapes"
                )
            span = (
                f", range {low if low is not None else '?'}..{high if high is not None else '∞'}"
                if name in graph.symbols
                else ""
            )
            yield Problem(
                f"input {value.name} {shape_str(value.shape)}: dimension {index} is dynamic "
                f"({name}{span}); {need}",
                Location(graph.path, input=value.name),
                fix="export with the shape the device uses, or bound the dimension "
                "(torch.export.Dim(name, min=..., max=...)) and declare it to the converter",
                key=f"input:{value.name}:{index}",
            )
    for op in graph.ops:
        if op.target not in _DATA_DEPENDENT:
            continue
        yield Problem(
            f"{op.module or op.name}: {op.opname} produces a data-dependent output shape",
            Location(graph.path, module=op.module, op=op.name, source=op.source),
            fix="use a fixed-size formulation (masks with torch.where, nonzero_static, top-k) "
            "so the output shape does not depend on the data",
            key=f"op:{op.module or op.name}:{op.target}",
        )
