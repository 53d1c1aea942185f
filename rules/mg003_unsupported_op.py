"""Ops the target converter cannot convert.

## What it does
For each target in `targets` (`coreml`, `onnx`, `executorch`, `litert`), lists EVERY op of
the graph that the target's toolchain cannot take, each with its module and source line. What
is supported comes from the converters themselves: coremltools' registry of torch ops,
torch.onnx's ONNX function registry and decomposition table (the legacy exporter's symbolic
registry for TorchScript, which only it can export), including what each op is decomposed into
first. A snapshot generated from the installed converters ships with modelgate, so this runs
without them; a different installed coremltools version is read live.

ExecuTorch and LiteRT have no registry that says what will fail, so their tables are observed:
each of torch's own OpInfo samples was sent through the real toolchain (ExecuTorch: lowered
with XNNPACK, its program's operators looked up in the runtime's kernel registry; LiteRT:
converted, then loaded into the interpreter), and an op is flagged when it failed on every
sample it caused to fail ("will not load in ExecuTorch: the program then needs
aten::sort.values, which the ExecuTorch runtime has no kernel for") when the toolchain said
the op itself has no support (no core-ATen form, no lowering, no kernel). An op that went
through on some samples and failed on others, or failed for another reason (a converter pass
on a sample's arguments), is a note: its arguments may decide. Ops never observed, and ops
whose inputs have a dtype the samples never had, are listed in a note as unknown.

A TorchScript graph is judged as each converter sees it: the graph passes coremltools and
torch.onnx run before they look ops up are run on copies of it (coremltools turns a constant
`chunk` into `prim::ConstantChunk` and stops once the outputs exist; torch.onnx erases
`aten::Bool` and number casts, and deletes an unused `assert` / `raise`).

When the target's real conversion ran (`--convert`), its outcome decides: after a conversion
that worked, the predictions for that target are dropped and a note says what was predicted;
after one that failed on an op, each finding says whether the converter failed on it or had
stopped before reaching it.

For ONNX files and the `onnx` target, flags what the installed ONNX Runtime's CPU provider
cannot load: an opset newer than it supports, ops it does not know, ops without a kernel
for their version and input types (from its kernel registry), and values that one type
constraint binds to two types, including ops inside control-flow bodies and local functions
(calls of a local function are not ops to look up). Without onnxruntime, ops outside the
ONNX standard at the model's opset, and a note that kernels were not checked. Core ML has no
ONNX frontend (coremltools 6 removed it): check the PyTorch model.

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
from modelgate.target import Target
from modelgate.targets import REGISTRY as TARGETS

ID = "MG003"
NAME = "unsupported-op"
SEVERITY = "error"
NEEDS = "graph"
OPTIONS: dict = {}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem | Skip | Note]:
    fmt = "torchscript" if graph.format == "torchscript" else "exported_program"
    dialect = graph.metadata.get("dialect")
    views = graph.metadata.get("converter_ops") or {}
    for target in map(TARGETS.get, options.get("targets", [])):
        if graph.format in target.file_formats:
            yield from _file(graph, target)
            continue
        refusal = TARGETS.refusal(target, graph.format)
        if refusal:
            yield Skip(f"{target.name}: {refusal}: check the PyTorch model")
            continue
        if not target.predicts:
            yield Note(
                f"{target.name}: modelgate has no static op table for {target.label}; "
                f"--convert {target.name} runs the {target.conversion} and reports what fails"
            )
            continue
        verdicts: dict[str, opsupport.Verdict | None] = {}
        unknown: dict[str, str] = {}
        depends: dict[str, str] = {}
        flagged: list[tuple[Op, str, opsupport.Verdict]] = []
        seen: set[tuple[str, str | None, object]] = set()
        for op in views.get(target.name, graph.ops):  # the graph as this converter sees it
            name = opsupport.overload_name(op)
            outside = target.op_outside(op, graph)
            if outside:  # its table does not speak for this use of the op
                unknown.setdefault(name, outside)
                continue
            if name not in verdicts:
                verdicts[name] = target.op_verdict(name, fmt, dialect)
            verdict = verdicts[name]
            if verdict is None:
                continue
            if verdict.status == "unknown":
                unknown[name] = verdict.reason
                continue
            if verdict.status == "depends":
                depends[name] = verdict.reason
                continue
            site = (name, op.module, op.source)
            if site not in seen:
                seen.add(site)
                flagged.append((op, name, verdict))
        yield from _judged(graph, target, flagged, unknown, depends)


def _judged(
    graph: ModelGraph,
    target: Target,
    flagged: list[tuple[Op, str, opsupport.Verdict]],
    unknown: dict[str, str],
    depends: dict[str, str],
) -> Iterator[Problem | Note]:
    """The predictions for one target, decided by its real conversion when one ran."""
    run = target.conversion
    outcome, result = _measured(graph, target)
    if outcome == "converted":
        if flagged:  # ops it doubted (unknown, their arguments decide) went through
            names = sorted({name for _, name, _ in flagged})
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            if result.get("missing_kernels"):  # converted, then refused: MG108 says what
                yield Note(
                    f"{target.name}: predicted that {len(names)} op(s) would not convert or "
                    f"load ({shown}); the {run} succeeded and the "
                    f"{target.runtime or target.label} refused the program, which MG108 "
                    "reports: the prediction was dropped"
                )
            else:
                yield Note(
                    f"{target.name}: predicted that {len(names)} op(s) would not convert "
                    f"({shown}), but the {run} succeeded: the prediction was dropped"
                )
        return
    failed_at = _bare(result.get("op") or "") if outcome == "failed" else ""
    for op, name, verdict in flagged:
        reason = verdict.reason
        if outcome != "failed":
            said = reason
        elif not failed_at:
            said = f"{reason} (the {run} failed too, without naming an op)"
        elif _bare(name) == failed_at:
            said = f"{reason}; the {run} failed on it"
        else:  # the converter stops at its first failure: this one comes after
            said = f"{reason} (not reached: the {run} failed earlier, at {result['op']!r})"
        yield _problem(graph, op, name, target, said, verdict.stage)
    if depends:
        yield Note(
            f"{target.name}: {len(depends)} op(s) failed on torch's samples in a way their "
            f"arguments may decide (--convert {target.name} tells): "
            + "; ".join(f"{n}: {why}" for n, why in sorted(depends.items())[:5])
        )
    reasons: dict[str, list[str]] = {}
    for name, why in sorted(unknown.items()):
        if "no record of" in why:  # the converters' own decompositions (Core ML, ONNX)
            why = "are rewritten by the converter into ops modelgate has no record of"
        reasons.setdefault(why, []).append(name)
    for why, names in reasons.items():
        yield Note(
            f"{target.name}: {len(names)} op(s) {why}, so their support is unknown: "
            f"{', '.join(names[:5])}"
        )


def _measured(graph: ModelGraph, target: Target) -> tuple[str | None, dict]:
    """("converted" | "failed", the result) when the target's real conversion ran
    (``--convert``; modelgate.checks.pipeline stores it before the rules run), else None.
    Conversions that timed out, crashed or never started say nothing about ops."""
    result = graph.checks.of(target.name) if graph.checks else None
    if not isinstance(result, dict) or result.get("ok") is None:
        return None, {}
    if result.get("ok"):
        return "converted", result
    stage = result.get("stage") or ""
    if stage in target.later_stages:
        return "converted", result  # converted; what ran it afterwards failed (its own rule)
    if (result.get("kind") or "error") != "error" or not stage.startswith(target.converting):
        return None, {}
    return "failed", result


def _bare(name: str) -> str:
    """How converters' errors name an op: "aten::add_.Tensor" -> "add"."""
    name = name.split("::")[-1].split(".")[0]
    return name.strip("_").lower()


