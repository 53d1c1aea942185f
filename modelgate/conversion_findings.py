"""The finding of a failed conversion, shared by the conversion rules (MG101, MG102).

A leaf: it reads the graph and the checks' results on it, and imports no stage.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph
from modelgate.rule import Skip


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


def failure(
    graph: ModelGraph, target: str, label: str, fixes: dict[str, str]
) -> Iterator[Problem | Skip]:
    """The finding of a failed conversion to ``target``, or a Skip when it did not run."""
    checks = graph.metadata.get("checks") or {}
    if target not in (checks.get("requested") or {}).get("convert", []):
        return
    if checks.get("skipped"):
        yield Skip(f"not converted: {checks['skipped']}")
        return
    result = checks.get(target)
    if not isinstance(result, dict):
        return
    if result.get("ok") is None:
        yield Skip(f"not converted: {result.get('skipped') or 'not run'}")
        return
    if result.get("ok"):
        return
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
        key=target,
    )
