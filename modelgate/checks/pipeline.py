"""The checks for one model: plan them, run each converter's step in a child, store results.

Runs in the process that checks the model (a worker of :mod:`modelgate.parallel`), after
the loader and before the rules. Results go to ``graph.metadata["checks"]``, normalised so
that the rules (MG101-MG105) and :func:`summarize` read one shape whatever happened: per
converter ``{"ok": True | False | None, ...}`` (None: not run, with ``skipped``), per preset
the same, a failure's ``error``, ``kind`` (error, crash, timeout, memory) and ``stage``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from modelgate.checks import graphstats
from modelgate.checks.settings import PRESETS, CheckSettings
from modelgate.graph import ModelGraph

RUNS_MODEL = ("latency_ms", "drift")  # budgeted figures only a run of the model gives
STATIC = ("macs", "peak_activation_mb")  # budgeted figures the graph view gives
MARGIN = 5.0  # seconds of the model's time limit kept for the rules and the report
_RUNNABLE = ("torchscript", "torch_export")
_WEIGHTS_ONLY = ("state_dict", "checkpoint", "tensor", "safetensors")
NO_ONNX_FRONTEND = "Core ML has no ONNX frontend (coremltools 6 removed it)"
MODULES = {
    "coreml": ("torch", "numpy", "coremltools", "coremltools.optimize.coreml"),
    "palettize": ("sklearn.cluster",),
    "onnx": ("torch", "numpy", "onnx", "onnxruntime"),
    "onnx_dynamo": ("onnxscript",),
    "torch": ("torch", "numpy"),
    # what torch.export.load and run_decompositions import on first use (~2 s, once a worker)
    "torch_export": (
        "torch._export.serde.serialize",
        "torch.export._trace",
        "torch._functorch.aot_autograd",
        "torch._functorch.partitioners",
    ),
}
INSTALL = {
    "coremltools": "pip install 'modelgate-lint[coreml]'",
    "onnxruntime": "pip install 'modelgate-lint[onnx]'",
    "onnxscript": "pip install 'modelgate-lint[onnx]'",
    "onnx": "pip install 'modelgate-lint[onnx]'",
    "torch": "pip install 'modelgate-lint[torch]'",
    "sklearn.cluster": "pip install scikit-learn (k-means for palettization)",
    "numpy": "pip install numpy",
}


def wanted(config: Any) -> bool:
    """Whether this run converts, compresses, measures or judges a budget at all."""
    settings: CheckSettings = config.checks
    return settings.active or bool(getattr(config, "budget", None))


def _needs_run(config: Any) -> bool:
    limits = getattr(config, "budget", {}) or {}
    return config.checks.active or any(k in limits for k in RUNS_MODEL)


def blocked(graph: ModelGraph) -> tuple[str, str | None] | None:
    """(why modelgate will not load this model to convert or run it, what would let it),
    or None."""
    if graph.unreadable is not None:
        return "the file could not be read (MG902)", None
    if graph.pickle_issues or graph.native_code:
        return (
            "loading this file would run code modelgate does not trust (MG901 / MG903); "
            "nothing was converted or run",
            None,
        )
    save = "save the model with torch.export.save (.pt2) or torch.jit.save"
    if graph.format in _WEIGHTS_ONLY:
        kind = graph.format.replace("_", " ")
        return f"a {kind} holds weights only, no architecture to convert or run", save
    if graph.format == "pickled_module":
        return (
            "a pickled nn.Module needs its Python class to load, and loading runs that code",
            save,
        )
    if graph.format not in (*_RUNNABLE, "onnx"):
        return f"a {graph.format.replace('_', ' ')} file cannot be converted or run", None
    return None


HOW_TO_SHAPE = "give input shapes with --input-shape NAME=1x3x224x224 or inputs: in the config"


def input_specs(graph: ModelGraph) -> tuple[list[tuple[str, tuple[int, ...], str]], str | None]:
    """(name, shape, dtype) per model input, symbolic dims filled from their range (else 1);
    or the reason there are none (what gives them: :data:`HOW_TO_SHAPE`)."""
    if not graph.inputs:
        return [], "the model does not record its input shapes"
    specs = []
    for value in graph.inputs:
        spec = _spec(graph, value)
        if isinstance(spec, str):
            return [], spec
        specs.append(spec)
    return specs, None


def _spec(graph: ModelGraph, value: Any) -> tuple[str, tuple[int, ...], str] | str:
    if value.shape is None:
        return f"the shape of input {value.name!r} is unknown"
    dims = []
    for dim in value.shape:
        if isinstance(dim, int):
            dims.append(dim)
        elif isinstance(dim, str):
            low = (graph.symbols.get(dim) or {}).get("min")
            dims.append(max(int(low), 1) if isinstance(low, int) else 1)
        else:
            return f"input {value.name!r} has a dimension of unknown size"
    return (value.name, tuple(dims), value.dtype or "float32")


def onnx_specs(graph: ModelGraph) -> list[tuple[str, tuple[int, ...], str]]:
    """For an ONNX file: the inputs whose shapes are known (given or recorded); the step
    makes values for the others from the file's own types (strings, sequences, optionals)."""
    specs = [_spec(graph, value) for value in graph.inputs]
    return [s for s in specs if not isinstance(s, str)]


