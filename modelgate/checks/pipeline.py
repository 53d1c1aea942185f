"""The checks for one model: carry out :mod:`plan`, each target's step in a child; store results.

Runs in the process that checks the model (a worker of :mod:`modelgate.parallel`), after
the loader and before the rules. What a step does is its target's (``targets/``); this module
names none. Results go to ``graph.checks`` (a :class:`~modelgate.results.ChecksResult`),
normalised so that the rules (MG101-MG107) and :mod:`figures` read one shape whatever
happened: per target ``{"ok": True | False | None, ...}`` (None: not run, with ``skipped``),
per preset the same, a failure's ``error``, ``kind`` (error, crash, timeout, memory) and
``stage``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from modelgate.checks import graphstats, plan
from modelgate.checks.settings import CheckSettings
from modelgate.graph import ModelGraph
from modelgate.results import ChecksResult, Requested
from modelgate.targets import REGISTRY as TARGETS

MARGIN = 5.0  # seconds of the model's time limit kept for the rules and the report
INSTALL = {"torch": "pip install 'modelgate-lint[torch]'", "numpy": "pip install numpy"}


def run(graph: ModelGraph, config: Any, display: str, started: float | None = None) -> None:
    """Run what the config asks for on ``graph``'s model; results in ``graph.checks``.
    A bug here is reported as the checks' reason for not running, not as an unreadable model."""
    try:
        _run(graph, config, display, started)
    except Exception as exc:
        if graph.checks is None:
            graph.checks = ChecksResult()
        graph.checks.skipped = f"internal error in modelgate's checks: {type(exc).__name__}: {exc}"


def _run(graph: ModelGraph, config: Any, display: str, started: float | None) -> None:
    settings: CheckSettings = config.checks
    started = time.monotonic() if started is None else started
    checks = ChecksResult(
        Requested(
            convert=list(settings.converters),  # with the target a preset implies
            compress=list(settings.compress),
            asked=list(settings.convert),  # what convert: / --convert named
        )
    )
    graph.checks = checks
    checks.graph = graphstats.stats(graph)
    if not plan.needs_run(config):
        return
    why = plan.blocked(graph)
    if plan.file_checkers(graph.format) and why is None:
        specs = plan.file_specs(graph)  # a file checked as given (ONNX) needs no shapes
    else:
        specs, no_shapes = plan.input_specs(graph)
        if why is None and no_shapes is not None:
            why = (no_shapes, plan.HOW_TO_SHAPE)
    if why is not None:
        checks.skip(*why)
        return
    checks.inputs = [{"name": n, "shape": list(s), "dtype": d} for n, s, d in specs]
    measure_settings = settings.measure
    jobs = plan.plan(graph, settings, specs, config)
    for target, job, skipped in jobs:
        if skipped:
            checks.targets[target] = {"ok": None, "skipped": skipped}
            continue
        missing = _preload(target, job)
        if missing:
            checks.targets[target] = {
                "ok": None,
                "skipped": f"{missing} is not installed: {_install(missing, target)}",
            }
            continue
        left = config.timeout - (time.monotonic() - started) - MARGIN
        if left < 1:
            checks.targets[target] = {
                "ok": None,
                "skipped": "not run: the model's time limit was used up",
            }
            continue
        limit = min(settings.isolation.timeout or left, left)
        _record(checks, target, job, _execute(job, limit, settings, display))
    checks.measure = {
        "samples": measure_settings.samples,
        "seed": measure_settings.seed,
        "threads": measure_settings.threads,
        "device": cpu_name(),
    }


def _install(module: str, target: str) -> str:
    """How to install a missing module: its target's extra, or the hint the target gives."""
    owner = TARGETS.find(target)
    hints = dict(INSTALL)
    if owner is not None:
        hints.update(getattr(owner.module, "INSTALL", {}))
        return hints.get(module, owner.install)
    return hints.get(module, "install it")


def _preload(target: str, job: Any) -> str | None:
    """Import what the step needs here, once per worker; the first missing module, or None.
    (The worker sized the OpenMP and BLAS pools when it started: :mod:`modelgate.parallel`.)"""
    from modelgate.checks import isolate

    owner = TARGETS.find(target)
    modules = owner.modules(job) if owner is not None else list(plan.TORCH)
    if job.format in plan.RUNNABLE:
        modules = ["torch", *modules]
    if job.format == "torch_export":
        modules += plan.TORCH_EXPORT
    missing = isolate.preload(dict.fromkeys(modules))
    if not missing and owner is not None and owner.name not in _WARMED:
        _WARMED.add(owner.name)
        owner.warm()  # one-time setup its steps (children of this worker) then inherit
    return missing[0] if missing else None


_WARMED: set[str] = set()  # targets whose one-time setup this worker has done


def _execute(job: Any, timeout: float, settings: CheckSettings, display: str) -> Any:
    from modelgate.checks import isolate, steps

    show = _progress(display)
    start = time.monotonic()
    target = TARGETS.find(job.target)  # None: the torch-only latency job
    step = target.step if target is not None else None
    file_step = (
        target.file_step if target is not None and job.format in target.file_formats else None
    )
    outcome = isolate.run(
        steps.run,
        (job, step, file_step),
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


def _record(checks: ChecksResult, target: str, job: Any, outcome: Any) -> None:
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
        checks.targets[target] = {
            "ok": False,
            "error": f"torch could not load the model: {load['error']}",
            "kind": "error",
            "stage": "loading the model",
        }
        return
    reference = results.get("reference")
    if reference is not None:
        checks.reference = reference
    if "latency" in results and checks.latency is None:
        checks.latency = results["latency"]  # the figure: the first runtime's (target order)
    if failure is not None and failed_at in ("load", "latency"):
        checks.targets[target] = failure_info  # before the conversion started: it did not happen
        return
    if target == "torch":
        return
    own = results.get(target)
    if own is None:
        own = failure_info if failure is not None else {"ok": False, "error": "no result"}
    checks.targets[target] = own
    if job.runtime_latency and "median_ms" in (results.get("latency") or {}):
        own["latency_ms"] = results["latency"]["median_ms"]  # its runtime's, for the matrix
    if f"{target}_drift" in results:
        own["drift"] = results[f"{target}_drift"]
    elif failure is not None and failed_at == f"{target}_drift":
        own["drift"] = {"error": failure.reason}
    if f"{target}_run" in results:
        own["run"] = results[f"{target}_run"]
    elif failure is not None and failed_at == f"{target}_run":
        own["run"] = {"ok": False, "error": failure.reason, "kind": failure.kind}
    offered = TARGETS.get(target).presets
    if not offered or not own.get("ok"):
        return
    presets: dict[str, Any] = {}
    ended = False
    for preset in (p for p in job.settings.compress if p in offered):
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
    checks.compress = presets


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
