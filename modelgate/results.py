"""Typed results the stages hand forward: what the checks and the budget found for one model.

:mod:`modelgate.checks.pipeline` fills a :class:`ChecksResult` and puts it on the graph view
(``graph.checks``); the rules (MG101-MG107) and :mod:`modelgate.checks.figures` read it.
:mod:`modelgate.budget` judges the figures into a :class:`BudgetResult` (``graph.budget`` of
the view the budget rules MG301-MG304 run on). A leaf: only the standard library.

Each target's result (and each preset's) stays the open record its step emitted
(``{"ok": True | False | None, ...}`` with ``error``, ``kind``, ``stage``, ``op``, sizes and
drift): its fields are the target's own and reach the JSON report as they are. What every
target shares is typed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

StepResult = dict[str, Any]  # one target's or one preset's result (see the module docstring)


@dataclass
class BuildResult:
    """How a file of weights was built into a model (:mod:`modelgate.checks.build`), or why
    it was not: what MG111 (keys that do not fit) and MG112 (a failed build) read."""

    kind: str  # recipe | huggingface | pickled_module
    label: str  # what built it: "recipe models.net:build"
    ok: bool = False
    pt2: str | None = None  # the exported program, in ``folder``
    folder: str | None = None  # a temporary folder the engine removes
    stage: str | None = None  # where it stopped
    error: str | None = None
    # not built, and not a finding: a folder that only looks like a Hugging Face model
    # (transformers missing, a model type it does not know, no default inputs of its kind)
    refused: bool = False
    missing: list[str] = field(default_factory=list)  # the module's keys the file lacks
    unexpected: list[str] = field(default_factory=list)  # the file's keys the module lacks
    mismatched: list[tuple[Any, ...]] = field(default_factory=list)  # (key, file, module)
    counts: dict[str, int] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)  # what it was exported on
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def keys_fit(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "by": self.label, "ok": self.ok}
        if self.inputs:
            out["inputs"] = self.inputs
        if not self.ok:
            out.update(stage=self.stage, error=self.error)
            if self.refused:
                out["refused"] = True
        if not self.keys_fit:
            out["keys"] = {"missing": self.missing, "unexpected": self.unexpected,
                           "mismatched": [list(m) for m in self.mismatched]}  # fmt: skip
        if self.notes:
            out["notes"] = self.notes
        return out


@dataclass
class Requested:
    """What the run asked of this model's checks."""

    convert: list[str] = field(default_factory=list)  # with the target a preset implies
    compress: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)  # what convert: / --convert named itself


@dataclass
class ChecksResult:
    """The checks of one model: what was asked, what ran, what each step found."""

    requested: Requested = field(default_factory=Requested)
    graph: dict[str, Any] = field(default_factory=dict)  # graphstats: MACs, peak activation
    skipped: str | None = None  # why none of the checks ran, with what would let them
    skipped_why: dict[str, Any] | None = None  # the same as {"reason": ..., "fix": ...}
    inputs: list[dict[str, Any]] | None = None  # the inputs they ran on (symbolic dims filled)
    targets: dict[str, StepResult] = field(default_factory=dict)  # by target name
    compress: dict[str, StepResult] | None = None  # by preset, when a compressing target ran
    reference: dict[str, Any] | None = None  # the original model's outputs, described
    latency: dict[str, Any] | None = None
    measure: dict[str, Any] | None = None  # samples, seed, threads, device

    def of(self, target: str) -> StepResult | None:
        """The result of ``target``'s step, or None when it was not planned."""
        return self.targets.get(target)

    def preset(self, name: str) -> StepResult | None:
        return (self.compress or {}).get(name)

    def skip_reason(self) -> tuple[str, str | None] | None:
        """(why none of the checks ran, what would let them), or None."""
        if not self.skipped:
            return None
        why = self.skipped_why
        if isinstance(why, dict) and why.get("reason"):
            return why["reason"], why.get("fix")
        return self.skipped, None

    def skip(self, reason: str, fix: str | None = None) -> None:
        """Record that nothing runs, and why."""
        self.skipped = f"{reason}: {fix}" if fix else reason
        self.skipped_why = {"reason": reason, "fix": fix}

    _KEYS = ("graph", "skipped", "skipped_why", "inputs", "compress", "reference", "latency",
             "measure")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The flat record (targets beside the other keys), as tests and debugging show it."""
        out: dict[str, Any] = {
            "requested": {
                "convert": list(self.requested.convert),
                "compress": list(self.requested.compress),
                "asked": list(self.requested.asked),
            }
        }
        for key in self._KEYS:
            value = getattr(self, key)
            if value is not None and (value or key == "graph"):
                out[key] = value
        out.update(self.targets)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChecksResult:
        """The inverse of :meth:`to_dict`: every key that is not a shared one is a target's."""
        requested = data.get("requested") or {}
        return cls(
            requested=Requested(
                convert=list(requested.get("convert") or []),
                compress=list(requested.get("compress") or []),
                asked=list(requested.get("asked") or []),
            ),
            graph=dict(data.get("graph") or {}),
            skipped=data.get("skipped"),
            skipped_why=data.get("skipped_why"),
            inputs=data.get("inputs"),
            targets={k: v for k, v in data.items() if k not in (*cls._KEYS, "requested")},
            compress=data.get("compress"),
            reference=data.get("reference"),
            latency=data.get("latency"),
            measure=data.get("measure"),
        )


@dataclass
class BudgetEntry:
    """One budgeted figure judged (:func:`modelgate.budget.evaluate`): the value, its limits
    and the verdict; ``passed`` is None when it could not be judged (``reason`` says why)."""

    value: float | None
    rule: str  # the budget rule that reports it (MG301-MG303)
    unit: str
    measured: str | None = None  # what the figure is of ("Core ML, palettize-4")
    limit: float | None = None
    difference: float | None = None  # value - limit
    baseline: float | None = None  # the base version's figure, when growth is limited
    increase: float | None = None
    increase_pct: float | None = None
    max_increase: float | None = None
    max_increase_pct: float | None = None
    note: str | None = None
    passed: bool | None = None
    reason: str | None = None

    _ORDER = (
        "value", "rule", "unit", "measured", "limit", "difference", "baseline", "increase",
        "increase_pct", "max_increase", "max_increase_pct", "note", "passed", "reason",
    )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The report's form (``metrics["budget"][key]``): set fields only, in that order."""
        out: dict[str, Any] = {}
        for key in self._ORDER:
            value = getattr(self, key)
            kept = key in ("value", "rule", "unit", "passed")
            kept = kept or (key == "increase_pct" and self.baseline is not None)
            if value is not None or kept:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BudgetEntry:
        return cls(**{k: data[k] for k in cls._ORDER if k in data})


@dataclass
class BudgetResult:
    """The budget judged for one model, as the budget rules (MG301-MG304) read it."""

    entries: dict[str, BudgetEntry] = field(default_factory=dict)  # in the config's order
    baseline: str | None = None  # what growth was measured against ("old.pt2 at main")
