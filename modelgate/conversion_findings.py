"""The finding of a failed conversion, shared by the conversion rules (MG101, MG102, MG107).

It reads the graph, the checks' results on it and the targets' declarations (labels, fixes),
and imports no stage. Each target names the rule that reports its failures
(``FAILURE_RULE``); a target that names none is MG107's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph
from modelgate.results import ChecksResult
from modelgate.rule import Note, Skip
from modelgate.target import Target
from modelgate.targets import REGISTRY as TARGETS


def locate(graph: ModelGraph, op: str | None, located_at: str | None) -> dict[str, Any]:
    """Where in the model a converter's error points: module, op and source line, found by
    the op it names and the location it gives ("conv/input.1": module conv)."""
    module = None
    if located_at and "/" in located_at:
        module = ".".join(located_at.split("/")[:-1]) or None
    if not op:
        return {"module": module}
    candidates = [o for o in graph.ops if o.opname.lstrip("_") == op.lstrip("_")]
    chosen = next((o for o in candidates if module and o.module == module), None)
    chosen = chosen or (candidates[0] if candidates else None)
    if chosen is None:
        return {"module": module, "op": op}
    return {"module": chosen.module or module, "op": chosen.target, "source": chosen.source}


def reported_by(rule: str | None) -> list[Target]:
    """The targets whose failed conversions ``rule`` reports (None: MG107's, the others)."""
    return [t for t in TARGETS if t.failure_rule == rule]


def failures(graph: ModelGraph, rule: str | None) -> Iterator[Problem | Skip | Note]:
    """The findings of every failed conversion ``rule`` reports, in target order."""
    for target in reported_by(rule):
        yield from failure(graph, target)


def failure(graph: ModelGraph, target: Target) -> Iterator[Problem | Skip | Note]:
    """The finding of a failed conversion to ``target`` (or of its check of a file as
    given), or a Skip when it did not run."""
    checks = graph.checks or ChecksResult()
    result = checks.of(target.name)
    for note in target.notes(graph.format, result) if isinstance(result, dict) else ():
        yield Note(note)  # also when it ran for the latency only
    if target.name not in checks.requested.convert:
        return
    if checks.skipped:
        yield Skip(f"not converted: {checks.skipped}")
        return
    if not isinstance(result, dict):
        return
    if result.get("ok") is None:
        yield Skip(f"not converted: {result.get('skipped') or 'not run'}")
        return
    if result.get("ok") or result.get("missing_kernels"):
        return  # converted; a program that needs kernels the runtime lacks is MG108's
    if graph.format in target.file_formats:  # the file as given: nothing was converted
        label = f"{target.file_check} of {target.file_formats[graph.format]}"
        fixes = target.file_fixes
    else:
        label = target.stage_labels.get(result.get("stage") or "", target.conversion)
        fixes = target.failure_fixes
    where = locate(graph, result.get("op"), result.get("located_at"))
    kind = result.get("kind") or "error"
    at = f" at {result['op']}" if result.get("op") else ""
    if result.get("located_at"):
        at += f" (located at {result['located_at']!r})"
    during = f" while {result['stage']}" if result.get("stage") and kind != "error" else ""
    verb = {"timeout": "timed out", "crash": "crashed", "memory": "ran out of memory"}
    if kind in verb:
        message = f"{label} {verb[kind]}{during}: {result.get('error')}"
    else:
        message = f"{label} failed{at}: {result.get('error')}"
    yield Problem(
        message,
        Location(
            graph.path, module=where.get("module"), op=where.get("op"), source=where.get("source")
        ),
        fix=fixes.get(kind, fixes["error"]),
        key=target.name,
    )