def _problem(
    graph: ModelGraph, op: Op, name: str, target: Target, reason: str, stage: str | None = None
) -> Problem:
    where = f"{op.module}: " if op.module else ""
    fails = f"will not load in {target.label}" if stage == "loading" else "will not convert to"
    fails = fails if stage == "loading" else f"{fails} {target.label}"
    return Problem(
        f"{where}{name} {fails}: {reason}",
        Location(graph.path, module=op.module, op=name, source=op.source),
        fix=target.op_fix,
        key=f"{target.name}:{name}:{op.module or op.name}",
    )


def _file(graph: ModelGraph, target: Target) -> Iterator[Problem | Note]:
    """A file the target checks as given (ONNX): what its runtime cannot load."""
    issues, note = target.file_issues(graph)
    session = ((graph.checks.of(target.name) if graph.checks else None) or {}).get("ok")
    if session is True and issues:  # measured beats predicted: the runtime loaded the file
        names = ", ".join(sorted({i.op.opname if i.op else i.key or "?" for i in issues})[:5])
        yield Note(
            f"{target.name}: predicted that {len(issues)} node(s) would not load ({names}), "
            f"but the {target.file_check} was created: the prediction was dropped"
        )
        issues = []
    for issue in issues:
        op = issue.op
        yield Problem(
            issue.message,
            Location(graph.path, module=op.module if op else None, op=op.name if op else None,
                     source=op.source if op else None),
            fix=issue.fix,
            key=issue.key,
        )  # fmt: skip
    if note:
        yield Note(note)