def run(graph: ModelGraph, config: Any, display: str, started: float | None = None) -> None:
    """Run what the config asks for on ``graph``'s model; results in graph.metadata["checks"].
    A bug here is reported as the checks' reason for not running, not as an unreadable model."""
    try:
        _run(graph, config, display, started)
    except Exception as exc:
        checks = graph.metadata.setdefault("checks", {})
        checks["skipped"] = f"internal error in modelgate's checks: {type(exc).__name__}: {exc}"


def _run(graph: ModelGraph, config: Any, display: str, started: float | None) -> None:
    settings: CheckSettings = config.checks
    started = time.monotonic() if started is None else started
    checks: dict[str, Any] = {
        "requested": {
            "convert": list(settings.converters),  # with Core ML when a preset implies it
            "compress": list(settings.compress),
            "asked": list(settings.convert),  # what convert: / --convert named
        },
    }
    graph.metadata["checks"] = checks
    checks["graph"] = graphstats.stats(graph)
    if not _needs_run(config):
        return
    why = blocked(graph)
    if graph.format == "onnx" and why is None:
        specs = onnx_specs(graph)  # an ONNX file's session check needs no shapes
    else:
        specs, no_shapes = input_specs(graph)
        if why is None and no_shapes is not None:
            why = (no_shapes, HOW_TO_SHAPE)
    if why is not None:
        reason, fix = why
        checks["skipped"] = f"{reason}: {fix}" if fix else reason
        checks["skipped_why"] = {"reason": reason, "fix": fix}
        return
    checks["inputs"] = [{"name": n, "shape": list(s), "dtype": d} for n, s, d in specs]
    measure_settings = settings.measure
    jobs = _plan(graph, settings, specs, config)
    for target, job, skipped in jobs:
        if skipped:
            checks[target] = {"ok": None, "skipped": skipped}
            continue
        missing = _preload(target, job)
        if missing:
            checks[target] = {
                "ok": None,
                "skipped": f"{missing} is not installed: {INSTALL.get(missing, 'install it')}",
            }
            continue
        left = config.timeout - (time.monotonic() - started) - MARGIN
        if left < 1:
            checks[target] = {"ok": None, "skipped": "not run: the model's time limit was used up"}
            continue
        limit = min(settings.isolation.timeout or left, left)
        _record(checks, target, job, _execute(job, limit, settings, display))
    checks["measure"] = {
        "samples": measure_settings.samples,
        "seed": measure_settings.seed,
        "threads": measure_settings.threads,
        "device": cpu_name(),
    }


def _plan(
    graph: ModelGraph, settings: CheckSettings, specs: list, config: Any
) -> list[tuple[str, Any, str | None]]:
    """(target, job, reason it is not run) for each child to run, in order. Latency is timed
    once: in ONNX Runtime when the ONNX export runs, else in torch."""
    from modelgate.checks.steps import Job

    limits = getattr(config, "budget", {}) or {}
    latency = settings.measure.latency and (settings.active or "latency_ms" in limits)
    drift = settings.measure.drift
    converters = settings.converters

    def job(target: str, **options: Any) -> Job:
        return Job(path=graph.path, format=graph.format, target=target, inputs=tuple(specs),
                   settings=settings, **options)  # fmt: skip

    out: list[tuple[str, Any, str | None]] = []
    if graph.format == "onnx":
        if "coreml" in converters:
            why = f"{NO_ONNX_FRONTEND}: convert the PyTorch model"
            out.append(("coreml", None, why))
        if "onnx" in converters or latency:
            out.append(("onnx", job("onnx", latency=latency, drift=False), None))
        return out
    if "coreml" in converters:
        target = settings.coreml.target_for(settings.compress)
        timed = latency and "onnx" not in converters
        out.append(("coreml", job("coreml", deployment_target=target, drift=drift,
                                  latency=timed), None))  # fmt: skip
    if "onnx" in converters:
        out.append(("onnx", job("onnx", drift=drift, latency=latency), None))
    if not converters and latency:
        out.append(("torch", job("torch", drift=False, latency=True), None))
    return out


def modules_for(converters: tuple[str, ...]) -> list[str]:
    """The modules the given converters import, in import order, without repeats."""
    return list(dict.fromkeys(m for c in converters for m in MODULES.get(c, ())))


