"""Baselines: the same checks on an older version of a model, and what changed.

``modelgate check new.pt2 --baseline old.pt2`` checks both (in parallel worker processes,
with the same config), then stores in the new model's ``metrics["baseline"]`` the old
figures, the difference of every figure (size, parameters, latency, drift, ...) and the
findings that are new or fixed; new findings carry ``"new": true`` in the JSON. The budget
may limit growth against it (``max_increase``, ``max_increase_pct``). The shape is the one
the GitHub Action writes for the base branch's version, so reporters read either.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from modelgate.finding import Finding
from modelgate.report import ModelReport, Report


class BaselineError(Exception):
    """--baseline does not fit the paths checked (exit 2)."""


def pair(arguments: list[str], models: list[str], baseline: str) -> tuple[dict[str, str], dict]:
    """({model path: baseline path}, {model path: why it has none}).

    A file is the baseline of the one model checked. A folder holds baselines at the same
    place relative to it as each model is relative to the folder argument it was found in
    (a model named as a file: the same file name)."""
    if os.path.isfile(baseline):
        if len(models) != 1:
            raise BaselineError(
                f"--baseline {baseline} is a file, but {len(models)} models are checked: "
                "give a folder laid out like the models"
            )
        return {models[0]: baseline}, {}
    if not os.path.isdir(baseline):
        raise BaselineError(f"--baseline {baseline}: no such file or folder")
    found: dict[str, str] = {}
    missing: dict[str, str] = {}
    folders = [os.path.abspath(a) for a in arguments if os.path.isdir(a)]
    for model in models:
        absolute = os.path.abspath(model)
        rel = os.path.basename(model)
        for folder in folders:
            if absolute.startswith(folder + os.sep):
                rel = os.path.relpath(absolute, folder)
                break
        candidate = os.path.join(baseline, rel)
        if os.path.isfile(candidate):
            found[model] = candidate
        else:
            missing[model] = f"no baseline: {candidate} does not exist"
    return found, missing


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: v
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "budget"
    }


def _targets(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each target's own budgetable figures (size, latency, drift), for per-target growth
    limits (``budget.targets``)."""
    out = {}
    for name, entry in (metrics.get("conversions") or {}).items():
        if isinstance(entry, dict):
            figures = _scalars({k: entry.get(k) for k in ("size_mb", "latency_ms", "drift")})
            if figures:
                out[name] = figures
    return out


def _difference(new: float, old: float) -> float:
    change = new - old
    return change if isinstance(change, int) else float(f"{change:.6g}")


def attach(new: ModelReport, old: ModelReport, base_path: str, ref: str | None = None) -> None:
    """Store the old figures and every difference in ``new.metrics["baseline"]``."""
    before, after = _scalars(old.metrics), _scalars(new.metrics)
    delta = {k: _difference(after[k], v) for k, v in before.items() if k in after}
    pct = {k: round(100 * d / before[k], 2) for k, d in delta.items() if before[k] and k in after}
    targets = _targets(old.metrics)
    new.metrics["baseline"] = {
        "path": base_path,
        "ref": ref,
        "metrics": {**before, **({"conversions": targets} if targets else {})},
        "delta": delta,
        "delta_pct": pct,
        "passed": old.passed,
    }


def mark_findings(new: ModelReport, old: ModelReport) -> None:
    """New findings get ``"new": true``; the baseline lists them and the fixed ones."""
    base = new.metrics.get("baseline")
    if not isinstance(base, dict):
        return
    old_ids = {f.identity for f in old.findings}
    new_ids = {f.identity for f in new.findings}
    marked: list[Finding] = []
    fresh = []
    for finding in new.findings:
        is_new = finding.identity not in old_ids
        marked.append(replace(finding, extra={**finding.extra, "new": is_new}))
        if is_new:
            fresh.append(
                {"rule": finding.rule, "identity": finding.identity, "message": finding.message}
            )
    new.findings = marked
    base["new_findings"] = fresh
    base["fixed_findings"] = [
        f"{f.rule} {f.location.describe() or f.name}"
        for f in old.findings
        if f.identity not in new_ids
    ]


def relocated(old: ModelReport, path: str) -> ModelReport:
    """The baseline's report under the new model's path, so that per-file ignores and
    finding identities line up."""
    return replace(
        old,
        path=path,
        findings=[replace(f, location=replace(f.location, path=path)) for f in old.findings],
        metrics=dict(old.metrics),
    )


def compare_reports(
    report: Report, olds: dict[int, tuple[ModelReport, str, str | None]], config: Any
) -> dict[int, ModelReport]:
    """Attach each model's baseline (model index -> (old report, its path, its git ref or
    None)), judged by the same budget and per-file ignores as the new version; returns the
    judged baselines for :func:`finish_findings`. Runs before the new versions' budget (which
    may limit growth)."""
    from modelgate import budget, verdict

    twins = {}
    for index, (old, base_path, ref) in olds.items():
        model = report.models[index]
        if old.format == "lfs-pointer":
            where = f"{base_path} at {ref}" if ref else base_path
            model.notes.append(
                f"no baseline: {where} is a git-lfs pointer, not a model: run git lfs pull "
                "(in GitHub Actions, check out with lfs: true)"
            )
            continue
        twin = relocated(old, model.path)
        budget.apply_model(twin, config)
        verdict.finish(Report([twin]), config)
        attach(model, twin, base_path, ref)
        twins[index] = twin
    return twins


def finish_findings(report: Report, twins: dict[int, ModelReport]) -> None:
    """After the new versions were judged: mark the findings their baseline did not have."""
    for index, twin in twins.items():
        mark_findings(report.models[index], twin)
