"""What runs inside a step's child process: load and run the model, then the target's step.

One child per target and model, started by :mod:`pipeline` through :mod:`isolate`; the
per-target work is the target module's ``step`` (``targets/``), which :mod:`pipeline` passes
to :func:`run` (target modules import this one, so it imports none of them).
Each result is sent as soon as it exists (``emit``), so a crash in the compressor still
leaves the conversion's figures in the report. Everything is measured on the same seeded
synthetic inputs against the original model run in FP32 by torch.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelgate.checks import measure
from modelgate.checks.isolate import Emit


@dataclass(frozen=True)
class Job:
    """One child's work; plain data, so that it crosses any process boundary."""

    path: str
    format: str  # torchscript | torch_export | onnx
    target: str  # a target's name, or torch (the original's latency only)
    inputs: tuple[tuple[str, tuple[int, ...], str], ...]  # name, shape, dtype
    settings: Any  # the run's CheckSettings (modelgate.checks.settings)
    options: Mapping[str, Any] = field(default_factory=dict)  # the target's (job_options)
    drift: bool = True
    latency: bool = False
    runtime_latency: bool = False  # the target's runtime times the latency, not torch


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


TargetStep = Callable[[Emit, Job, Loaded, list[list[np.ndarray]], list[np.ndarray] | None], None]
FileStep = Callable[[Emit, Job], None]


def run(emit: Emit, job: Job, step: TargetStep | None, file_step: FileStep | None) -> None:
    """The child's entry point: ``file_step`` for a file checked as given (ONNX), else load
    and run the model, then the target's ``step`` on it (none for a torch-only job)."""
    _threads(job.settings.measure.threads)
    if file_step is not None:
        file_step(emit, job)
        return
    emit.stage("load: loading the model with torch")
    try:
        model = _load(job)
    except Exception as exc:
        emit("load", {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        return
    measure_settings = job.settings.measure
    specs = [(shape, dtype) for _, shape, dtype in job.inputs]
    names = [name for name, _, _ in job.inputs]
    samples = measure.synthetic_inputs(
        specs, measure_settings.samples, measure_settings.seed, names
    )
    reference = None
    if job.drift:
        emit.stage("load: running the original model")
        try:
            reference = measure.stack([forward(model.runner, s) for s in samples])
        except Exception as exc:
            emit("reference", {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            return
        emit("reference", _describe_reference(reference))
    if job.latency and not job.runtime_latency:  # else the target's runtime times it
        emit.stage("latency: timing the original model in torch")
        emit("latency", _torch_latency(model, samples[0], measure_settings))
    if step is not None:
        step(emit, job, model, samples, reference)


def converter_error(exc: BaseException, job: Job, logs: list | None = None) -> dict[str, Any]:
    """A converter's exception as the report shows it; running out of memory is its own kind."""
    from modelgate.checks import errors

    if isinstance(exc, MemoryError):
        limit = job.settings.isolation.memory_mb
        where = f" (the memory limit is {limit} MB: isolation.memory_mb)" if limit else ""
        return {"kind": "memory", "error": f"ran out of memory{where}", "op": None}
    return {"kind": "error", **errors.describe_error(exc, logs)}


@contextlib.contextmanager
def scratch(target: str) -> Iterator[str]:
    """A folder for what a step writes (an ``.onnx``, a ``.tflite``), deleted afterwards."""
    folder = tempfile.mkdtemp(prefix=f"modelgate-{target}-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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


def tensors(sample: list[np.ndarray]) -> list[Any]:
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


def forward(module: Any, sample: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        return _leaves(module(*tensors(sample)))


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

    inputs = tensors(sample)

    def call() -> None:
        with torch.inference_mode():
            model.runner(*inputs)

    what = "TorchScript" if model.kind == "torchscript" else "torch.export program"
    result = measure.latency(call, settings.warmup, settings.runs)
    result.update(
        runtime=f"torch {torch.__version__.split('+')[0]} CPU",
        program=what,
        threads=settings.threads,
        model="the original FP32 model",
    )
    return result


def measure_converted(
    emit: Emit,
    job: Job,
    call: Callable[[list[np.ndarray]], list[np.ndarray]],
    samples: list[list[np.ndarray]],
    reference: list[np.ndarray] | None,
    *,
    runtime: str,
    method: str,
    model: str,
    threads: Any,
    timed: Callable[[], Any] | None = None,
) -> None:
    """What every target whose runtime runs here does with what it made: its drift against
    the original on the same samples (``<target>_drift``), then its latency (``latency``).
    ``call`` runs one sample; ``timed`` is what is timed (default: ``call`` on the first)."""
    if reference is not None:
        emit.stage(f"{job.target}_drift: running {runtime}")
        try:
            drift = measure.compare_outputs(reference, measure.stack([call(s) for s in samples]))
            drift.update(method=method, samples=len(samples))
        except Exception as exc:
            drift = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        emit(f"{job.target}_drift", drift)
    if not job.latency:
        return
    emit.stage(f"latency: timing {runtime}")
    settings = job.settings.measure
    try:
        result = measure.latency(
            timed or (lambda: call(samples[0])), settings.warmup, settings.runs
        )
    except Exception as exc:
        emit("latency", {"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        return
    result.update(runtime=runtime, threads=threads, model=model)
    emit("latency", result)
