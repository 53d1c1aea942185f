"""Budget limits: what the config's ``budget:`` says, and how a breach is said.

A leaf module: the config parses limits with it, and the budget rules (MG301-MG304) word
their findings with it, so that neither imports the budget stage (:mod:`modelgate.budget`),
which runs the rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from modelgate.finding import Location, Problem
from modelgate.results import BudgetResult

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
# the figures each converted target has of its own (``metrics["conversions"][target]``),
# limited under ``budget.targets.<target>``
PER_TARGET = ("size_mb", "latency_ms", "drift")
TARGETS_KEY = "targets"  # budget.targets: per target, limits on its own figures


@dataclass(frozen=True)
class Limit:
    max: float | None = None
    max_increase: float | None = None  # in the figure's unit, against the baseline
    max_increase_pct: float | None = None  # percent of the baseline's figure

    @property
    def relative(self) -> bool:
        return self.max_increase is not None or self.max_increase_pct is not None


def target_key(target: str, figure: str) -> str:
    """The budget key of one target's figure: ``"executorch.latency_ms"``."""
    return f"{target}.{figure}"


def split(budget_key: str) -> tuple[str | None, str]:
    """(target, figure) of a budget key; target None for a model-wide figure."""
    target, _, figure = budget_key.rpartition(".")
    return target or None, figure


def name(budget_key: str) -> str:
    """A budget key as messages say it: ``size_mb``, ``executorch latency_ms``."""
    target, figure = split(budget_key)
    return f"{target} {figure}" if target else figure


def budgeted_targets(limits: dict[str, Limit]) -> tuple[str, ...]:
    """The targets whose own figures the limits judge, in the config's order."""
    return tuple(dict.fromkeys(t for t, _ in map(split, limits) if t))


def _limit(value: Any) -> Limit:
    if isinstance(value, dict):
        return Limit(value.get("max"), value.get("max_increase"), value.get("max_increase_pct"))
    return Limit(max=value)


def parse(doc: dict[str, Any] | None) -> dict[str, Limit]:
    """Limits from the validated ``budget:`` mapping, in the config's order; a target's own
    figures under :func:`target_key` (``targets: {onnx: {size_mb: 3}}`` -> "onnx.size_mb")."""
    out: dict[str, Limit] = {}
    for figure, value in (doc or {}).items():
        if figure == TARGETS_KEY:
            for target, figures in (value or {}).items():
                for own, limit in (figures or {}).items():
                    out[target_key(target, own)] = _limit(limit)
        else:
            out[figure] = _limit(value)
    return out


def schema(targets: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``budget`` property of the config schema; ``targets`` (registered name -> label)
    are the keys ``budget.targets`` accepts."""
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
                **{
                    figure: {**limit, "description": f"{what} ({unit or 'count'})"}
                    for figure, (_, unit, what) in METRICS.items()
                },
                TARGETS_KEY: {
                    "description": "per converted target, limits on its own figures "
                    f"({', '.join(PER_TARGET)}); limiting one converts to that target",
                    "type": "object",
                    "properties": {
                        target: {
                            "description": f"limits on the {label} figures",
                            "type": "object",
                            "properties": {
                                figure: {**limit, "description": f"{label}: {_OWN[figure]}"}
                                for figure in PER_TARGET
                            },
                            "additionalProperties": False,
                            "minProperties": 1,
                        }
                        for target, label in (targets or {}).items()
                    },
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        }
    }


_OWN = {
    "size_mb": "size of what it made (MB)",
    "latency_ms": "median latency in its runtime on this machine's CPU (ms)",
    "drift": "relative L2 error of its outputs against the original model",
}


def describe(key: str, value: float) -> str:
    """A budgeted figure (or a target's, ``"onnx.size_mb"``) with its unit, as messages and
    tables show it."""
    key = split(key)[1]
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
    budget = graph.budget or BudgetResult()
    for key, entry in budget.entries.items():
        if entry.rule != rule or entry.passed is not False or entry.value is None:
            continue
        value = entry.value
        target, figure = split(key)
        said, fix = name(key), (target and _TARGET_FIXES.get(figure)) or _FIXES.get(figure)
        of = f" ({entry.measured})" if entry.measured else ""
        limit = entry.limit
        if limit is not None and value > limit:
            over = value - limit
            pct = f", +{over / limit:.0%}" if limit else ""
            yield Problem(
                f"{said} {describe(key, value)}{of} is over the budget of "
                f"{describe(key, limit)} by {describe(key, over)}{pct}",
                Location(graph.path),
                fix=fix,
                key=f"budget:{key}",
            )
        old = entry.baseline
        if old is None:
            continue
        increase = value - old
        allowed = []
        if entry.max_increase is not None and increase > entry.max_increase:
            allowed.append(f"{describe(key, entry.max_increase)}")
        pct_limit = entry.max_increase_pct
        if (
            pct_limit is not None
            and increase > 0
            and (old <= 0 or 100 * increase / old > pct_limit)
        ):
            allowed.append(f"{pct_limit:g}%")
        if allowed:
            pct = f" (+{100 * increase / old:.1f}%)" if old else ""
            against = budget.baseline or "the baseline"
            yield Problem(
                f"{said} grew by {describe(key, increase)}{pct} against {against} "
                f"({describe(key, old)} -> {describe(key, value)}), more than the "
                f"{' / '.join(allowed)} allowed",
                Location(graph.path),
                fix=fix,
                key=f"budget:{key}:growth",
            )


def unjudged(graph: Any) -> Iterator[Problem]:
    """Budgeted figures that could not be measured (MG304)."""
    for key, entry in (graph.budget or BudgetResult()).entries.items():
        if entry.passed is None:
            yield Problem(
                f"the budget for {name(key)} was not judged: {entry.reason}",
                Location(graph.path),
                fix="make the figure measurable (see the reason), or remove the limit",
                key=f"budget:{key}:unjudged",
            )


# a target's own size and drift: what it converted, not a Core ML compression preset
_TARGET_FIXES = {
    "size_mb": "shrink the largest layers (metrics.largest_layers), quantize the weights with "
    "the target's own toolchain (Core ML: compress: palettize-4 / int8), or raise the budget",
    "drift": "its conversion changes the outputs: compare with another target's drift, look "
    "for ops it computes in lower precision, or raise the limit",
}
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
