"""ONNX: torch.onnx's exporter, ONNX Runtime's CPU provider, and ONNX files as given.

The target module for ONNX Runtime (see :mod:`modelgate.target` for what a target declares).
MG003 reads torch.onnx's function registry and decompositions (the legacy exporter's symbolic
registry for TorchScript) from the shipped snapshot, and for an ONNX file the installed ONNX
Runtime's kernel registry (:mod:`modelgate.onnx_support`). The step exports in the child, runs
``onnx.checker``, opens an ONNX Runtime session and runs it: drift against torch and the
latency come from ONNX Runtime itself on this CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the steps' types; what they use is imported in the child, when it runs
    import numpy as np

    from modelgate.checks import steps
    from modelgate.checks.isolate import Emit

NAME = "onnx"
LABEL = "ONNX"
EXTRA = "onnx"
REQUIRES = ("torch", "onnx", "onnxruntime")
DEFAULT = True  # MG003 checks it when no targets are configured
CONVERSION = "ONNX export"
CONVERTING = "exporting to ONNX"
OP_FIX = (
    "rewrite it with ops torch.onnx exports, or register a custom ONNX function "
    "(torch.onnx.export(..., custom_translation_table=...))"
)
FAILURE_RULE = "MG102"
FAILURE_FIXES = {
    "error": "make the op exportable: rewrite it with ops torch.onnx exports, or register a "
    "custom ONNX function (torch.onnx.export(..., custom_translation_table=...))",
    "timeout": "raise the time limit (timeout: / --timeout, isolation.timeout)",
    "memory": "raise isolation.memory_mb, or export on a machine with more memory",
    "crash": "the exporter or ONNX Runtime crashed: report it with the model",
}
# after these stages the export itself worked (a failure is onnx.checker's or ONNX Runtime's)
LATER_STAGES = ("running onnx.checker", "creating an ONNX Runtime session")
STAGE_LABELS = {
    "exporting to ONNX": "ONNX export",
    "running onnx.checker": "onnx.checker",
    "creating an ONNX Runtime session": "ONNX Runtime session",
}
DRIFT_LABEL = "ONNX Runtime"
DRIFT_OF = "ONNX Runtime"
RUNTIME = "ONNX Runtime"
FILE_FORMATS = {"onnx": "the ONNX file"}
FILE_CHECK = "ONNX Runtime session"
FILE_FIXES = {
    "error": "use ops and opsets this ONNX Runtime implements (its message names the op), "
    "or a newer onnxruntime; re-export the ONNX file from its source model if it is damaged",
    "timeout": "raise the time limit (timeout: / --timeout, isolation.timeout)",
    "memory": "raise isolation.memory_mb, or check on a machine with more memory",
    "crash": "ONNX Runtime crashed loading the ONNX file: report it to onnxruntime with the file",
}
MODULES = ("torch", "numpy", "onnx", "onnxruntime")


def op_verdict(name: str, fmt: str, dialect: str | None) -> Any:
    """torch.onnx's verdict on one op of a TorchScript graph or an ExportedProgram."""
    from modelgate import opsupport

    return opsupport.load().onnx(name, fmt)


def file_issues(graph: Any) -> tuple[list[Any], str | None]:
    """What the installed ONNX Runtime's CPU provider cannot load in an ONNX file."""
    from modelgate import onnx_support

    return onnx_support.check(graph)


def notes(fmt: str, result: dict[str, Any]) -> list[str]:
    """onnx.checker's verdict when it rejects a file ONNX Runtime loads."""
    checker = result.get("checker")
    if fmt in FILE_FORMATS and result.get("ok") and str(checker).startswith("failed"):
        return [f"onnx.checker rejects the file, which ONNX Runtime loads: {checker}"]
    return []


def summary(result: dict[str, Any]) -> str:
    """The target matrix's detail: "opset 20, torch.onnx (dynamo exporter)"."""
    made = result.get("exporter") or "the file as given"
    return f"opset {result.get('opset')}, {made}, {result.get('runtime')}"


def modules(job: Any) -> list[str]:
    """torch.export programs go through the dynamo exporter, which needs onnxscript."""
    return [*MODULES, *(("onnxscript",) if job.format == "torch_export" else ())]


ONNX_DRIFT_METHOD = "ONNX Runtime (CPU) against torch, same inputs"


def step(
    emit: Emit,
    job: steps.Job,
    model: steps.Loaded,
    samples: list[list[np.ndarray]],
    reference: list[np.ndarray] | None,
) -> None:
    """In the child: export to ONNX, then check, open and run the export (:func:`_onnx_run`)."""
    from modelgate.checks import onnx_export, steps

    with steps.scratch(NAME) as folder:
        exported = onnx_export.export_model(emit, job, model, samples, folder)
        if exported is not None:
            _onnx_run(emit, job, *exported, samples, reference)


