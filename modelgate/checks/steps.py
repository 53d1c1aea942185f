"""What runs inside a step's child process: load the model, convert, compress, measure.

One child per converter (Core ML, ONNX) and model, started by :mod:`pipeline` through
:mod:`isolate`. Each result is sent as soon as it exists (``emit``), so a crash in the
compressor still leaves the conversion's figures in the report. Everything is measured on
the same seeded synthetic inputs against the original model run in FP32 by torch.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelgate.checks import measure
from modelgate.checks.isolate import Emit
from modelgate.checks.settings import CheckSettings

DRIFT_METHOD = (
    "Core ML weights (decompressed by coremltools) loaded into the torch model and run by "
    "torch on this CPU; FP16 weight storage emulated, FP16 activations not; Core ML itself "
    "cannot run on Linux"
)
CONVERSION_DRIFT_METHOD = (
    "the Core ML program's FP16 weights loaded into the torch model and run by torch on this "
    "CPU; FP16 activations not emulated; Core ML itself cannot run on Linux"
)
ONNX_DRIFT_METHOD = "ONNX Runtime (CPU) against torch, same inputs"


@dataclass(frozen=True)
class Job:
    """One child's work; plain data, so that it crosses any process boundary."""

    path: str
    format: str  # torchscript | torch_export | onnx
    target: str  # coreml | onnx | torch (measure only)
    inputs: tuple[tuple[str, tuple[int, ...], str], ...]  # name, shape, dtype
    settings: CheckSettings
    deployment_target: str = "iOS16"
    drift: bool = True
    latency: bool = False


@dataclass
class Loaded:
    runner: Any  # callable torch module (ScriptModule, or an ExportedProgram's module())
    program: Any  # what was loaded: ScriptModule or ExportedProgram
    kind: str  # torchscript | torch_export

    def state(self) -> dict[str, np.ndarray]:
        import torch

        out = {}
        for key, value in self.runner.state_dict().items():
            tensor = value.detach().cpu()
            if tensor.dtype == torch.bfloat16:
                tensor = tensor.float()
            out[key] = tensor.numpy()
        return out


