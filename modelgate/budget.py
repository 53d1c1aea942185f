"""The budget: limits on what a model costs, judged after the checks measured it.

In the config, a scalar is a maximum; an object can also limit growth against a baseline
(``--baseline OLD``, or the base branch's version under the GitHub Action)::

    budget:
      size_mb: 25                     # converted + compressed when those checks ran, else the file
      latency_ms: {max: 30}
      drift: 0.01                     # relative L2 error against the original model
      parameters: {max_increase_pct: 10}
      targets:                        # each converted target's own figures (size_mb,
        executorch: {latency_ms: 20}  # latency_ms, drift); limiting one converts to it

:func:`evaluate` turns the limits and a model's ``metrics`` into one entry per budgeted
figure (value, limit, difference, passed), stored as ``metrics["budget"]`` so that reporters
render it without computing; :func:`apply` runs the budget rules (MG301-MG304) over it. It
runs after every model was checked, so that a baseline checked in another process counts.
"""

from __future__ import annotations

import math
from typing import Any

from modelgate.limits import BUDGET_RULES, METRICS, Limit, describe, parse, split
from modelgate.report import ModelReport, Report
from modelgate.results import BudgetEntry, BudgetResult
from modelgate.targets import REGISTRY as TARGETS

__all__ = ["BUDGET_RULES", "METRICS", "Limit", "apply", "apply_model", "describe", "evaluate",
           "parse"]  # fmt: skip


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def evaluate(
    metrics: dict[str, Any], limits: dict[str, Limit], base: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """One entry per budgeted figure: ``value``, ``limit``, ``difference`` (value - limit),
    ``passed`` (None when it could not be judged, with ``reason``), and against a baseline
    ``baseline``, ``increase``, ``increase_pct`` and the growth limits. A target's own figure
    (``"executorch.latency_ms"``) is read from ``metrics["conversions"][target]``, and the
    baseline's from the same place in ``base``."""
    out: dict[str, dict[str, Any]] = {}
    unmeasured = metrics.get("not_measured") or {}
    for key, limit in limits.items():
        target, figure = split(key)
        if target is None:
            value, measured = metrics.get(key), _measured(key, metrics)
            old = (base or {}).get(key)
        else:
            value, measured = _own(metrics, target, figure), _own_measured(metrics, target, figure)
            old = _own(base or {}, target, figure)
        entry: dict[str, Any] = {
            "value": value,
            "rule": METRICS[figure][0],
            "unit": METRICS[figure][1],
        }
        if measured:
            entry["measured"] = measured
        verdicts: list[bool] = []
        if limit.max is not None:
            entry["limit"] = limit.max
        if not _number(value):
            entry["value"] = None
            entry["passed"] = None
            if target is None:
                entry["reason"] = unmeasured.get(key) or _why_unmeasured(key, metrics)
            else:
                entry["reason"] = _why_unmeasured_own(metrics, target, figure)
            out[key] = entry
            continue
        if limit.max is not None:
            entry["difference"] = _round(value - limit.max)
            verdicts.append(value <= limit.max)
        if limit.relative:
            if _number(old):
                increase = value - old
                entry["baseline"] = old
                entry["increase"] = _round(increase)
                entry["increase_pct"] = _round(100 * increase / old) if old else None
                if limit.max_increase is not None:
                    entry["max_increase"] = limit.max_increase
                    verdicts.append(increase <= limit.max_increase)
                if limit.max_increase_pct is not None:
                    entry["max_increase_pct"] = limit.max_increase_pct
                    grew = increase <= 0 or (
                        old > 0 and 100 * increase / old <= limit.max_increase_pct
                    )
                    verdicts.append(grew)
            elif limit.max is None:
                entry["passed"] = None
                entry["reason"] = _no_baseline(base, key)
                out[key] = entry
                continue
            else:
                entry["note"] = _no_baseline(base, key, note=True)
        entry["passed"] = all(verdicts)
        out[key] = entry
    return out


_NO_BASELINE = "no baseline to compare with (--baseline OLD; in the Action: a new model)"
_NOT_JUDGED = "growth limits not judged: no baseline (--baseline OLD; in the Action: a new model)"


def _no_baseline(base: dict[str, Any] | None, key: str, note: bool = False) -> str:
    """Why growth was not judged: no baseline, or one without this target's figure."""
    target, figure = split(key)
    if base is None or target is None:
        return _NOT_JUDGED if note else _NO_BASELINE
    missing = f"the baseline has no {target} {figure} to compare with"
    return f"growth limits not judged: {missing}" if note else missing


def _measured(key: str, metrics: dict[str, Any]) -> str | None:
    """What the figure is of: "Core ML, palettize-4", "ONNX Runtime ...", ..."""
    if key == "size_mb":
        return metrics.get("size_from")
    if key == "drift":
        return (metrics.get("drift_detail") or {}).get("of")
    if key == "latency_ms":
        return (metrics.get("latency") or {}).get("runtime")
    return None


def _own(metrics: dict[str, Any], target: str, figure: str) -> Any:
    """A target's own figure: ``metrics["conversions"][target][figure]``, or None."""
    entry = (metrics.get("conversions") or {}).get(target)
    return entry.get(figure) if isinstance(entry, dict) else None


def _own_measured(metrics: dict[str, Any], target: str, figure: str) -> str:
    """What a target's figure is of: its label, its runtime (latency), its drift's source."""
    found = TARGETS.find(target)
    if found is None:  # a report read back after the target was unregistered
        return target
    if figure == "latency_ms":
        entry = (metrics.get("conversions") or {}).get(target) or {}
        return str(entry.get("runtime") or found.runtime or found.label)
    if figure == "drift":
        return found.drift_of
    return found.label


def _row(metrics: dict[str, Any], target: str) -> dict[str, Any]:
    """The target matrix's row of ``target`` (:mod:`modelgate.checks.figures`), or {}."""
    for row in metrics.get("targets") or []:
        if isinstance(row, dict) and row.get("target") == target:
            return row
    return {}


def _why_unmeasured_own(metrics: dict[str, Any], target: str, figure: str) -> str:
    """Why a target's own figure is missing: not converted (and how to), its conversion
    failed or will not load (the matrix's detail), or the target does not measure it."""
    found = TARGETS.find(target)
    label = found.label if found is not None else target
    conversions = metrics.get("conversions") or {}
    entry = conversions.get(target)
    if not isinstance(entry, dict):
        skipped = (metrics.get("not_measured") or {}).get("drift") or ""
        if not conversions and skipped.startswith("not measured: "):
            # none of the checks ran (a state dict, no input shapes, ...): that is why
            return f"not measured: {label} was not converted: {skipped.split(': ', 1)[1]}"
        return (
            f"not measured: {label} was not converted (--convert {target} or convert: [{target}])"
        )
    row = _row(metrics, target)
    result = row.get("result") or {True: "ok", False: "failed"}.get(entry.get("ok"), "not run")
    detail = str(row.get("detail") or entry.get("error") or entry.get("skipped") or "")
    detail = f": {detail}" if detail else ""
    if result == "failed":
        conversion = found.conversion if found is not None else f"{label} conversion"
        return f"not measured: the {conversion} failed{detail}"
    if result == "will not load":
        return f"not measured: {label} will not load it{detail}"
    if result == "not run":
        return f"not measured: {label} was not run{detail}"
    if figure == "latency_ms":
        if found is not None and not found.runtime:
            return f"not measured by {label}: nothing on this machine runs what it makes"
        run = entry.get("run") if isinstance(entry.get("run"), dict) else {}
        if run.get("error"):
            runtime = _own_measured(metrics, target, figure)
            return f"not measured: {runtime} did not run it: {run['error']}"
        return f"not measured: {label} was not timed (measure.latency: false?)"
    run = entry.get("run") if isinstance(entry.get("run"), dict) else {}
    if figure == "drift" and run.get("elsewhere"):  # its runtime is not on this machine
        return f"not measured: {run['error']}"
    if figure == "drift" and "drift" in entry:
        return "not meaningful: the original model's outputs are near-constant (MG104)"
    return f"not measured by {label}: its check gives no {figure}"


def _why_unmeasured(key: str, metrics: dict[str, Any]) -> str:
    if key == "drift":
        return "not measured: nothing was converted or compressed (convert: / --convert)"
    if key == "latency_ms":
        return "not measured: the model was not run (measure.latency: false?)"
    if key in ("macs", "peak_activation_mb"):
        return "unknown: the model's graph or input shapes are not known (--input-shape)"
    return "not measured"


def base_metrics(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The baseline's figures, as :mod:`modelgate.baseline` (or the Action) stored them."""
    base = metrics.get("baseline")
    if isinstance(base, dict) and isinstance(base.get("metrics"), dict):
        return base["metrics"]
    return None


def apply(report: Report, config: Any) -> None:
    """Judge every model against ``config.budget`` and stamp the budget rules' findings.

    Idempotent: earlier budget findings are replaced, so it can run again after a baseline is
    attached."""
    for model in report.models:
        apply_model(model, config)


def apply_model(model: ModelReport, config: Any) -> None:
    from modelgate import lint
    from modelgate.graph import ModelGraph

    model.findings = [f for f in model.findings if f.rule not in BUDGET_RULES]
    limits: dict[str, Limit] = getattr(config, "budget", None) or {}
    if not limits:
        model.metrics.pop("budget", None)
        return
    evaluation = evaluate(model.metrics, limits, base_metrics(model.metrics))
    model.metrics["budget"] = evaluation
    view = ModelGraph(model.path, format=model.format)
    view.budget = BudgetResult({k: BudgetEntry.from_dict(e) for k, e in evaluation.items()})
    base = model.metrics.get("baseline")
    if isinstance(base, dict) and base.get("path"):
        ref = base.get("ref")
        view.budget.baseline = f"{base['path']} at {ref}" if ref else base["path"]
    outcome = lint.run_rules(view, config, model.path, needs="budget")
    model.findings.extend(outcome.findings)
    for rid, why in outcome.skipped.items():
        model.skipped[rid] = why
