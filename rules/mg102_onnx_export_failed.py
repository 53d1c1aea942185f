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

from modelgate.conversion_findings import failure
from modelgate.finding import Problem
from modelgate.graph import ModelGraph
from modelgate.rule import Note, Skip

ID = "MG102"
NAME = "onnx-export-failed"
SEVERITY = "error"
NEEDS = "checks"
OPTIONS: dict = {}

FIXES = {
    "error": "make the op exportable: rewrite it with ops torch.onnx exports, or register a "
    "custom ONNX function (torch.onnx.export(..., custom_translation_table=...))",
    "timeout": "raise the time limit (timeout: / --timeout, isolation.timeout)",
    "memory": "raise isolation.memory_mb, or export on a machine with more memory",
    "crash": "the exporter or ONNX Runtime crashed: report it with the model",
}
FILE_FIXES = {
    "error": "use ops and opsets this ONNX Runtime implements (its message names the op), "
    "or a newer onnxruntime; re-export the ONNX file from its source model if it is damaged",
    "timeout": "raise the time limit (timeout: / --timeout, isolation.timeout)",
    "memory": "raise isolation.memory_mb, or check on a machine with more memory",
    "crash": "ONNX Runtime crashed loading the ONNX file: report it to onnxruntime with the file",
}
_STAGES = {
    "exporting to ONNX": "ONNX export",
    "running onnx.checker": "onnx.checker",
    "creating an ONNX Runtime session": "ONNX Runtime session",
}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem | Skip | Note]:
    result = (graph.metadata.get("checks") or {}).get("onnx")
    stage = result.get("stage") if isinstance(result, dict) else None
    if graph.format == "onnx":  # the file as given: nothing was exported
        yield from failure(graph, "onnx", "ONNX Runtime session of the ONNX file", FILE_FIXES)
        checker = result.get("checker") if isinstance(result, dict) else None
        if result and result.get("ok") and str(checker).startswith("failed"):
            yield Note(f"onnx.checker rejects the file, which ONNX Runtime loads: {checker}")
        return
    yield from failure(graph, "onnx", _STAGES.get(stage or "", "ONNX export"), FIXES)
