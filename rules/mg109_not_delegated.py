"""A large share of the model's compute stays on the runtime's slow portable kernels.

## What it does
After a lowering that delegates to an accelerated backend (`--convert executorch`: XNNPACK),
reports each op left on portable kernels whose share of the model's multiply-accumulates
(convolutions, linear layers, matrix products) is at least `min_macs_share`, with its count
and share. The full list, light ops included, is in the report
(`conversions.<target>.portable_ops`).

## Why is this bad?
The lowering succeeds and the program runs, only slowly: portable kernels are reference
implementations, often ten to fifty times slower than the delegate. A model whose matrix
products stay portable can run forty times slower than on ONNX Runtime, and nothing says so
at build time.

## Example
```python
torch.nn.functional.linear(x, w)   # w of a dtype or layout the delegate does not take
```

## Use instead
Keep heavy ops in forms the delegate takes (float32 or its quantized forms, static shapes),
or pick a backend that takes them.

## Options
`min_macs_share` (default 0.1): the share of the model's MACs an op on portable kernels must
hold to be reported. At a tenth of the compute on kernels ten times slower, the portable part
already takes about half the run time.

## References
- ExecuTorch XNNPACK delegate, https://pytorch.org/executorch/stable/backends-xnnpack.html
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.conversion_findings import locate
from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph
from modelgate.rule import Option
from modelgate.targets import REGISTRY as TARGETS

ID = "MG109"
NAME = "not-delegated"
SEVERITY = "warning"
NEEDS = "checks"
OPTIONS = {
    "min_macs_share": Option(
        float, 0.1, "share of the model's MACs an op left on portable kernels must hold",
        minimum=0.0,
    ),
}  # fmt: skip


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    checks = graph.checks
    for target in TARGETS:
        result = (checks.of(target.name) if checks else None) or {}
        backend = result.get("backend") or "the delegate"
        for entry in result.get("portable_ops") or []:
            share = entry.get("macs_share")
            if share is None or share < options["min_macs_share"] or not entry.get("macs"):
                continue
            op = entry["op"]
            where = locate(graph, op.split("::")[-1], None)
            yield Problem(
                f"{op} ({entry['count']}x, {share:.0%} of the model's MACs) stays on "
                f"{target.label}'s portable kernels, not {backend}",
                Location(
                    graph.path,
                    module=where.get("module"),
                    op=where["op"] if "source" in where else op,  # found in the graph
                    source=where.get("source"),
                ),
                fix=f"keep it in a form {backend} takes (float32 or its quantized forms, "
                "static shapes), or use a backend that takes it",
                key=f"{target.name}:portable:{op}",
            )
