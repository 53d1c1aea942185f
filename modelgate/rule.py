"""What a rule module declares, and small helpers rules share for their messages.

A rule is a plain module in ``rules/``::

    ID = "MG001"                  # stable id
    NAME = "oversized-linear"     # kebab-case, reads as "allow oversized-linear"
    SEVERITY = "error"            # default; the config may change it
    NEEDS = "weights"             # weights | graph | shapes | checks | budget | file
    OPTIONS = {"min_share": Option(float, 0.5, "...")}
    def check(graph, options): ...  # yields Problem, Skip or Note; never prints or loads files

Its docstring is its documentation (``modelgate rule MG001``) with the sections ruff uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelgate.results import ChecksResult

DOC_SECTIONS = ("What it does", "Why is this bad?", "Example", "Use instead", "Options")
NEEDS = ("weights", "graph", "shapes", "checks", "budget", "file")


@dataclass(frozen=True)
class Option:
    """A rule option: its type, default and one line of help (printed and put in the schema)."""

    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    item_type: type | None = None  # for list options

    def json_schema(self) -> dict[str, Any]:
        names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
        schema: dict[str, Any] = {"description": self.help}
        if self.type is float:
            schema["type"] = "number"
        else:
            schema["type"] = names[self.type]
        if self.default is None:
            schema["type"] = [schema["type"], "null"]
        if self.choices:
            schema["enum"] = list(self.choices)
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.type is list and self.item_type is not None:
            schema["items"] = {"type": names[self.item_type]}
        schema["default"] = self.default
        return schema


@dataclass(frozen=True)
class Note:
    """Something a reader should know that is not a finding (kept in the model's notes)."""

    text: str


@dataclass(frozen=True)
class Skip:
    """A rule could not run on this model; ``reason`` says what would let it."""

    reason: str


def human_count(n: float) -> str:
    """37_748_736 -> "37.7M"."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def human_bytes(n: float) -> str:
    """151_000_000 -> "151 MB" (decimal units, as file managers show sizes)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{n:.0f} B"


def dims(shape: tuple[Any, ...]) -> str:
    """(36864, 1024) -> "36864x1024"."""
    return "x".join(str(d) for d in shape)


def not_compressed(checks: ChecksResult) -> str | None:
    """Why no preset ran (the checks as a whole, or the conversion they compress), or None;
    MG103 and MG105 say it the same way."""
    from modelgate.targets import REGISTRY

    if checks.skipped:
        return f"not compressed: {checks.skipped}"
    asked = checks.requested.compress
    owners = [REGISTRY.preset_owner(p) for p in asked] or [t for t in REGISTRY if t.presets]
    for owner in dict.fromkeys(o for o in owners if o is not None):
        converted = checks.of(owner.name) or {}
        if converted.get("ok") is None and converted.get("skipped"):
            return f"not compressed: {converted['skipped']}"
        if converted.get("ok") is False:
            rule = owner.failure_rule or "MG107"
            return f"not compressed: the {owner.conversion} failed ({rule})"
    return None
