"""The report's figures from a model's check results: size, latency and drift, with what
each measured and why a figure is missing.

Reads ``graph.checks`` as :mod:`pipeline` wrote it; which target measured what
comes from the targets' declarations (``targets/``), so this module names none.
"""

from __future__ import annotations

from typing import Any

from modelgate.results import ChecksResult
from modelgate.targets import REGISTRY as TARGETS

RUNS_MODEL = ("latency_ms", "drift")  # budgeted figures only a run of the model gives
STATIC = ("macs", "peak_activation_mb")  # budgeted figures the graph view gives


_DRIFT_KEYS = (
    "rel_l2",
    "rel_l2_centered",
    "max_abs",
    "cosine_min",
    "cosine_mean",
    "psnr_db",
    "top1_agreement",
    "top1_classes",
    "degenerate",
    "weak",
    "method",
    "samples",
    "weight_error",
    "unmapped",
    "weights_compressed",
    "error",
)


def _mb(value: Any) -> float | None:
    return round(value / 1e6, 3) if isinstance(value, (int, float)) else None


def _drift_detail(drift: dict[str, Any], of: str) -> dict[str, Any]:
    out = {k: drift[k] for k in _DRIFT_KEYS if k in drift}
    out["of"] = of
    return out


def summarize(checks: ChecksResult, static: dict[str, Any]) -> dict[str, Any]:
    """The report's figures from the checks: ``size_mb``, ``latency_ms`` and ``drift`` (what
    the budget judges) with what each measured, and the detail behind them."""
    out: dict[str, Any] = {}
    not_measured: dict[str, str] = {}
    graph = checks.graph or {}
    for key in STATIC:
        if graph.get(key) is not None:
            out[key] = graph[key]
        elif graph.get("why"):
            not_measured[key] = graph["why"]
    conversions: dict[str, Any] = {}
    for target in TARGETS.names():
        result = checks.of(target)
        if result is None:
            continue
        entry = {k: v for k, v in result.items() if k not in ("bytes", "drift", "detail")}
        if "bytes" in result:
            entry["size_mb"] = _mb(result["bytes"])
        drift = result.get("drift") or {}
        if "rel_l2" in drift:
            entry["drift"] = None if drift.get("degenerate") else drift["rel_l2"]
        conversions[target] = entry
    if conversions:
        out["conversions"] = conversions
        out["targets"] = [_row(t, checks.of(t.name) or {}, conversions[t.name])
                          for t in TARGETS if t.name in conversions]  # fmt: skip
    compression: dict[str, Any] = {}
    for preset, result in (checks.compress or {}).items():
        owner = TARGETS.preset_owner(preset)
        converted_mb = conversions.get(owner.name, {}).get("size_mb") if owner else None
        entry = {
            k: v for k, v in result.items() if k not in ("bytes", "drift", "skipped", "detail")
        }
        if "bytes" in result:
            entry["size_mb"] = _mb(result["bytes"])
            if converted_mb:
                entry["ratio"] = round(converted_mb / max(entry["size_mb"], 1e-9), 2)
        if isinstance(result.get("skipped"), list):
            entry["skipped"] = len(result["skipped"])
            entry["skipped_layers"] = [
                {k: s[k] for k in ("name", "tensor", "shape", "reason", "hint") if k in s}
                for s in result["skipped"]
            ]
        elif result.get("skipped"):
            entry["skipped"] = result["skipped"]
        drift = result.get("drift") or {}
        if "rel_l2" in drift:
            entry["drift"] = None if drift.get("degenerate") else drift["rel_l2"]
            if "top1_agreement" in drift:
                entry["top1_agreement"] = drift["top1_agreement"]
        compression[preset] = entry
    if compression:
        out["compression"] = compression
    primary = checks.requested.compress[0] if checks.requested.compress else None
    sized = [(t.label, conversions[t.name]["size_mb"]) for t in TARGETS
             if conversions.get(t.name, {}).get("size_mb") is not None]  # fmt: skip
    if primary and compression.get(primary, {}).get("size_mb") is not None:
        out["size_mb"], out["size_from"] = compression[primary]["size_mb"], _of(primary)
    elif sized:
        out["size_from"], out["size_mb"] = sized[0]
    else:
        out["size_from"] = "file"
    _drift_figures(checks, primary, out, not_measured)
    latency = checks.latency
    if isinstance(latency, dict) and "median_ms" in latency:
        out["latency_ms"] = latency["median_ms"]
        out["latency"] = {**latency, "device": (checks.measure or {}).get("device")}
    elif isinstance(latency, dict) and latency.get("error"):
        not_measured["latency_ms"] = f"timing failed: {latency['error']}"
    for target in TARGETS:
        run = (checks.of(target.name) or {}).get("run") or {}
        if run.get("ok") is not True and run.get("error"):
            not_measured.setdefault(
                "latency_ms", f"not measured: {target.runtime} did not run it: {run['error']}"
            )
    if checks.skipped:
        for key in RUNS_MODEL:
            not_measured.setdefault(key, f"not measured: {checks.skipped}")
    declared = [i.get("shape") for i in static.get("inputs") or []]
    if checks.inputs and declared != [i["shape"] for i in checks.inputs]:
        out["measured_inputs"] = checks.inputs  # symbolic dims filled in
    requested = checks.requested
    for key in RUNS_MODEL if requested.convert or requested.compress else ():
        if key not in out and key not in not_measured:
            not_measured[key] = _unmeasured_reason(key, checks)
    out["not_measured"] = {k: v for k, v in not_measured.items() if out.get(k) is None}
    if not out["not_measured"]:
        del out["not_measured"]
    return out


