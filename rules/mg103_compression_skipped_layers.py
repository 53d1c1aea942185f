"""Layers the compressor left uncompressed, and why.

## What it does
After a `compress:` preset ran (`palettize-8`, `palettize-6`, `palettize-4`, `int8`, `int4`),
lists every weight larger than `coreml.weight_threshold` that is still uncompressed in the
compressed Core ML program, with its torch name, shape and the reason: coremltools' own log
message for it (read as data, not scraped from the console), such as a channel count the
group size does not divide. The fix names a group or block size that would divide it.

## Why is this bad?
coremltools declines some layers silently, as far as the build is concerned: it logs
"Skipped this op" and carries on. The model is then bigger than the preset promises, and
the budget may still pass today only to fail on the next size change. Most often a 4-bit
preset skips the classifier (1000 outputs are not a multiple of 16 or 32) or the first
convolution (3 input channels are not a multiple of the block size).

## Example
```yaml
compress: palettize-4        # group_size 16: a Linear with 1000 outputs is skipped
```

## Use instead
```yaml
compress: palettize-4
coreml: {group_size: 8}      # 1000 = 8 x 125
```
or give that op its own config in coremltools (`op_name_configs`, e.g. per-tensor 4 bits).

## Options
`min_share` (float, default 0.0): report a skipped weight only when it holds at least this
share of the model's parameters.

## References
- coremltools palettization, https://apple.github.io/coremltools/docs-guides/source/opt-palettization-api.html
- coremltools quantization, https://apple.github.io/coremltools/docs-guides/source/opt-quantization-api.html
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph
from modelgate.results import ChecksResult
from modelgate.rule import Option, Skip, dims, human_count, not_compressed

ID = "MG103"
NAME = "compression-skipped-layers"
SEVERITY = "warning"
NEEDS = "checks"
OPTIONS = {
    "min_share": Option(
        float,
        0.0,
        "report a skipped weight holding at least this share of the parameters",
        minimum=0.0,
    ),
}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem | Skip]:
    checks = graph.checks or ChecksResult()
    if checks.requested.compress:  # said as MG105 says it
        why = not_compressed(checks)
        if why is not None:
            yield Skip(why)
            return
    total = graph.parameter_count or 0
    for preset, result in (checks.compress or {}).items():
        if not isinstance(result, dict) or not result.get("ok"):
            continue
        for entry in result.get("skipped") or []:
            size = entry.get("size") or math.prod(entry.get("shape") or [0])
            if total and size / total < options["min_share"]:
                continue
            tensor = entry.get("tensor")
            module = tensor.rsplit(".", 1)[0] if tensor and "." in tensor else None
            name = tensor or entry["name"]
            share = f", {size / total:.0%} of the parameters" if total else ""
            yield Problem(
                f"{preset} left {name} ({dims(entry.get('shape') or [])}, "
                f"{human_count(size)} weights{share}) uncompressed: {entry.get('reason')}",
                Location(
                    graph.path,
                    module=module,
                    tensor=tensor or None,
                    op=None if tensor else entry["name"],
                    source=graph.first_source(module) if module else None,
                ),
                fix=(
                    f"set {entry['hint']}, or "
                    if str(entry.get("hint")).startswith("coreml.")
                    else ""
                )
                + "give this op its own config in coremltools (op_name_configs)",
                key=f"{preset}:{name}",
            )
