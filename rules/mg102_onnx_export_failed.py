"""The model does not export to ONNX, or the export does not load.

## What it does
Exports the model with `torch.onnx.export` (the dynamo exporter for a `torch.export` `.pt2`,
the TorchScript exporter for TorchScript), runs `onnx.checker` with the full check, and opens
an ONNX Runtime session, in a child process with a time limit, when `convert: [onnx]` or
`--convert onnx` is given. Any failure is reported with the exporter's reason trimmed to the
op it names, and at which of the three stages it happened. ONNX Runtime's output drift
against torch is measured and reported in the metrics (`conversions.onnx.drift`).

For an ONNX file nothing is exported: ONNX Runtime's session decides (a CPU session that
cannot be created is the finding; `onnx.checker`'s verdict is kept in
`conversions.onnx.checker`, since ONNX Runtime loads files the checker is stricter about), then
the file is run once on synthetic inputs made from its own types (string tensors, sequences,
optionals, maps, or no inputs at all). A run that cannot be made or fails on synthetic values is
MG104's (give the input shapes), not a failure of the file.

## Why is this bad?
An export that fails, or produces a file the checker rejects or ONNX Runtime cannot load,
fails in the deployment pipeline instead, usually much later and far from the change that
caused it.

## Example
```python
torch.cumprod(x, dim=1)   # the dynamo exporter decomposes it into prims::prod: no ONNX function
```

## Use instead
```python
torch.exp(torch.cumsum(torch.log(x), dim=1))   # for positive x
```
or register a custom ONNX function (`torch.onnx.export(..., custom_translation_table=...)`).

## Options
None. What to convert comes from `convert:` / `--convert`; limits from `timeout` and
`isolation:`.

## References
- torch.onnx, https://pytorch.org/docs/stable/onnx.html
- onnx.checker, https://onnx.ai/onnx/api/checker.html
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.conversion_findings import failures
from modelgate.finding import Problem
from modelgate.graph import ModelGraph
from modelgate.rule import Note, Skip

ID = "MG102"
NAME = "onnx-export-failed"
SEVERITY = "error"
NEEDS = "checks"
OPTIONS: dict = {}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem | Skip | Note]:
    yield from failures(graph, ID)  # the targets whose FAILURE_RULE is MG102 (targets/)
