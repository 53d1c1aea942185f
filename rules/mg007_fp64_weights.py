"""Weights stored in float64.

## What it does
Flags a model whose parameters or buffers include float64 tensors, naming the largest.

## Why is this bad?
Mobile runtimes have no float64: Core ML converts them to float32 (or float16) anyway and
ONNX Runtime mobile kernels rarely support double. Meanwhile the file is twice the size it
needs to be, and any input cast to float64 to match forces slow CPU paths. It usually comes
from weights built with NumPy (`torch.from_numpy` of a float64 array).

## Example
```python
layer.weight = nn.Parameter(torch.from_numpy(np_weights))   # np.float64
```

## Use instead
```python
layer.weight = nn.Parameter(torch.from_numpy(np_weights).float())
model = model.float()   # before saving
```

## Options
None.

## References
- Core ML supported data types, https://apple.github.io/coremltools/docs-guides/source/typed-execution.html
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph
from modelgate.rule import human_bytes

ID = "MG007"
NAME = "fp64-weights"
SEVERITY = "warning"
NEEDS = "weights"
OPTIONS: dict = {}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    doubles = [t for t in graph.tensors.values() if t.dtype == "float64" and t.numel > 0]
    if not doubles:
        return
    doubles.sort(key=lambda t: -t.nbytes)
    total = sum(t.nbytes for t in doubles)
    largest = doubles[0]
    yield Problem(
        f"{len(doubles)} tensor(s) are float64 ({human_bytes(total)}, "
        f"{total / max(graph.weight_bytes, 1):.0%} of the weights); largest: {largest.name} "
        f"{tuple(largest.shape)}",
        Location(graph.path, tensor=largest.name),
        fix="cast to float32 before saving (model.float()); half the size, same accuracy on device",
        key="float64",
    )
