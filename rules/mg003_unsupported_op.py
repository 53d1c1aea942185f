"""Ops the target converter cannot convert.

## What it does
For each target in `targets` (`coreml`, `onnx`), lists EVERY op of the graph that the
target's converter has no conversion for, each with its module and source line. What is
supported comes from the converters themselves: coremltools' registry of torch ops, torch.onnx's
ONNX function registry and decomposition table (the legacy exporter's symbolic registry for
TorchScript, which only it can export), including what each op is decomposed into first. A
snapshot generated from the installed converters ships with modelgate, so this runs without
them; a different installed coremltools version is read live.

For ONNX files and the `onnx` target, flags ops outside the ONNX standard at the model's
opset. Core ML has no ONNX frontend (coremltools 6 removed it): check the PyTorch model.

## Why is this bad?
coremltools and torch.onnx stop at the FIRST op they cannot convert. A model with five such
ops takes five slow convert-fix cycles to discover them; here they are all at once, before
anyone converts anything.

## Example
```python
values, _ = torch.kthvalue(x, k=3, dim=1)   # coremltools has no kthvalue
```

## Use instead
```python
values = torch.topk(x, k=3, dim=1, largest=False).values[:, -1]   # topk converts
```
or register a converter (`coremltools.converters.mil.register_torch_op`; a custom ONNX
function for torch.onnx).

## Options
None. The targets come from the top-level `targets` setting (or `--target`).

## References
- coremltools custom operators, https://apple.github.io/coremltools/docs-guides/source/custom-operators.html
- torch.onnx unsupported operators, https://pytorch.org/docs/stable/onnx.html
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate import opsupport
from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph, Op
from modelgate.rule import Note, Skip

ID = "MG003"
NAME = "unsupported-op"
SEVERITY = "error"
NEEDS = "graph"
OPTIONS: dict = {}

_FIX = {
    "coreml": "rewrite it with ops coremltools converts, or register a converter with "
    "@coremltools.converters.mil.register_torch_op",
    "onnx": "rewrite it with ops torch.onnx exports, or register a custom ONNX function "
    "(torch.onnx.export(..., custom_translation_table=...))",
}
_STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "onnx"}
_RUNTIME_DOMAINS = {"com.microsoft"}  # ONNX Runtime's contrib ops


def check(graph: ModelGraph, options: dict) -> Iterator[Problem | Skip | Note]:
    targets = options.get("targets", [])
    if graph.format == "onnx":
        if "onnx" in targets:
            yield from _onnx_file(graph)
        return
    support = opsupport.load()
    fmt = "torchscript" if graph.format == "torchscript" else "exported_program"
    dialect = graph.metadata.get("dialect")
    verdicts: dict[tuple[str, str], opsupport.Verdict | None] = {}
    unknown: dict[str, set[str]] = {}
    seen: set[tuple[str, str, str | None, object]] = set()
    for op in graph.ops:
        name = opsupport.overload_name(op)
        for target in targets:
            if (target, name) not in verdicts:
                verdicts[(target, name)] = (
                    support.coreml(name, fmt, dialect) if target == "coreml"
                    else support.onnx(name, fmt)
                )  # fmt: skip
            verdict = verdicts[(target, name)]
            if verdict is None:
                continue
            if verdict.status == "unknown":
                unknown.setdefault(target, set()).add(name)
                continue
            site = (target, name, op.module, op.source)
            if site in seen:
                continue
            seen.add(site)
            yield _problem(graph, op, name, target, verdict.reason)
    for target, names in sorted(unknown.items()):
        yield Note(
            f"{target}: {len(names)} op(s) are rewritten by the converter into ops modelgate "
            f"has no record of, so their support is unknown: {', '.join(sorted(names)[:5])}"
        )


def _problem(graph: ModelGraph, op: Op, name: str, target: str, reason: str) -> Problem:
    label = {"coreml": "Core ML", "onnx": "ONNX"}[target]
    where = f"{op.module}: " if op.module else ""
    return Problem(
        f"{where}{name} will not convert to {label}: {reason}",
        Location(graph.path, module=op.module, op=name, source=op.source),
        fix=_FIX[target],
        key=f"{target}:{name}:{op.module or op.name}",
    )


def _onnx_file(graph: ModelGraph) -> Iterator[Problem]:
    import onnx

    opsets = graph.metadata.get("opsets", {})
    seen: set[tuple[str, str | None]] = set()
    for op in graph.ops:
        domain = op.namespace
        domain_key = "" if domain in ("onnx", "ai.onnx") else domain
        if domain_key in _RUNTIME_DOMAINS or (op.target, op.module) in seen:
            continue
        if domain_key in _STANDARD_DOMAINS:
            version = int(opsets.get(domain_key or "ai.onnx", 0) or 0)
            try:
                onnx.defs.get_schema(op.opname, max_inclusive_version=version, domain=domain_key)
                continue
            except onnx.defs.SchemaError:
                reason = f"not in the ONNX standard at opset {version}"
        else:
            reason = f"custom domain {domain!r}: runtimes need its custom-op library"
        seen.add((op.target, op.module))
        yield Problem(
            f"{op.module or op.name}: {op.opname} is {reason}",
            Location(graph.path, module=op.module, op=op.name, source=op.source),
            fix="export with a newer opset, or replace the op; custom ops need a runtime library",
            key=f"onnx:{op.target}:{op.module or op.name}",
        )
