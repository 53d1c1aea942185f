"""Every registered rule has its table of in-memory cases (tests/rule_tables/test_mgNNN.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from modelgate.rules import REGISTRY

TABLES = Path(__file__).resolve().parent / "rule_tables"


def _targets(node: ast.Assign | ast.AnnAssign) -> list[ast.expr]:
    return node.targets if isinstance(node, ast.Assign) else [node.target]


@pytest.mark.parametrize("rule", [m.ID for m in REGISTRY], ids=lambda r: r)
def test_every_rule_has_a_table_of_cases(rule: str) -> None:
    path = TABLES / f"test_{rule.lower()}.py"
    assert path.exists(), f"{rule} has no table of cases: add {path.relative_to(TABLES.parent)}"
    tree = ast.parse(path.read_text("utf-8"))
    cases = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and any(getattr(t, "id", None) == "CASES" for t in _targets(node))
    ]
    assert cases, f"{path.name} defines no CASES table"
    assert isinstance(cases[0], ast.List | ast.Tuple) and len(cases[0].elts) >= 2, (
        f"{path.name}: CASES needs at least one case that fires and one that does not"
    )
