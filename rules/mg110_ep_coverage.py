"""ONNX Runtime Mobile's NNAPI or Core ML provider takes too little of the graph.

## What it does
After `--convert ort-mobile` (ONNX Runtime's own mobile partitioning of an ONNX file, or of
the ONNX export of a torch model), reports each execution provider in `providers` that takes
less than `min_coverage` of the nodes, or splits the graph into more than `max_partitions`
partitions. The message gives the coverage, the unsupported ops with their nodes, and the
nodes lost to dynamic shapes with what fixing the shapes would give.

## Why is this bad?
What the provider does not take runs on the CPU provider, with a device copy at every
partition boundary. ONNX Runtime's own advice: one partition over 75% of the nodes works
well; more than two partitions most likely runs slower than the CPU provider alone. A model
with dynamic shapes can lose every node (0/10 on NNAPI) and nothing says so at build time.

## Example
```python
torch.onnx.export(model, x, "m.onnx", dynamic_axes={"x": {0: "batch"}})   # 0 nodes on NNAPI
```

## Use instead
```python
torch.onnx.export(model, x, "m.onnx")   # fixed shapes (or make_dynamic_shape_fixed)
```
and replace the ops the provider does not support where it matters.

## Options
`min_coverage` (default 0.75, ONNX Runtime's own "should work well" bar), `max_partitions`
(default 2), `providers` (default NNAPI, CoreML MLProgram, CoreML NeuralNetwork).

## References
- ONNX Runtime mobile usability checker, https://onnxruntime.ai/docs/tutorials/mobile/helpers/model-usability-checker.html
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph
from modelgate.rule import Option
from modelgate.targets import REGISTRY as TARGETS

ID = "MG110"
NAME = "ep-coverage"
SEVERITY = "warning"
NEEDS = "checks"
OPTIONS = {
    "min_coverage": Option(float, 0.75, "share of the nodes a provider must take", minimum=0.0),
    "max_partitions": Option(int, 2, "partitions a provider may split the graph into", minimum=1),
    "providers": Option(
        list, ["NNAPI", "CoreML MLProgram", "CoreML NeuralNetwork"],
        "execution providers to judge", item_type=str,
    ),
}  # fmt: skip


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    checks = graph.checks
    for target in TARGETS:
        result = (checks.of(target.name) if checks else None) or {}
        for ep, entry in (result.get("eps") or {}).items():
            if ep not in options["providers"] or not entry.get("nodes"):
                continue
            coverage = entry["supported_nodes"] / entry["nodes"]
            low = coverage < options["min_coverage"]
            split = entry["partitions"] > options["max_partitions"]
            if not (low or split):
                continue
            yield _problem(graph, target.name, ep, entry, coverage)


def _problem(graph: ModelGraph, target: str, ep: str, entry: dict, coverage: float) -> Problem:
    message = (
        f"the {ep} execution provider takes {entry['supported_nodes']}/{entry['nodes']} nodes "
        f"({coverage:.0%}) in {entry['partitions']} partition(s)"
    )
    nodes = entry.get("unsupported_nodes") or []
    if nodes:
        shown = ", ".join(f"{n['op']} ({n['node']})" for n in nodes[:5])
        message += f"; unsupported: {shown}" + (
            f" and {len(nodes) - 5} more" if len(nodes) > 5 else ""
        )
    fixed = entry.get("with_fixed_shapes")
    if entry.get("dynamic_shape_nodes"):
        message += f"; {entry['dynamic_shape_nodes']} node(s) lost to dynamic shapes"
        if fixed:
            message += (
                f" (with fixed shapes: {fixed['supported_nodes']}/{fixed['nodes']} in "
                f"{fixed['partitions']} partition(s))"
            )
        fix = (
            "fix the input shapes (export with static shapes, or python -m "
            "onnxruntime.tools.make_dynamic_shape_fixed), then replace the unsupported ops"
        )
    else:
        fix = f"replace the ops {ep} does not support, or run the model on the CPU provider"
    return Problem(message, Location(graph.path), fix=fix, key=f"{target}:{ep}")
