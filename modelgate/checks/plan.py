"""What the checks of one model will do: whether they run at all, on which inputs, and the
job of each target's step, in order.

Plain decisions from the graph view, the settings and the targets' declarations; nothing runs
here. :mod:`pipeline` carries the plan out.
"""

from __future__ import annotations

from typing import Any

from modelgate.checks.figures import RUNS_MODEL
from modelgate.checks.settings import CheckSettings
from modelgate.graph import ModelGraph
from modelgate.limits import budgeted_targets
from modelgate.targets import REGISTRY as TARGETS

RUNNABLE = ("torchscript", "torch_export")
_WEIGHTS_ONLY = (
    "state_dict",
    "checkpoint",
    "tensor",
    "tensor_container",
    "safetensors",
    "numpy",
    "joblib",
)
TORCH = ("torch", "numpy")  # what a step that loads the model with torch imports
# what torch.export.load and run_decompositions import on first use (~2 s, once a worker)
TORCH_EXPORT = (
    "torch._export.serde.serialize",
    "torch.export._trace",
    "torch._functorch.aot_autograd",
    "torch._functorch.partitioners",
)


def wanted(config: Any) -> bool:
    """Whether this run converts, compresses, measures or judges a budget at all."""
    settings: CheckSettings = config.checks
    return settings.active or bool(getattr(config, "budget", None))


def needs_run(config: Any) -> bool:
    limits = getattr(config, "budget", {}) or {}
    return (
        config.checks.active
        or any(k in limits for k in RUNS_MODEL)
        or bool(budgeted_targets(limits))
    )


def converters(settings: CheckSettings, config: Any) -> list[Any]:
    """The targets converted, in registry order: what the settings ask (a preset implies
    its target's conversion) and every target whose own figures the budget limits
    (``budget.targets``), as if ``--convert`` named it. Only the settings' count as asked for
    (MG106, the conversion rules); a budgeted target that did not convert is MG304's."""
    limits = getattr(config, "budget", {}) or {}
    wanted = {*settings.converters, *budgeted_targets(limits)}
    return [t for t in TARGETS if t.name in wanted]


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
    built = graph.build
    if built is not None and built.refused:
        return f"not built as a Hugging Face model: {built.error}", None
    if built is not None and not built.ok:
        return f"{built.label} could not build a model from the file (MG111 / MG112)", None
    if graph.format in _WEIGHTS_ONLY or graph.format.startswith("sharded"):
        save = "add a build recipe (models: in modelgate.yaml) or " + save
        kind = graph.format.replace("_", " ")
        return f"a {kind} holds weights only, no architecture to convert or run", save
    if graph.format == "pickled_module":
        return (
            "a pickled nn.Module needs its Python class to load, and loading runs that code",
            save,
        )
    if graph.format not in RUNNABLE and not file_checkers(graph.format):
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


def file_specs(graph: ModelGraph) -> list[tuple[str, tuple[int, ...], str]]:
    """For a file checked as given (ONNX): the inputs whose shapes are known (given or
    recorded); the step makes values for the others from the file's own types."""
    specs = [_spec(graph, value) for value in graph.inputs]
    return [s for s in specs if not isinstance(s, str)]


def file_checkers(fmt: str) -> list[Any]:
    """The targets that check a file of format ``fmt`` as given (not converted)."""
    return [t for t in TARGETS if fmt in t.file_formats]


def plan(
    graph: ModelGraph, settings: CheckSettings, specs: list, config: Any
) -> list[tuple[str, Any, str | None]]:
    """(target, job, reason it is not run) for each child to run, in order. Each target whose
    runtime runs what it made times it there (the budget's figure is the first one's); when
    none does, the original model is timed once, in torch."""
    from modelgate.checks.steps import Job

    limits = getattr(config, "budget", {}) or {}
    converting = converters(settings, config)
    active = settings.active or bool(converting)
    latency = settings.measure.latency and (active or "latency_ms" in limits)
    drift = settings.measure.drift

    def job(target: Any, **options: Any) -> Job:
        if target is None:  # torch only: the original model's latency
            return Job(path=graph.path, format=graph.format, target="torch",
                       inputs=tuple(specs), settings=settings, **options)  # fmt: skip
        return Job(path=graph.path, format=graph.format, target=target.name,
                   inputs=tuple(specs), settings=settings, options=target.job_options(settings),
                   runtime_latency=bool(target.runtime), **options)  # fmt: skip

    out: list[tuple[str, Any, str | None]] = []
    checkers = file_checkers(graph.format)
    if checkers:
        timer = checkers[0] if latency and not any(t in converting for t in checkers) else None
        for target in converting:
            if target not in checkers:
                why = TARGETS.refusal(target, graph.format)
                out.append((target.name, None, f"{why}: convert the PyTorch model"))
        for target in checkers:
            if target in converting or target is timer:
                timed = latency and (target is timer or timer is None)
                out.append((target.name, job(target, latency=timed, drift=False), None))
                latency = latency and not timed
        return out
    refused = {t.name: TARGETS.refusal(t, graph.format) for t in converting}
    takers = [t for t in converting if not refused[t.name]]
    timer = next((t for t in takers if t.runtime), takers[0] if takers else None)
    for target in converting:
        if refused[target.name]:  # a format it cannot take (TorchScript for ExecuTorch)
            out.append((target.name, None, refused[target.name]))
            continue
        timed = latency and (target is timer or bool(target.runtime))  # each runtime its own
        out.append((target.name, job(target, drift=drift, latency=timed), None))
    if not takers and latency:
        out.append(("torch", job(None, drift=False, latency=True), None))
    return out


def modules_for(settings: CheckSettings) -> list[str]:
    """The modules the steps of the settings' conversions import, in import order, once."""
    from modelgate.checks.steps import Job

    found: list[str] = []
    for name in settings.converters:
        probe = Job(path="", format="torchscript", target=name, inputs=(), settings=settings)
        found += TARGETS.get(name).modules(probe)
    return list(dict.fromkeys(found))