def file_step(emit: Emit, job: steps.Job) -> None:
    """An ONNX file as given: ONNX Runtime's session decides (the checker's verdict is kept
    beside it), then one run on synthetic inputs made from the file's own types (strings,
    sequences, optionals, none at all), then the latency. A run that cannot be made or fails
    on synthetic values is not the file's fault: it is reported as such (``run``)."""
    import onnxruntime as ort

    from modelgate.checks import measure, onnx_export, onnx_inputs, steps

    facts: dict[str, Any] = {
        "exporter": None,
        "bytes": onnx_export.files_bytes(job.path),
        "opset": onnx_export.opset(job.path),
    }
    emit.stage("onnx: running onnx.checker")
    try:
        onnx_export.check(job.path)
        facts["checker"] = "passed (full check)"
    except Exception as exc:
        facts["checker"] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
    emit.stage("onnx: creating an ONNX Runtime session")
    settings = job.settings.measure
    try:
        session = onnx_export.session(job.path, settings.threads)
    except Exception as exc:
        stage = "creating an ONNX Runtime session"
        emit("onnx", {"ok": False, "stage": stage, **facts, **steps.converter_error(exc, job)})
        return
    runtime = f"ONNX Runtime {ort.__version__} CPU"
    emit("onnx", {"ok": True, "runtime": runtime, **facts})
    emit.stage("onnx_run: running the ONNX Runtime session on synthetic inputs")
    names = [i.name for i in session.get_inputs()]
    given = {name: (tuple(shape), dtype) for name, shape, dtype in job.inputs}
    try:
        feed = onnx_inputs.feed(job.path, names, given, settings.seed)
    except onnx_inputs.NoValue as exc:
        emit("onnx_run", {"ok": None, "error": str(exc)})
        return
    shown = [{"name": n, **_shape_of(v)} for n, v in feed.items()]
    outputs, error, used = None, None, None
    for fill in onnx_inputs.INTEGER_FILLS:
        if fill is not None:  # integers are often indices, axes or divisors: ones, then zeros
            if not any(onnx_inputs.has_integers(v) for v in feed.values()):
                break
            feed = onnx_inputs.feed(job.path, names, given, settings.seed, integers=fill)
        try:
            outputs = session.run(None, feed)
        except Exception as exc:
            error = error or f"{type(exc).__name__}: {str(exc)[:300]}"  # the first attempt's
            continue
        used = fill
        break
    if outputs is None:
        emit("onnx_run", {"ok": False, "error": error, "inputs": shown})
        return
    run: dict[str, Any] = {"ok": True, "inputs": shown, "outputs": len(outputs)}
    if used is not None:
        run["integers"] = f"all {used} (random values in [0, 10) failed: {error})"
    emit("onnx_run", run)
    if job.latency:
        emit.stage("latency: timing ONNX Runtime")
        try:
            result = measure.latency(
                lambda: session.run(None, feed), settings.warmup, settings.runs
            )
        except Exception as exc:
            emit("latency", {"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            return
        result.update(runtime=runtime, threads=settings.threads, model="the ONNX file as given")
        emit("latency", result)


def _shape_of(value: Any) -> dict[str, Any]:
    """What a synthetic input was, for the report: shape and dtype, or a sequence of them."""
    if isinstance(value, list):
        inner = _shape_of(value[0]) if value else {}
        return {"sequence": len(value), **inner}
    if isinstance(value, dict):
        return {"map": len(value)}
    return {
        "shape": list(value.shape),
        "dtype": "string" if value.dtype == object else str(value.dtype),
    }


def _onnx_run(
    emit: Emit,
    job: steps.Job,
    path: str,
    facts: dict[str, Any],
    samples: list[list[np.ndarray]],
    reference: list[np.ndarray] | None,
) -> None:
    import onnxruntime as ort

    from modelgate.checks import measure, onnx_export, steps

    emit.stage("onnx: running onnx.checker")
    try:
        onnx_export.check(path)
    except Exception as exc:
        emit(
            "onnx",
            {
                "ok": False,
                "stage": "running onnx.checker",
                **facts,
                **steps.converter_error(exc, job),
            },
        )
        return
    emit.stage("onnx: creating an ONNX Runtime session")
    settings = job.settings.measure
    try:
        session = onnx_export.session(path, settings.threads)
    except Exception as exc:
        emit(
            "onnx",
            {
                "ok": False,
                "stage": "creating an ONNX Runtime session",
                **facts,
                **steps.converter_error(exc, job),
            },
        )
        return
    runtime = f"ONNX Runtime {ort.__version__} CPU"
    emit("onnx", {"ok": True, "checker": "passed (full check)", "runtime": runtime, **facts})
    call = onnx_export.runner(session)
    if reference is not None:
        emit.stage("onnx_drift: measuring ONNX Runtime's drift")
        try:
            outputs = measure.stack([call(s) for s in samples])
            drift = measure.compare_outputs(reference, outputs)
            drift.update(method=ONNX_DRIFT_METHOD, samples=len(samples))
        except Exception as exc:
            drift = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        emit("onnx_drift", drift)
    if job.latency:
        emit.stage("latency: timing ONNX Runtime")
        try:
            result = measure.latency(lambda: call(samples[0]), settings.warmup, settings.runs)
        except Exception as exc:
            emit("latency", {"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            return
        result.update(
            runtime=runtime, threads=settings.threads, model="the exported ONNX model (FP32)"
        )
        emit("latency", result)
