"""A compression preset could not be applied.

## What it does
Reports a `compress:` preset that failed on the converted Core ML model: the compressor
raised, crashed, ran past the time limit or out of memory, or the preset needs a newer
deployment target than the one configured (`palettize-4` and `int4` need iOS18).

## Why is this bad?
The budget's size and drift then judge the uncompressed conversion, not what would ship;
the figures the team relies on are missing.

## Example
```yaml
compress: palettize-4
coreml: {deployment_target: iOS17}   # 4-bit grouped palettization needs iOS18
```

## Use instead
```yaml
compress: palettize-4
coreml: {deployment_target: iOS18}   # or leave it out: modelgate picks iOS18 for 4-bit presets
```

## Options
None.

## References
- coremltools optimization overview, https://apple.github.io/coremltools/docs-guides/source/opt-overview.html
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph
from modelgate.results import ChecksResult
from modelgate.rule import Skip, not_compressed

ID = "MG105"
NAME = "compression-failed"
SEVERITY = "error"
NEEDS = "checks"
OPTIONS: dict = {}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem | Skip]:
    checks = graph.checks or ChecksResult()
    if not checks.requested.compress:
        return
    why = not_compressed(checks)
    if why is not None:
        yield Skip(why)
        return
    for preset, result in (checks.compress or {}).items():
        if not isinstance(result, dict) or result.get("ok") is not False:
            continue
        during = f" while {result['stage']}" if result.get("stage") else ""
        yield Problem(
            f"{preset} failed{during}: {result.get('error')}",
            Location(graph.path),
            fix="set coreml.deployment_target to iOS18 or later (or leave it out)"
            if "deployment target" in str(result.get("error"))
            else "try another preset, or report the failure to coremltools with the model",
            key=f"compress:{preset}",
        )
