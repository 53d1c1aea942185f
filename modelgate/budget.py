"""The budget: limits on what a model costs, judged after the checks measured it.

In the config, a scalar is a maximum; an object can also limit growth against a baseline
(``--baseline OLD``, or the base branch's version under the GitHub Action)::

    budget:
      size_mb: 25                     # converted + compressed when those checks ran, else the file
      latency_ms: {max: 30}
      drift: 0.01                     # relative L2 error against the original model
      parameters: {max_increase_pct: 10}

:func:`evaluate` turns the limits and a model's ``metrics`` into one entry per budgeted
figure (value, limit, difference, passed), stored as ``metrics["budget"]`` so that reporters
render it without computing; :func:`apply` runs the budget rules (MG301-MG304) over it. It
runs after every model was checked, so that a baseline checked in another process counts.
"""

from __future__ import annotations

import math
from typing import Any

from modelgate.limits import BUDGET_RULES, METRICS, Limit, describe, parse
from modelgate.report import ModelReport, Report
from modelgate.results import BudgetEntry, BudgetResult

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
    ``baseline``, ``increase``, ``increase_pct`` and the growth limits."""
    out: dict[str, dict[str, Any]] = {}
    unmeasured = metrics.get("not_measured") or {}
    for key, limit in limits.items():
        value = metrics.get(key)
        entry: dict[str, Any] = {"value": value, "rule": METRICS[key][0], "unit": METRICS[key][1]}
        measured = _measured(key, metrics)
        if measured:
            entry["measured"] = measured
        verdicts: list[bool] = []
        if limit.max is not None:
            entry["limit"] = limit.max
        if not _number(value):
            entry["value"] = None
            entry["passed"] = None
            entry["reason"] = unmeasured.get(key) or _why_unmeasured(key, metrics)
            out[key] = entry
            continue
        if limit.max is not None:
            entry["difference"] = _round(value - limit.max)
            verdicts.append(value <= limit.max)
        if limit.relative:
            old = (base or {}).get(key)
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
                entry["reason"] = (
                    "no baseline to compare with (--baseline OLD; in the Action: a new model)"
                )
                out[key] = entry
                continue
            else:
                entry["note"] = (
                    "growth limits not judged: no baseline (--baseline OLD; in the Action: "
                    "a new model)"
                )
        entry["passed"] = all(verdicts)
        out[key] = entry
    return out


def _measured(key: str, metrics: dict[str, Any]) -> str | None:
    """What the figure is of: "Core ML, palettize-4", "ONNX Runtime ...", ..."""
    if key == "size_mb":
        return metrics.get("size_from")
    if key == "drift":
        return (metrics.get("drift_detail") or {}).get("of")
    if key == "latency_ms":
        return (metrics.get("latency") or {}).get("runtime")
    return None


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
