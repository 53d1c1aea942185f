"""One model: file -> loader -> graph view -> checks -> rules -> findings -> its report.

The rules run through :mod:`modelgate.lint` (which the budget uses too, after every model was
checked). Many models, baselines and the budget are :mod:`modelgate.driver`'s; pass / fail and
per-file ignores are :mod:`modelgate.verdict`'s.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Iterable

from modelgate import discover, loaders
from modelgate.config import Config, InputSpec
from modelgate.discover import display_path
from modelgate.graph import ModelGraph, ValueInfo
from modelgate.lint import run_rules
from modelgate.report import ModelReport
from modelgate.results import BuildResult

__all__ = ["check_file", "display_path", "expand_paths", "graph_report", "run_rules"]

MODEL_SUFFIXES = discover.MODEL_SUFFIXES  # what a directory walk picks up


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files as given, and model files under folders, in a stable order (a sharded
    checkpoint's index for its shards, no ONNX external data: see :mod:`modelgate.discover`)."""
    return discover.discover(list(paths)).files


def apply_inputs(graph: ModelGraph, specs: tuple[InputSpec, ...], source: str | None) -> None:
    """Input shapes from config or CLI win over the model's own, matched by name or position."""
    if not specs:
        return
    names = [v.name for v in graph.inputs]
    for position, spec in enumerate(specs):
        value = ValueInfo(spec.name or f"input_{position}", spec.shape, spec.dtype)
        if spec.name in names:
            index: int | None = names.index(spec.name)
        else:
            index = position if position < len(graph.inputs) else None
        if index is None:
            graph.inputs.append(value)
        else:
            value.name = graph.inputs[index].name  # keep the model's own name
            graph.inputs[index] = value
        graph.values[value.name] = value
    graph.input_source = source


def static_metrics(graph: ModelGraph) -> dict:
    """Figures a reader wants at a glance; the budget and summaries read these."""
    total = graph.parameter_count
    layers = sorted(graph.layers.values(), key=lambda layer: -layer.nbytes)
    weight_bytes = graph.weight_bytes or 1
    dtypes: dict[str, int] = {}
    for t in graph.tensors.values():
        dtypes[t.dtype] = dtypes.get(t.dtype, 0) + t.nbytes
    metrics = {
        "size_mb": round(graph.file_size / 1e6, 3),
        "file_mb": round(graph.file_size / 1e6, 3),
        "parameters": total,
        "weights_mb": round(graph.weight_bytes / 1e6, 3),
        "tensors": len(graph.tensors),
        "dtypes_mb": {
            k: round(v / 1e6, 3) for k, v in sorted(dtypes.items(), key=lambda kv: -kv[1])
        },
        "largest_layers": [
            {
                "module": layer.path or "(root)",
                "type": layer.short_type,
                "parameters": layer.numel,
                "mb": round(layer.nbytes / 1e6, 3),
                "share": round(layer.nbytes / weight_bytes, 4),
            }
            for layer in layers[:8]
            if layer.nbytes
        ],
    }
    if graph.has_graph:
        metrics["ops"] = len(graph.ops)
    if graph.inputs:
        metrics["inputs"] = [
            {"name": v.name, "shape": list(v.shape) if v.shape else None, "dtype": v.dtype}
            for v in graph.inputs
        ]
        metrics["inputs_from"] = graph.input_source
    return metrics


def check_file(path: str, config: Config, cli_inputs: tuple[InputSpec, ...] = ()) -> ModelReport:
    """Everything modelgate does to one file, as a :class:`ModelReport`."""
    started = time.monotonic()
    display = display_path(path)
    policy = loaders.Policy(extra=config.pickle_allow)
    graph = loaders.load(path, policy)
    built = _build(graph, config, cli_inputs, policy, started)
    try:
        if built is not None:
            graph = built
        if cli_inputs:
            apply_inputs(graph, cli_inputs, "cli")
        elif config.inputs and graph.build is None:
            apply_inputs(graph, config.inputs, "config")
        if graph.infer_shapes is not None:
            graph.infer_shapes()
            graph.infer_shapes = None  # drops the loaded module
        from modelgate.checks import pipeline, plan

        if plan.wanted(config):  # conversion, compression, measurements: child processes
            pipeline.run(graph, config, display, started)
        return graph_report(graph, config, display)
    finally:
        if graph.build is not None and graph.build.folder:
            shutil.rmtree(graph.build.folder, ignore_errors=True)


