"""One model: file -> loader -> graph view -> checks -> rules -> findings -> its report.

Rules never see the config as a whole: the engine hands each its options (with the run's
``targets``) and stamps id, name and severity on what it yields. Many models, baselines and
the budget are :mod:`modelgate.driver`'s; pass / fail and per-file ignores are
:mod:`modelgate.verdict`'s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from modelgate import discover, loaders
from modelgate.config import Config, InputSpec
from modelgate.finding import Finding, Problem
from modelgate.graph import ModelGraph, ValueInfo
from modelgate.report import ModelReport
from modelgate.rule import Note, Skip

MODEL_SUFFIXES = discover.MODEL_SUFFIXES  # what a directory walk picks up


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files as given, and model files under folders, in a stable order (a sharded
    checkpoint's index for its shards, no ONNX external data: see :mod:`modelgate.discover`)."""
    return discover.discover(list(paths)).files


def display_path(path: str) -> str:
    """Relative to the working directory when inside it (what annotations and globs use)."""
    absolute = os.path.abspath(path)
    cwd = os.getcwd()
    if absolute.startswith(cwd + os.sep):
        return os.path.relpath(absolute, cwd).replace(os.sep, "/")
    return path


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


TARGET_RULE = "MG003"  # the targets' op check: config.asked_targets count only while it runs


@dataclass
class _Outcome:
    findings: list[Finding] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_rules(
    graph: ModelGraph,
    config: Config,
    display: str,
    needs: str | None = None,
    only: str | None = None,
) -> _Outcome:
    """Every enabled rule over ``graph`` (only those with NEEDS == ``needs`` when given; only
    the rule with id ``only`` when given, which is how a rule is tested on its own)."""
    from modelgate.rules import REGISTRY

    outcome = _Outcome()
    unread = 0
    # the targets whose op check (MG003) the config or --target asked for, not the defaults
    asked = list(config.asked_targets) if config.setting(TARGET_RULE).enabled else []
    for module in REGISTRY:
        setting = config.setting(module.ID)
        if not setting.enabled or (needs is not None and needs != module.NEEDS):
            continue
        if only is not None and only != module.ID:
            continue
        if module.NEEDS == "budget" and not (graph.budget and graph.budget.entries):
            continue  # judged by modelgate.budget once every model was checked
        if module.NEEDS != "file" and graph.unreadable is not None:
            unread += 1
            continue
        if module.NEEDS == "graph" and not graph.has_graph:
            outcome.skipped[module.ID] = graph.no_graph_reason()
            continue
        if module.NEEDS == "checks" and graph.checks is None:
            continue
        options = {name: opt.default for name, opt in module.OPTIONS.items()}
        options.update(setting.options)
        options["targets"] = list(config.targets)
        options["asked_targets"] = asked
        severity = setting.severity or module.SEVERITY
        try:
            for item in module.check(graph, options):
                if isinstance(item, Skip):
                    outcome.skipped[module.ID] = item.reason
                    continue
                if isinstance(item, Note):
                    outcome.notes.append(f"{module.ID}: {item.text}")
                    continue
                outcome.findings.append(_stamp(module, severity, item, display))
        except Exception as exc:  # a rule bug is reported, not raised into someone's CI log
            outcome.skipped[module.ID] = f"internal error in the rule: {type(exc).__name__}: {exc}"
    if unread:  # one line, not one per rule: MG902 says what is wrong with the file
        outcome.notes.append(f"{unread} other rules did not run: the file could not be read")
    return outcome


def _stamp(module: object, severity: str, problem: Problem, display: str) -> Finding:
    location = replace(problem.location, path=display)
    source = location.source
    if source is not None and os.path.isabs(source.file):
        local = display_path(source.file)
        if local != source.file:  # recorded on this machine, inside the working directory
            location = replace(location, source=replace(source, file=local))
    return Finding(
        rule=module.ID,  # type: ignore[attr-defined]
        name=module.NAME,  # type: ignore[attr-defined]
        severity=severity,
        message=problem.message,
        location=location,
        fix=problem.fix,
        key=problem.key,
    )


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
    from modelgate.checks import pipeline

    if pipeline.wanted(config):  # conversion, compression, measurements: child processes
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