def _preload(target: str, job: Any) -> str | None:
    """Import what the step needs here, once per worker; the first missing module, or None.
    (The worker sized the OpenMP and BLAS pools when it started: :mod:`modelgate.parallel`.)"""
    from modelgate.checks import isolate

    modules = list(MODULES.get(target, ()))
    if target == "coreml" and any(PRESETS[p].api == "palettize" for p in job.settings.compress):
        modules += MODULES["palettize"]
    if target == "onnx" and job.format == "torch_export":
        modules += MODULES["onnx_dynamo"]
    if job.format in _RUNNABLE:
        modules = ["torch", *modules]
    if job.format == "torch_export":
        modules += MODULES["torch_export"]
    missing = isolate.preload(dict.fromkeys(modules))
    return missing[0] if missing else None


def _execute(job: Any, timeout: float, settings: CheckSettings, display: str) -> Any:
    from modelgate.checks import coreml_step, isolate, onnx_step, steps

    show = _progress(display)
    start = time.monotonic()
    targets = {"coreml": coreml_step.convert, "onnx": onnx_step.export}
    outcome = isolate.run(
        steps.run,
        (job, targets, {"onnx": onnx_step.check_file}),
        timeout=timeout,
        memory_mb=settings.isolation.memory_mb,
        on_stage=(lambda stage: show(stage.split(": ", 1)[-1] + " ...")) if show else None,
        name=job.target,
    )
    if show:
        what = "failed: " + outcome.failure.reason if outcome.failure else "done"
        show(f"{job.target} step {what} ({time.monotonic() - start:.1f} s)")
    return outcome


def _progress(display: str) -> Any:
    """A line printer for a terminal (long steps show what they are doing), else None."""
    try:
        if not sys.stderr.isatty() or os.environ.get("MODELGATE_NO_PROGRESS"):
            return None
    except (AttributeError, ValueError):
        return None

    def show(text: str) -> None:
        print(f"modelgate: {display}: {text}", file=sys.stderr, flush=True)

    return show


def _record(checks: dict[str, Any], target: str, job: Any, outcome: Any) -> None:
    """Fold a step's outcome into the normalised results, the failure where it happened."""
    results = dict(outcome.results)
    failure = outcome.failure
    failed_at = None
    if failure is not None:
        failed_at = (failure.stage or "").split(": ", 1)[0] or target
        failure_info = {
            "ok": False,
            "error": failure.reason,
            "kind": failure.kind,
            "stage": (failure.stage or "").split(": ", 1)[-1] or None,
            "detail": failure.detail[-1500:],
        }
    load = results.get("load")
    if load is not None and not load.get("ok", True):
        checks[target] = {
            "ok": False,
            "error": f"torch could not load the model: {load['error']}",
            "kind": "error",
            "stage": "loading the model",
        }
        return
    reference = results.get("reference")
    if reference is not None:
        checks["reference"] = reference
    if "latency" in results:
        checks["latency"] = results["latency"]
    if failure is not None and failed_at in ("load", "latency"):
        checks[target] = failure_info  # before the conversion started: it did not happen
        return
    if target == "torch":
        return
    own = results.get(target)
    if own is None:
        own = failure_info if failure is not None else {"ok": False, "error": "no result"}
    checks[target] = own
    if f"{target}_drift" in results:
        own["drift"] = results[f"{target}_drift"]
    elif failure is not None and failed_at == f"{target}_drift":
        own["drift"] = {"error": failure.reason}
    if "onnx_run" in results and target == "onnx":
        own["run"] = results["onnx_run"]
    elif failure is not None and failed_at == "onnx_run" and target == "onnx":
        own["run"] = {"ok": False, "error": failure.reason, "kind": failure.kind}
    if target != "coreml" or not own.get("ok"):
        return
    presets: dict[str, Any] = {}
    ended = False
    for preset in job.settings.compress:
        key = f"compress:{preset}"
        if key in results:
            presets[preset] = results[key]
            if f"drift:{preset}" in results:
                presets[preset]["drift"] = results[f"drift:{preset}"]
            elif failure is not None and failed_at == f"drift:{preset}":
                presets[preset]["drift"] = {"error": failure.reason}
                ended = True
        elif failure is not None and failed_at == key:
            presets[preset] = dict(failure_info)
            ended = True
        else:
            presets[preset] = {
                "ok": None,
                "skipped": "not run: an earlier step failed"
                if ended or failure is not None
                else "not run",
            }
    checks["compress"] = presets