def _drift_figures(
    checks: ChecksResult, primary: str | None, out: dict[str, Any], not_measured: dict
) -> None:
    """``drift``: of the compressed model when compression ran, else of the first target's
    conversion (in registry order); None (with the reason) when it means nothing."""
    candidates = []
    if primary:
        candidates.append((checks.preset(primary) or {}, _of(primary)))
    candidates += [(checks.of(t.name) or {}, t.drift_of) for t in TARGETS]
    for holder, of in candidates:
        drift = holder.get("drift")
        if not isinstance(drift, dict):
            continue
        out["drift_detail"] = _drift_detail(drift, of)
        if (holder.get("run") or {}).get("elsewhere"):  # its runtime is not here: no failure
            not_measured["drift"] = f"not measured: {drift['error']}"
        elif drift.get("error"):
            not_measured["drift"] = f"measuring the drift failed: {drift['error']}"
        elif drift.get("degenerate"):
            out["drift"] = None
            not_measured["drift"] = f"not meaningful: {drift['degenerate']}"
        else:
            out["drift"] = drift.get("rel_l2")
        return


def _unmeasured_reason(key: str, checks: ChecksResult) -> str:
    if key == "drift":
        if not checks.requested.convert and not checks.requested.compress:
            return "not measured: nothing was converted or compressed (--convert, --compress)"
        return "not measured: the conversion or compression did not finish"
    return "not measured: the model was not run (measure.latency: false, or a step failed)"


def _row(target: Any, result: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """One row of the target matrix: did it convert, what it costs, and its own detail."""
    if result.get("missing_kernels"):
        outcome = "will not load"
    else:
        outcome = {True: "ok", False: "failed", None: "not run"}[result.get("ok")]
    if result.get("ok"):
        detail = target.summary(result) or ""
    elif result.get("ok") is False:
        detail = target.summary(result) if result.get("missing_kernels") else result.get("error")
    else:
        detail = result.get("skipped")
    return {
        "target": target.name,
        "result": outcome,
        "size_mb": entry.get("size_mb"),
        "latency_ms": result.get("latency_ms"),
        "drift": entry.get("drift"),
        "detail": str(detail or "")[:300],
    }


def _of(preset: str) -> str:
    """What a compressed figure is of: "Core ML, palettize-4"."""
    owner = TARGETS.preset_owner(preset)
    return f"{owner.label}, {preset}" if owner else preset
