"""One model: file -> loader -> graph view -> checks -> rules -> findings -> its report.

The rules run through :mod:`modelgate.lint` (which the budget uses too, after every model was
checked). Many models, baselines and the budget are :mod:`modelgate.driver`'s; pass / fail and
per-file ignores are :mod:`modelgate.verdict`'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from modelgate import discover, loaders
from modelgate.config import Config, InputSpec
from modelgate.discover import display_path
from modelgate.graph import ModelGraph, ValueInfo
from modelgate.lint import run_rules
from modelgate.report import ModelReport

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
    if cli_inputs:
        apply_inputs(graph, cli_inputs, "cli")
    elif config.inputs:
        apply_inputs(graph, config.inputs, "config")
    if graph.infer_shapes is not None:
        graph.infer_shapes()
        graph.infer_shapes = None  # drops the loaded module
    from modelgate.checks import pipeline, plan

    if plan.wanted(config):  # conversion, compression, measurements: child processes
        pipeline.run(graph, config, display, started)
    return graph_report(graph, config, display)


def graph_report(graph: ModelGraph, config: Config, display: str) -> ModelReport:
    """Run the rules over a loaded graph (also one that could not be read: MG902)."""
    outcome = run_rules(graph, config, display)
    metrics = static_metrics(graph)
    if graph.checks is not None:
        from modelgate.checks import figures

        metrics.update(figures.summarize(graph.checks, metrics))
    report = ModelReport(display, graph.format, outcome.findings, metrics,
                         outcome.skipped, [*graph.notes, *outcome.notes])  # fmt: skip
    return report
