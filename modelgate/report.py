"""The report: what every reporter renders. Reporters never compute; everything is here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelgate import __version__
from modelgate.finding import Finding, severity_rank


@dataclass
class ModelReport:
    path: str  # as the user named it (repository-relative under the Action)
    format: str
    findings: list[Finding] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # rule id -> why it did not run
    notes: list[str] = field(default_factory=list)
    passed: bool = True
    cached: str | None = None  # from the result cache: when it was checked (UTC, ISO 8601)
    # why this result depends on the run, not the file (a timeout, a crash): never cached
    transient: str | None = field(default=None, compare=False, repr=False)

    def not_checked(self) -> list[tuple[str, str]]:
        """(rule ids, reason) of the rules that did not run; rules skipped for the same reason
        share one entry, so a report says each reason once."""
        by_reason: dict[str, list[str]] = {}
        for rid, why in sorted(self.skipped.items()):
            by_reason.setdefault(why, []).append(rid)
        return [(", ".join(ids), why) for why, ids in by_reason.items()]

    @property
    def kind(self) -> str:
        """The file's format as a reader says it, and what built it into a model."""
        label = self.format.replace("_", " ")
        built = self.metrics.get("built")
        if isinstance(built, dict):
            label += f", built by {built.get('by')}" if built.get("ok") else ", build failed"
        return label

    def counts(self) -> dict[str, int]:
        out = {"error": 0, "warning": 0, "info": 0}
        for f in self.findings:
            out[f.severity] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        out = {
            "path": self.path,
            "format": self.format,
            "passed": self.passed,
            "findings": [f.to_dict() for f in self.findings],
            "metrics": self.metrics,
            "skipped": [{"rule": r, "reason": why} for r, why in sorted(self.skipped.items())],
            "notes": self.notes,
        }
        if self.cached is not None:
            out["cached"] = self.cached
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelReport:
        """The inverse of :meth:`to_dict`."""
        return cls(
            path=data["path"],
            format=data.get("format", "unknown"),
            findings=[Finding.from_dict(f) for f in data.get("findings", [])],
            metrics=data.get("metrics") or {},
            skipped={s["rule"]: s.get("reason", "") for s in data.get("skipped", [])},
            notes=list(data.get("notes", [])),
            passed=bool(data.get("passed", True)),
            cached=data.get("cached") if isinstance(data.get("cached"), str) else None,
        )


@dataclass
class Report:
    models: list[ModelReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # run-level: unused ignores, ...
    fail_on: str = "error"
    version: str = __version__

    @property
    def passed(self) -> bool:
        return all(m.passed for m in self.models)

    def counts(self) -> dict[str, int]:
        out = {"error": 0, "warning": 0, "info": 0}
        for m in self.models:
            for k, v in m.counts().items():
                out[k] += v
        return out

    def findings(self) -> list[tuple[ModelReport, Finding]]:
        """All findings, most severe first, then by model and message (a stable order)."""
        pairs = [(m, f) for m in self.models for f in m.findings]
        return sorted(pairs, key=lambda p: (severity_rank(p[1].severity), p[0].path, p[1].rule))

    def to_dict(self) -> dict[str, Any]:
        return {
            "modelgate": self.version,
            "passed": self.passed,
            "fail_on": self.fail_on,
            "counts": self.counts(),
            "models": [m.to_dict() for m in self.models],
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """The inverse of :meth:`to_dict`: a ``--format json`` report read back (what the
        Action's matrix jobs upload and ``combine`` joins). ``passed`` and ``counts`` are
        recomputed from the models, never trusted from the file."""
        return cls(
            models=[ModelReport.from_dict(m) for m in data.get("models", [])],
            notes=list(data.get("notes", [])),
            fail_on=data.get("fail_on", "error"),
            version=data.get("modelgate", "?"),
        )