def run(emit: Emit, job: Job) -> None:
    """The child's entry point."""
    _threads(job.settings.measure.threads)
    if job.format == "onnx":
        _onnx_file(emit, job)
        return
    emit.stage("load: loading the model with torch")
    try:
        model = _load(job)
    except Exception as exc:
        emit("load", {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        return
    measure_settings = job.settings.measure
    specs = [(shape, dtype) for _, shape, dtype in job.inputs]
    samples = measure.synthetic_inputs(specs, measure_settings.samples, measure_settings.seed)
    reference = None
    if job.drift:
        emit.stage("load: running the original model")
        try:
            reference = measure.stack([_forward(model.runner, s) for s in samples])
        except Exception as exc:
            emit("reference", {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            return
        emit("reference", _describe_reference(reference))
    if job.latency and job.target != "onnx":  # ONNX Runtime's latency is timed instead
        emit.stage("latency: timing the original model in torch")
        emit("latency", _torch_latency(model, samples[0], measure_settings))
    if job.target == "coreml":
        _coreml(emit, job, model, samples, reference)
    elif job.target == "onnx":
        _onnx(emit, job, model, samples, reference)


def _error(exc: BaseException, job: Job, logs: list | None = None) -> dict[str, Any]:
    """A converter's exception as the report shows it; running out of memory is its own kind."""
    from modelgate.checks import coreml

    if isinstance(exc, MemoryError):
        limit = job.settings.isolation.memory_mb
        where = f" (the memory limit is {limit} MB: isolation.memory_mb)" if limit else ""
        return {"kind": "memory", "error": f"ran out of memory{where}", "op": None}
    return {"kind": "error", **coreml.describe_error(exc, logs)}


_LIMITS: list[Any] = []  # keeps the thread-pool limits of this (child) process in force


def _threads(threads: int) -> None:
    """Every thread pool of the step at ``threads``: torch's, and the OpenMP / BLAS pools of
    numpy and scikit-learn (k-means), which otherwise take every core each; with ``-j 2``
    two steps would then fight over two cores and run slower than one after the other."""
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set in this process
        torch.set_num_interop_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # comes with scikit-learn; without it, only torch is limited
        return
    _LIMITS.append(threadpool_limits(limits=threads))


def _load(job: Job) -> Loaded:
    import torch

    if job.format == "torchscript":
        module = torch.jit.load(job.path, map_location="cpu")
        module.eval()
        return Loaded(module, module, "torchscript")
    program = torch.export.load(job.path)
    return Loaded(program.module(), program, "torch_export")


def _tensors(sample: list[np.ndarray]) -> list[Any]:
    import torch

    return [torch.from_numpy(np.array(a)) for a in sample]


def _leaves(value: Any) -> list[np.ndarray]:
    """The tensors of a model's output (a tensor, or tuples / lists / dicts of them)."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value.detach().float().cpu().numpy()]
    if isinstance(value, dict):
        return [leaf for key in sorted(value) for leaf in _leaves(value[key])]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return []


def _forward(module: Any, sample: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        return _leaves(module(*_tensors(sample)))


def _describe_reference(reference: list[np.ndarray]) -> dict[str, Any]:
    """What the original's outputs say about the drift to come: near-constant outputs
    (no drift can be reported), weak input dependence, a single top-1 class."""
    out: dict[str, Any] = {"ok": True, "outputs": [list(r.shape[1:]) for r in reference]}
    judged = [measure.degenerate(r) for r in reference]
    if judged and all(reason for reason, _ in judged):
        out["degenerate"] = judged[0][0]
    weak = [stats["weak"] for reason, stats in judged if stats.get("weak") and not reason]
    if weak:
        out["weak"] = weak[0]
    if reference:
        top = measure.top1_classes(reference[0])
        if top is not None:
            out["top1_classes"] = top
    return out


def _torch_latency(model: Loaded, sample: list[np.ndarray], settings: Any) -> dict[str, Any]:
    import torch

    tensors = _tensors(sample)

    def call() -> None:
        with torch.inference_mode():
            model.runner(*tensors)

    what = "TorchScript" if model.kind == "torchscript" else "torch.export program"
    result = measure.latency(call, settings.warmup, settings.runs)
    result.update(
        runtime=f"torch {torch.__version__.split('+')[0]} CPU",
        program=what,
        threads=settings.threads,
        model="the original FP32 model",
    )
    return result


# ---------------------------------------------------------------------------------------------
# Core ML
# ---------------------------------------------------------------------------------------------


def _coreml(
    emit: Emit,
    job: Job,
    model: Loaded,
    samples: list[list[np.ndarray]],
    reference: list[np.ndarray] | None,
) -> None:
    from modelgate.checks import compress, coreml, weightmap

    settings = job.settings.coreml
    target = job.deployment_target
    doing = f"converting to Core ML ({target}, {settings.compute_precision})"
    emit.stage(f"coreml: {doing}")
    start = time.perf_counter()
    with coreml.capture_logs() as logs:
        try:
            source = model.program
            if model.kind == "torch_export":
                source = model.program.run_decompositions({})
            mlmodel = coreml.convert(
                source, model.kind, list(job.inputs), target, settings.compute_precision
            )
        except Exception as exc:
            failed = {"ok": False, **_error(exc, job, logs.records), "stage": doing}
            emit("coreml", {**failed, "deployment_target": target})
            return
    emit(
        "coreml",
        {
            "ok": True,
            "seconds": round(time.perf_counter() - start, 3),
            "bytes": coreml.package_bytes(mlmodel),
            "deployment_target": target,
            "compute_precision": settings.compute_precision,
            "ops": coreml.op_count(mlmodel),
        },
    )
    presets = job.settings.compress
    if not presets and reference is None:
        return
    fp16 = settings.compute_precision == "float16"
    consts = compress.materialize(mlmodel._mil_program)
    state = model.state()
    mapping = weightmap.map_weights(consts, state, weightmap.torch_names(source))
    if reference is not None:
        emit.stage("coreml_drift: measuring the Core ML conversion's drift")
        emit(
            "coreml_drift",
            _drift(
                model,
                samples,
                reference,
                weightmap.inject(state, mapping, consts, fp16),
                CONVERSION_DRIFT_METHOD,
            ),
        )
    for preset in presets:
        emit.stage(f"compress:{preset}: compressing ({preset})")
        key = f"compress:{preset}"
        why = compress.too_old(preset, target)
        if why:
            emit(key, {"ok": False, "error": why})
            continue
        try:
            compressed, facts = compress.compress(mlmodel, preset, settings)
        except Exception as exc:
            emit(key, {"ok": False, **_error(exc, job), "stage": f"compressing ({preset})"})
            continue
        for entry in facts["skipped"]:
            how = mapping.get(entry["name"])
            if how is not None:
                entry["tensor"] = how["key"]
            hint = compress.divisor_hint(entry["shape"], preset, settings)
            if hint:
                entry["hint"] = hint
        facts["ok"] = True
        emit(key, facts)  # before the drift: a crash measuring it keeps these figures
        if reference is not None:
            emit.stage(f"drift:{preset}: measuring the drift of {preset}")
            values = compress.materialize(compressed._mil_program)
            names = compress.compressed_names(compressed._mil_program)
            used = {k: v for k, v in mapping.items() if k in names}
            drift = _drift(
                model, samples, reference, weightmap.inject(state, used, values, fp16), DRIFT_METHOD
            )
            drift["unmapped"] = sorted(names - set(mapping))
            drift["weights_compressed"] = len(names)
            drift["weight_error"] = _weight_error(consts, values, names, mapping)
            emit(f"drift:{preset}", drift)
        del compressed


def _drift(
    model: Loaded,
    samples: list[list[np.ndarray]],
    reference: list[np.ndarray],
    state: dict[str, np.ndarray],
    method: str,
) -> dict[str, Any]:
    import torch

    variant = copy.deepcopy(model.runner)
    variant.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    outputs = measure.stack([_forward(variant, s) for s in samples])
    result = measure.compare_outputs(reference, outputs)
    result["method"] = method
    result["samples"] = len(samples)
    return result


def _weight_error(
    before: dict[str, np.ndarray],
    after: dict[str, np.ndarray],
    names: set[str],
    mapping: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Relative error of each compressed weight against its uncompressed self, in Core ML's
    own parametrisation (needs no mapping to torch): median, worst, and which."""
    errors = {}
    for name in names:
        if name in before and name in after and before[name].shape == after[name].shape:
            norm = max(float(np.linalg.norm(before[name])), 1e-30)
            errors[name] = float(np.linalg.norm(after[name] - before[name]) / norm)
    if not errors:
        return {}
    worst = max(errors, key=errors.__getitem__)
    return {
        "median": float(f"{np.median(list(errors.values())):.4g}"),
        "max": float(f"{errors[worst]:.4g}"),
        "worst": mapping.get(worst, {}).get("key", worst),
    }


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------


def _onnx(
    emit: Emit,
    job: Job,
    model: Loaded,
    samples: list[list[np.ndarray]],
    reference: list[np.ndarray] | None,
) -> None:
    from modelgate.checks import onnx_export

    folder = tempfile.mkdtemp(prefix="modelgate-onnx-")
    try:
        path = os.path.join(folder, "model.onnx")
        emit.stage("onnx: exporting to ONNX")
        start = time.perf_counter()
        try:
            facts = onnx_export.export(model.program, model.kind, tuple(_tensors(samples[0])), path)
        except Exception as exc:
            emit("onnx", {"ok": False, "stage": "exporting to ONNX", **_error(exc, job)})
            return
        facts["seconds"] = round(time.perf_counter() - start, 3)
        facts["bytes"] = onnx_export.files_bytes(path)
        facts["opset"] = onnx_export.opset(path)
        _onnx_run(emit, job, path, facts, samples, reference)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _onnx_file(emit: Emit, job: Job) -> None:
    """An ONNX file as given: ONNX Runtime's session decides (the checker's verdict is kept
    beside it), then one run on synthetic inputs made from the file's own types (strings,
    sequences, optionals, none at all), then the latency. A run that cannot be made or fails
    on synthetic values is not the file's fault: it is reported as such (``run``)."""
    import onnxruntime as ort

    from modelgate.checks import onnx_export, onnx_inputs

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
        emit("onnx", {"ok": False, "stage": stage, **facts, **_error(exc, job)})
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
    job: Job,
    path: str,
    facts: dict[str, Any],
    samples: list[list[np.ndarray]],
    reference: list[np.ndarray] | None,
) -> None:
    import onnxruntime as ort

    from modelgate.checks import onnx_export

    emit.stage("onnx: running onnx.checker")
    try:
        onnx_export.check(path)
    except Exception as exc:
        emit("onnx", {"ok": False, "stage": "running onnx.checker", **facts, **_error(exc, job)})
        return
    emit.stage("onnx: creating an ONNX Runtime session")
    settings = job.settings.measure
    try:
        session = onnx_export.session(path, settings.threads)
    except Exception as exc:
        emit(
            "onnx",
            {"ok": False, "stage": "creating an ONNX Runtime session", **facts, **_error(exc, job)},
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
