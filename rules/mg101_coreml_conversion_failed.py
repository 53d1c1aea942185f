"""The model does not convert to Core ML.

## What it does
Runs `coremltools.convert` on the model (TorchScript or `torch.export` `.pt2`) to an ML
program, in a child process with a time limit, when `convert: [coreml]` (or a `compress:`
preset) is configured or `--convert coreml` is given. A failure is reported with the
converter's own reason trimmed to the op and where the converter says it is; a crash, a hang
past the time limit or running out of memory is reported the same way, and the rest of the
report survives. The deployment target (`coreml.deployment_target`, default iOS16, iOS18 for
the 4-bit presets) and compute precision (`coreml.compute_precision`, default float16) are
configurable.

## Why is this bad?
A model that does not convert does not ship. MG003 predicts unsupported ops from the
converter's registry without running it; this runs the real converter, which also fails on
what no registry shows: dtype mismatches, shapes it cannot infer, ops it lowers into
something it cannot handle.

## Example
```python
values, _ = torch.kthvalue(x, k=3, dim=1)   # coremltools has no converter for kthvalue
```

## Use instead
```python
values = torch.topk(x, k=3, dim=1, largest=False).values[:, -1]
```
or register a converter with `@coremltools.converters.mil.register_torch_op`.

## Options
None. What to convert comes from `convert:` / `--convert`; limits from `timeout` and
`isolation:` (`timeout`, `memory_mb`).

## References
- coremltools: converting from PyTorch, https://apple.github.io/coremltools/docs-guides/source/convert-pytorch.html
- custom operators, https://apple.github.io/coremltools/docs-guides/source/custom-operators.html
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.conversion_findings import failures
from modelgate.finding import Problem
from modelgate.graph import ModelGraph
from modelgate.rule import Note, Skip

ID = "MG101"
NAME = "coreml-conversion-failed"
SEVERITY = "error"
NEEDS = "checks"
OPTIONS: dict = {}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem | Skip | Note]:
    yield from failures(graph, ID)  # the targets whose FAILURE_RULE is MG101 (targets/)
