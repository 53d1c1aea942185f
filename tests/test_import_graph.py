"""Data flows one way: no module of modelgate imports, at any depth, a module that imports it.

Imports inside functions count too: a lazy import is still a dependency, and a circle of
them is how a stage ends up calling back into the one above it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / "modelgate").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    for folder in ("rules", "targets"):  # installed as modelgate.rules, modelgate.targets
        for path in sorted((ROOT / folder).glob("*.py")):
            stem = "" if path.stem == "__init__" else f".{path.stem}"
            out[f"modelgate.{folder}{stem}"] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle() -> None:
    known = _modules()
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    assert graph["modelgate.driver"] >= {"modelgate.parallel", "modelgate.budget"}  # sees edges
    assert "modelgate.checks.compress" in graph["modelgate.targets.coreml"]
    circles = [
        f"{' <-> '.join(c)}: " + "; ".join(f"{a} -> {sorted(graph[a] & set(c))}" for a in c)
        for c in _cycles(graph)
    ]
    assert circles == []


def test_the_walker_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_targets_import_no_stage_above_them() -> None:
    """A target module uses the checks' plumbing and its own helpers; it never calls back
    into the pipeline, the engine or a rule, and no target imports another."""
    known = _modules()
    above = {
        "modelgate.engine", "modelgate.driver", "modelgate.parallel", "modelgate.budget",
        "modelgate.baseline", "modelgate.cli", "modelgate.action", "modelgate.config",
        "modelgate.checks.pipeline", "modelgate.checks.figures", "modelgate.checks.settings",
        "modelgate.rules",
    }  # fmt: skip
    above |= {name for name in known if name.startswith("modelgate.rules.")}
    targets = {n for n in known if n.startswith("modelgate.targets.")}
    assert targets >= {"modelgate.targets.coreml", "modelgate.targets.onnx"}
    for name in targets:
        imported = _imports(name, known[name], known)
        assert not (imported & above), name
        assert not (imported & (targets | {"modelgate.targets"})), name


def test_rules_import_no_stage() -> None:
    """Rules read the graph; they never load files, call into the engine's stages or the
    targets' checks, or import one another."""
    known = _modules()
    stages = {
        "modelgate.engine", "modelgate.driver", "modelgate.parallel", "modelgate.budget",
        "modelgate.baseline", "modelgate.cli", "modelgate.action", "modelgate.loaders",
        "modelgate.lint",
        "modelgate.checks",
    }  # fmt: skip
    stages |= {name for name in known if name.startswith("modelgate.checks.")}
    rules = {name for name in known if re.fullmatch(r"modelgate\.rules\.mg\d{3}_\w+", name)}
    assert (
        "modelgate.checks.pipeline" in stages
        and "modelgate.rules.mg101_coreml_conversion_failed" in rules
    )
    for name in rules:
        imported = _imports(name, known[name], known)
        assert not (imported & stages), name
        assert not (imported & rules), name


# the one way through, top to bottom (cli and the Action are the two doors in; the Action
# shares the CLI's check): a module never imports one above it, at any depth
_CHAIN = [
    "modelgate.cli", "modelgate.action", "modelgate.options", "modelgate.driver",
    "modelgate.cache",  # the driver's: results before the budget, looked up and stored
    "modelgate.cache_entry", "modelgate.cache_key",
    "modelgate.parallel", "modelgate.engine", "modelgate.checks.pipeline",
    "modelgate.baseline",  # judges the base version with the budget, so above it
    "modelgate.budget", "modelgate.verdict", "modelgate.reporters", "modelgate.lint",
    "modelgate.report",
]  # fmt: skip


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for nxt in graph.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def test_nothing_imports_a_stage_above_it() -> None:
    known = _modules()
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    assert "modelgate.lint" in _reach(graph, "modelgate.budget")  # the walk sees edges
    for index, name in enumerate(_CHAIN):
        above = set(_CHAIN[:index])
        assert not (_reach(graph, name) & above), (name, sorted(_reach(graph, name) & above))