def _build(
    graph: ModelGraph,
    config: Config,
    cli_inputs: tuple[InputSpec, ...],
    policy: loaders.Policy,
    started: float,
) -> ModelGraph | None:
    """A file of weights built into a model by its recipe (:mod:`modelgate.recipes`): the
    exported program's graph view, carrying the file's own size, notes and metadata; None
    when nothing builds it. A build that fails stays on ``graph.build`` (MG111 / MG112)."""
    from modelgate import recipes

    match_as = config.recipe_paths.get(graph.path)
    plan = recipes.plan(graph, config, match_as)
    if plan is None:
        return None
    if not config.build:
        graph.notes.append(
            f"not built ({plan.label} applies): --static reads the file's metadata only"
        )
        return None
    if plan.kind == "huggingface" and plan.recipe is None and not _installed("transformers"):
        graph.notes.append(
            "a Hugging Face folder: install modelgate-lint[hf] (transformers) to build it from "
            "its config.json and check it as a model"
        )
        return None

    def specs(given: tuple[InputSpec, ...]) -> tuple[tuple[str, tuple[int, ...], str], ...]:
        return tuple((g.name or f"input_{i}", g.shape, g.dtype) for i, g in enumerate(given))

    # the command line's shapes win, then the recipe's; the config's inputs: for the others
    # (a Hugging Face model has defaults of its kind instead)
    shapes = specs(cli_inputs) if cli_inputs else plan.inputs
    if not shapes and plan.kind != "huggingface":
        shapes = specs(config.inputs)
    plan = dataclasses.replace(plan, inputs=shapes)
    from modelgate.checks import build

    left = max(config.timeout - (time.monotonic() - started) - 10.0, 1.0)
    result = build.build(plan, left, config.checks.isolation.memory_mb)
    graph.build = result
    if result.refused:
        graph.notes.append(f"not built as a Hugging Face model: {result.error}")
    if not result.ok or result.pt2 is None:
        return None
    made = loaders.load(result.pt2, policy)
    if made.unreadable is not None:
        result.ok = False
        result.stage, result.error = "reading the exported program", made.unreadable
        return None
    made.build = result
    made.file_size = graph.file_size  # the committed file is what the size budget weighs
    made.notes = [*graph.notes, *made.notes, _built_note(graph, result)]
    for key, value in graph.metadata.items():
        made.metadata.setdefault(key, value)
    made.metadata["built_from"] = graph.format
    made.input_source = "cli" if cli_inputs else ("config" if shapes else "defaults")
    return made


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _built_note(graph: ModelGraph, result: BuildResult) -> str:
    shapes = ", ".join(
        f"{i['name']} {'x'.join(str(d) for d in i['shape'])} {i['dtype']}" for i in result.inputs
    )
    where = graph.metadata.get("state_dict_key")
    held = f" (its weights at {where!r})" if where and graph.format == "checkpoint" else ""
    extra = "".join(f"; {n}" for n in result.notes)
    return (
        f"built from the {graph.format.replace('_', ' ')}{held} with {result.label} and "
        f"exported with torch.export on {shapes or 'no inputs'} ({result.seconds:.1f} s){extra}"
    )


def graph_report(graph: ModelGraph, config: Config, display: str) -> ModelReport:
    """Run the rules over a loaded graph (also one that could not be read: MG902)."""
    outcome = run_rules(graph, config, display)
    metrics = static_metrics(graph)
    if graph.checks is not None:
        from modelgate.checks import figures

        metrics.update(figures.summarize(graph.checks, metrics))
    fmt = graph.format
    if graph.build is not None:  # the file's own format, and what became of it
        metrics["built"] = graph.build.to_dict()
        fmt = graph.metadata.get("built_from", fmt)
    report = ModelReport(display, fmt, outcome.findings, metrics,
                         outcome.skipped, [*graph.notes, *outcome.notes])  # fmt: skip
    return report
