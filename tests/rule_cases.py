"""A harness that runs ONE rule on a :class:`~modelgate.graph.ModelGraph` built in memory.

Each rule's table of cases (``tests/rule_tables/test_mgNNN.py``) builds small graphs with the
helpers here and states the exact findings: no files, no worker processes, no torch.
``lint.run_rules``, what the engine runs, runs the rule (``only=``), so options, severities
and stamping are the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelgate import config as cfg
from modelgate import lint
from modelgate.finding import Location, SourceLocation
from modelgate.graph import Layer, ModelGraph, Op, TensorInfo, ValueInfo

PATH = "model.pt2"


@dataclass
class Result:
    """What one rule said about one graph."""

    findings: list[tuple[str, str, str, str]] = field(default_factory=list)
    # (severity, where: Location.describe(), key, message)
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    fixes: list[str | None] = field(default_factory=list)
    locations: list[Location] = field(default_factory=list)


def run(rule: str, graph: ModelGraph, **conf: Any) -> Result:
    """Run rule ``rule`` (an id) on ``graph`` with the config ``conf`` (as in modelgate.yaml)."""
    outcome = lint.run_rules(graph, cfg.from_dict(conf), graph.path, only=rule)
    out = Result(skipped=outcome.skipped.get(rule), notes=outcome.notes)
    for f in outcome.findings:
        out.findings.append((f.severity, f.location.describe(), f.key or "", f.message))
        out.fixes.append(f.fix)
        out.locations.append(f.location)
    return out


def graph(fmt: str = "torch_export", *, has_graph: bool | None = None, **kw: Any) -> ModelGraph:
    """A graph of format ``fmt``; ``has_graph`` defaults to whether ops were given."""
    g = ModelGraph(PATH, format=fmt, **kw)
    g.has_graph = bool(g.ops) if has_graph is None else has_graph
    for value in g.inputs:
        g.values.setdefault(value.name, value)
    return g


def tensor(name: str, shape: tuple[int, ...], dtype: str = "float32", kind: str = "parameter"):
    return TensorInfo(name, tuple(shape), dtype, kind)


def layer(path: str, type_: str, *tensors: TensorInfo, **kw: Any) -> Layer:
    """A layer whose tensors are named ``path.local`` (as in a state dict)."""
    return Layer(path, type_, {t.name.rsplit(".", 1)[-1]: t for t in tensors}, **kw)


def with_layers(g: ModelGraph, *layers: Layer) -> ModelGraph:
    """Add ``layers`` and their tensors to ``g``."""
    for item in layers:
        g.layers[item.path] = item
        for t in item.tensors.values():
            g.tensors[t.name] = t
    return g


def op(name: str, target: str, *, inputs=(), outputs=(), **kw: Any) -> Op:
    return Op(name, target, inputs=list(inputs), outputs=list(outputs), **kw)


def value(name: str, shape: tuple | None, dtype: str | None = "float32") -> ValueInfo:
    return ValueInfo(name, shape, dtype)


def with_values(g: ModelGraph, *values: ValueInfo) -> ModelGraph:
    """Record intermediate values (op outputs) by name, as loaders' shape inference does."""
    for item in values:
        g.values[item.name] = item
    return g


def source(line: int, file: str = "net.py") -> SourceLocation:
    """The source line a loader records for an op or layer; it shows as "net.py:LINE"."""
    return SourceLocation(file, line, "forward")
