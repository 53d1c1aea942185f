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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from modelgate.finding import Location, Problem
from modelgate.report import ModelReport, Report

# budgeted figure -> (rule that judges it, unit in messages, what it is)
METRICS: dict[str, tuple[str, str, str]] = {
    "size_mb": ("MG301", "MB", "size on the device: compressed Core ML, Core ML, ONNX or the file"),
    "file_mb": ("MG301", "MB", "the model file as committed"),
    "weights_mb": ("MG301", "MB", "weights and buffers as stored"),
    "parameters": ("MG301", "", "parameter count"),
    "peak_activation_mb": ("MG301", "MB", "estimated peak activation memory at the input shapes"),
    "macs": ("MG302", "", "multiply-accumulates per inference"),
    "latency_ms": ("MG302", "ms", "median latency on this machine's CPU"),
    "drift": ("MG303", "", "relative L2 error of the outputs against the original model"),
}
BUDGET_RULES = ("MG301", "MG302", "MG303", "MG304")


@dataclass(frozen=True)
class Limit:
    max: float | None = None
    max_increase: float | None = None  # in the figure's unit, against the baseline
    max_increase_pct: float | None = None  # percent of the baseline's figure

    @property
    def relative(self) -> bool:
        return self.max_increase is not None or self.max_increase_pct is not None


def parse(doc: dict[str, Any] | None) -> dict[str, Limit]:
    """Limits from the validated ``budget:`` mapping, in the config's order."""
    out: dict[str, Limit] = {}
    for key, value in (doc or {}).items():
        if isinstance(value, dict):
            out[key] = Limit(
                value.get("max"), value.get("max_increase"), value.get("max_increase_pct")
            )
        else:
            out[key] = Limit(max=value)
    return out


def schema() -> dict[str, Any]:
    """The ``budget`` property of the config schema."""
    number = {"type": "number", "minimum": 0}
    limit = {
        "oneOf": [
            number,
            {
                "type": "object",
                "properties": {
                    "max": {**number, "description": "maximum"},
                    "max_increase": {**number, "description": "growth against the baseline"},
                    "max_increase_pct": {
                        **number,
                        "description": "growth against the baseline, in percent",
                    },
                },
                "additionalProperties": False,
                "minProperties": 1,
            },
        ]
    }
    return {
        "budget": {
            "description": "limits; a number is a maximum, an object may also limit growth "
            "against a baseline. Exceeding one fails the gate (MG301-MG303)",
            "type": "object",
            "properties": {
                key: {**limit, "description": f"{what} ({unit or 'count'})"}
                for key, (_, unit, what) in METRICS.items()
            },
            "additionalProperties": False,
        }
    }


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
    from modelgate import engine
    from modelgate.graph import ModelGraph

    model.findings = [f for f in model.findings if f.rule not in BUDGET_RULES]
    limits: dict[str, Limit] = getattr(config, "budget", None) or {}
    if not limits:
        model.metrics.pop("budget", None)
        return
    evaluation = evaluate(model.metrics, limits, base_metrics(model.metrics))
    model.metrics["budget"] = evaluation
    view = ModelGraph(model.path, format=model.format)
    view.metadata["budget"] = evaluation
    base = model.metrics.get("baseline")
    if isinstance(base, dict) and base.get("path"):
        ref = base.get("ref")
        view.metadata["baseline_name"] = f"{base['path']} at {ref}" if ref else base["path"]
    outcome = engine.run_rules(view, config, model.path, needs="budget")
    model.findings.extend(outcome.findings)
    for rid, why in outcome.skipped.items():
        model.skipped[rid] = why


def describe(key: str, value: float) -> str:
    """A budgeted figure with its unit, as messages and tables show it."""
    unit = METRICS.get(key, ("", "", ""))[1]
    if key == "drift":
        text = f"{value:.3g}"
    elif key in ("parameters", "macs"):
        from modelgate.rule import human_count

        text = human_count(value)
    else:
        text = f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def problems(graph: Any, rule: str) -> Iterator[Problem]:
    """The findings of budget rule ``rule`` over the evaluation on ``graph`` (see
    :func:`apply`): one per figure over its maximum, one per figure over its growth limit."""
    for key, entry in (graph.metadata.get("budget") or {}).items():
        if entry.get("rule") != rule or entry.get("passed") is not False:
            continue
        value = entry["value"]
        of = f" ({entry['measured']})" if entry.get("measured") else ""
        limit = entry.get("limit")
        if limit is not None and value > limit:
            over = value - limit
            pct = f", +{over / limit:.0%}" if limit else ""
            yield Problem(
                f"{key} {describe(key, value)}{of} is over the budget of "
                f"{describe(key, limit)} by {describe(key, over)}{pct}",
                Location(graph.path),
                fix=_FIXES.get(key),
                key=f"budget:{key}",
            )
        old = entry.get("baseline")
        if old is None:
            continue
        increase = value - old
        allowed = []
        if entry.get("max_increase") is not None and increase > entry["max_increase"]:
            allowed.append(f"{describe(key, entry['max_increase'])}")
        pct_limit = entry.get("max_increase_pct")
        if (
            pct_limit is not None
            and increase > 0
            and (old <= 0 or 100 * increase / old > pct_limit)
        ):
            allowed.append(f"{pct_limit:g}%")
        if allowed:
            pct = f" (+{100 * increase / old:.1f}%)" if old else ""
            against = graph.metadata.get("baseline_name") or "the baseline"
            yield Problem(
                f"{key} grew by {describe(key, increase)}{pct} against {against} "
                f"({describe(key, old)} -> {describe(key, value)}), more than the "
                f"{' / '.join(allowed)} allowed",
                Location(graph.path),
                fix=_FIXES.get(key),
                key=f"budget:{key}:growth",
            )


def unjudged(graph: Any) -> Iterator[Problem]:
    """Budgeted figures that could not be measured (MG304)."""
    for key, entry in (graph.metadata.get("budget") or {}).items():
        if entry.get("passed") is None:
            yield Problem(
                f"the budget for {key} was not judged: {entry.get('reason')}",
                Location(graph.path),
                fix="make the figure measurable (see the reason), or remove the limit",
                key=f"budget:{key}:unjudged",
            )


_FIXES = {
    "size_mb": "compress further (compress: palettize-4 / int4), shrink the largest layers "
    "(metrics.largest_layers), or raise the budget",
    "file_mb": "store weights in FP16, drop optimizer state and unused tensors",
    "weights_mb": "store weights in FP16, or prune or shrink the largest layers",
    "parameters": "shrink the largest layers (metrics.largest_layers)",
    "peak_activation_mb": "reduce early feature-map sizes (stride or pool sooner), or the "
    "input resolution",
    "macs": "reduce feature-map sizes or channel counts of the heaviest layers",
    "latency_ms": "reduce MACs (feature-map sizes, channels); the latency is this machine's "
    "CPU, so compare it with a baseline rather than with the device",
    "drift": "use a gentler preset (palettize-8, int8 instead of 4-bit), a smaller group or "
    "block size, or compression-aware training (coremltools.optimize.torch)",
}
