"""Findings: what a rule reports, stamped by the engine with the rule's id and severity.

Rules yield :class:`Problem` (message, location, fix); the engine turns each into a
:class:`Finding` with the id, name and the severity the configuration gives the rule, so that
no rule decides its own severity (yamllint does the same).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

SEVERITIES = ("error", "warning", "info")
_RANK = {name: i for i, name in enumerate(SEVERITIES)}


def severity_rank(severity: str) -> int:
    """0 for error, 1 for warning, 2 for info: smaller is more severe."""
    return _RANK[severity]


@dataclass(frozen=True)
class SourceLocation:
    """The Python source line that created a layer or op, as the model recorded it."""

    file: str
    line: int
    function: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Location:
    """Where a finding points: the model file, and inside it as much as is known."""

    path: str
    module: str | None = None  # module path, e.g. "head.2"
    op: str | None = None  # graph node name or op kind, e.g. "aten::linear"
    tensor: str | None = None  # tensor name, e.g. "head.2.weight"
    member: str | None = None  # archive member, e.g. "archive/data.pkl"
    input: str | None = None  # model input name
    source: SourceLocation | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None and k != "source"}
        if self.source is not None:
            out["source"] = asdict(self.source)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Location:
        """The inverse of :meth:`to_dict`; keys it does not know are dropped."""
        loc = dict(data)
        source = loc.pop("source", None)
        location = cls(**_known(cls, {"path": "", **loc}))
        if isinstance(source, dict):
            location = replace(location, source=SourceLocation(**_known(SourceLocation, source)))
        return location

    def describe(self) -> str:
        """Short human form: "head.2 (model.py:41)"."""
        where = self.module or self.tensor or self.op or self.input or self.member or ""
        if self.source is not None:
            where = f"{where} ({self.source})" if where else str(self.source)
        return where


@dataclass(frozen=True)
class Problem:
    """What a rule yields; the engine stamps id, name and severity onto it."""

    message: str
    location: Location
    fix: str | None = None
    key: str | None = None  # stable identity inside the model, for fingerprints and baselines


@dataclass(frozen=True)
class Finding:
    rule: str
    name: str
    severity: str
    message: str
    location: Location
    fix: str | None = None
    key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule,
            "name": self.name,
            "severity": self.severity,
            "message": self.message,
            "location": self.location.to_dict(),
            "fix": self.fix,
        }
        if self.key is not None:  # stable within the model: baselines and fingerprints use it
            out["key"] = self.key
        if self.extra:
            out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        """The inverse of :meth:`to_dict` (a report read back: the Action's ``combine``)."""
        return cls(
            rule=data["rule"],
            name=data.get("name", ""),
            severity=data.get("severity", "error"),
            message=data.get("message", ""),
            location=Location.from_dict(data.get("location") or {}),
            fix=data.get("fix"),
            key=data.get("key"),
            extra={k: v for k, v in data.items() if k not in _CORE},
        )

    @property
    def identity(self) -> str:
        """What makes a finding "the same" across two versions of a model (for baselines)."""
        return f"{self.rule}:{self.key or self.location.describe() or self.message}"


_CORE = ("rule", "name", "severity", "message", "location", "fix", "key")


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that are fields of dataclass ``cls``."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}