def cpu_name() -> str:
    """What "this machine's CPU" was, for the latency label."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return f"this machine's CPU: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    import platform

    return f"this machine's CPU: {platform.processor() or platform.machine()}"


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------

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


def summarize(checks: dict[str, Any], static: dict[str, Any]) -> dict[str, Any]:
    """The report's figures from the checks: ``size_mb``, ``latency_ms`` and ``drift`` (what
    the budget judges) with what each measured, and the detail behind them."""
    out: dict[str, Any] = {}
    not_measured: dict[str, str] = {}
    graph = checks.get("graph") or {}
    for key in STATIC:
        if graph.get(key) is not None:
            out[key] = graph[key]
        elif graph.get("why"):
            not_measured[key] = graph["why"]
    conversions: dict[str, Any] = {}
    for target in ("coreml", "onnx"):
        result = checks.get(target)
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
    coreml_mb = conversions.get("coreml", {}).get("size_mb")
    compression: dict[str, Any] = {}
    for preset, result in (checks.get("compress") or {}).items():
        entry = {
            k: v for k, v in result.items() if k not in ("bytes", "drift", "skipped", "detail")
        }
        if "bytes" in result:
            entry["size_mb"] = _mb(result["bytes"])
            if coreml_mb:
                entry["ratio"] = round(coreml_mb / max(entry["size_mb"], 1e-9), 2)
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
    requested = (checks.get("requested") or {}).get("compress") or []
    primary = requested[0] if requested else None
    if primary and compression.get(primary, {}).get("size_mb") is not None:
        out["size_mb"], out["size_from"] = compression[primary]["size_mb"], f"Core ML, {primary}"
    elif coreml_mb is not None:
        out["size_mb"], out["size_from"] = coreml_mb, "Core ML"
    elif conversions.get("onnx", {}).get("size_mb") is not None:
        out["size_mb"], out["size_from"] = conversions["onnx"]["size_mb"], "ONNX"
    else:
        out["size_from"] = "file"
    _drift_figures(checks, primary, out, not_measured)
    latency = checks.get("latency")
    if isinstance(latency, dict) and "median_ms" in latency:
        out["latency_ms"] = latency["median_ms"]
        out["latency"] = {**latency, "device": (checks.get("measure") or {}).get("device")}
    elif isinstance(latency, dict) and latency.get("error"):
        not_measured["latency_ms"] = f"timing failed: {latency['error']}"
    run = (checks.get("onnx") or {}).get("run") or {}
    if run.get("ok") is not True and run.get("error"):
        not_measured.setdefault(
            "latency_ms", f"not measured: ONNX Runtime did not run it: {run['error']}"
        )
    if checks.get("skipped"):
        for key in RUNS_MODEL:
            not_measured.setdefault(key, f"not measured: {checks['skipped']}")
    declared = [i.get("shape") for i in static.get("inputs") or []]
    if checks.get("inputs") and declared != [i["shape"] for i in checks["inputs"]]:
        out["measured_inputs"] = checks["inputs"]  # symbolic dims filled in
    requested = checks.get("requested") or {}
    for key in RUNS_MODEL if requested.get("convert") or requested.get("compress") else ():
        if key not in out and key not in not_measured:
            not_measured[key] = _unmeasured_reason(key, checks)
    out["not_measured"] = {k: v for k, v in not_measured.items() if out.get(k) is None}
    if not out["not_measured"]:
        del out["not_measured"]
    return out


def _drift_figures(
    checks: dict[str, Any], primary: str | None, out: dict[str, Any], not_measured: dict
) -> None:
    """``drift``: of the compressed model when compression ran, else of the Core ML
    conversion, else of ONNX Runtime; None (with the reason) when it means nothing."""
    candidates = []
    if primary:
        candidates.append(((checks.get("compress") or {}).get(primary, {}), f"Core ML, {primary}"))
    candidates.append((checks.get("coreml") or {}, "Core ML conversion (FP16 weights)"))
    candidates.append((checks.get("onnx") or {}, "ONNX Runtime"))
    for holder, of in candidates:
        drift = holder.get("drift")
        if not isinstance(drift, dict):
            continue
        out["drift_detail"] = _drift_detail(drift, of)
        if drift.get("error"):
            not_measured["drift"] = f"measuring the drift failed: {drift['error']}"
        elif drift.get("degenerate"):
            out["drift"] = None
            not_measured["drift"] = f"not meaningful: {drift['degenerate']}"
        else:
            out["drift"] = drift.get("rel_l2")
        return


def _unmeasured_reason(key: str, checks: dict[str, Any]) -> str:
    if key == "drift":
        requested = checks.get("requested") or {}
        if not requested.get("convert") and not requested.get("compress"):
            return "not measured: nothing was converted or compressed (--convert, --compress)"
        return "not measured: the conversion or compression did not finish"
    return "not measured: the model was not run (measure.latency: false, or a step failed)"
