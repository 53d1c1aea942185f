"""Inputs with dynamic dimensions, and ops whose output shape depends on the data.

## What it does
For the `coreml` target (ONNX takes dynamic dimensions as they are): one finding per model
input that lists every dimension that is not a fixed number, with its range, and the
`ct.TensorType` that declares them. A `torch.export` program names them by symbol (`s77`):
`torch.export.save` does not record the `Dim` names the export was given (torch 2.13 keeps the
symbols and their ranges in `range_constraints` only); an ONNX `dim_param` keeps its name
(`batch`). Also flags ops whose output shape depends on input values (`nonzero`, `unique`,
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
from modelgate.graph import ModelGraph, ValueInfo, shape_str
from modelgate.rule import Option
from modelgate.targets import REGISTRY as TARGETS

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
    targets = options.get("targets", TARGETS.names())
    if not any(TARGETS.get(t).fixed_shapes for t in targets if t in TARGETS):
        return  # no target that needs fixed shapes (ONNX Runtime takes dynamic dimensions)
    allowed = set(options["allow_dims"])
    for value in graph.inputs:
        dynamic = []
        for index in value.dynamic_dims:
            dim = value.shape[index] if value.shape else None
            name = str(dim) if dim is not None else "?"
            if name not in allowed:
                low, high = _range(graph, name) if dim is not None else (None, None)
                dynamic.append((index, name, low, high))
        if dynamic:
            yield _input_problem(graph, value, dynamic)
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


def _input_problem(
    graph: ModelGraph, value: ValueInfo, dynamic: list[tuple[int, str, int | None, int | None]]
) -> Problem:
    """One finding per input, naming each of its dynamic dimensions."""
    indices, details = [], []
    for index, name, low, high in dynamic:
        span = ""
        if name in graph.symbols:
            span = f", range {low if low is not None else '?'}..{high if high is not None else '∞'}"
        indices.append(str(index))
        details.append(f"{name}{span}")
    if len(indices) == 1:
        said = f"dimension {indices[0]} is dynamic ({details[0]})"
    else:
        said = (
            f"dimensions {', '.join(indices[:-1])} and {indices[-1]} are dynamic "
            f"({'; '.join(details)})"
        )
    if all(high is not None for _, _, _, high in dynamic):
        bounds = {index: (max(low or 1, 1), high) for index, _, low, high in dynamic}
        for i, d in enumerate(value.shape or ()):  # allowed dims still need declaring
            if i not in bounds and not isinstance(d, int):
                low, high = _range(graph, d) if isinstance(d, str) else (None, None)
                bounds[i] = (max(low or 1, 1), high if high is not None else -1)
        shape = ", ".join(
            f"ct.RangeDim({bounds[i][0]}, {bounds[i][1]})" if i in bounds else str(d)
            for i, d in enumerate(value.shape or ())
        )
        comma = "," if len(value.shape or ()) == 1 else ""  # a 1-tuple
        need = (
            f"Core ML needs {'it' if len(indices) == 1 else 'them'} declared: "
            f"ct.TensorType(shape=({shape}{comma})) or ct.EnumeratedShapes"
        )
    else:
        need = (
            f"Core ML needs {'it' if len(indices) == 1 else 'them'} fixed or bounded: "
            "ct.RangeDim(lower, upper) with an upper bound, or ct.EnumeratedShapes"
        )
    return Problem(
        f"input {value.name} {shape_str(value.shape)}: {said}; {need}",
        Location(graph.path, input=value.name),
        fix="export with the shape the device uses, or bound the dimension "
        "(torch.export.Dim(name, min=..., max=...)) and declare it to the converter",
        key=f"input:{value.name}",
    )
