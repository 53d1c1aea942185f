"""MG303 drift-budget on budget evaluations built in memory: graph -> the exact findings."""

from __future__ import annotations

import check_cases as cc
import pytest
import rule_cases as rc

PRESET = "Core ML, palettize-4"


def _own(target: str, figure: str, value, **fields) -> tuple[str, dict]:
    """A target's own figure's entry (``budget.targets``), keyed as budget.evaluate keys it."""
    _, entry = cc.entry(figure, value, **fields)
    return f"{target}.{figure}", entry


CASES = [
    pytest.param(
        cc.budget_view(
            cc.entry(
                "drift", 0.0302589, measured=PRESET, limit=0.001, difference=0.0292589, passed=False
            ),
        ),
        {},
        [
            (
                "error",
                "",
                "budget:drift",
                "drift 0.0303 (Core ML, palettize-4) is over the budget of 0.001 by 0.0293, +2926%",
            )
        ],
        id="compressed-drift-over",
    ),
    pytest.param(
        cc.budget_view(
            cc.entry(
                "drift",
                0.0302589,
                measured=PRESET,
                baseline=0.02,
                increase=0.0102589,
                increase_pct=51.2945,
                max_increase=0.005,
                passed=False,
            ),
            baseline="old/net.pt2",
        ),
        {"rules": {"MG303": "warning"}},
        [
            (
                "warning",
                "",
                "budget:drift:growth",
                "drift grew by 0.0103 (+51.3%) against old/net.pt2 (0.02 -> 0.0303), more than "
                "the 0.005 allowed",
            )
        ],
        id="drift-grew-at-the-configured-severity",
    ),
    pytest.param(
        cc.budget_view(
            cc.entry(
                "drift",
                1.34166e-07,
                measured="ONNX Runtime",
                limit=1e-05,
                difference=-9.86583e-06,
                passed=True,
            ),
        ),
        {},
        [],
        id="onnx-runtime-drift-within",
    ),
    pytest.param(
        cc.budget_view(
            cc.entry(
                "drift",
                None,
                measured=PRESET,
                limit=0.001,
                passed=None,
                reason=f"not meaningful: {cc.DEGENERATE}",
            ),
        ),
        {},
        [],
        id="near-constant-original-is-not-judged",
    ),
    pytest.param(
        cc.budget_view(
            cc.entry("size_mb", 0.03, measured=PRESET, limit=0.001, difference=0.029, passed=False),
        ),
        {},
        [],
        id="no-drift-budget",
    ),
    pytest.param(
        cc.budget_view(
            _own(
                "litert",
                "drift",
                0.02,
                measured="LiteRT interpreter (CPU)",
                limit=0.01,
                difference=0.01,
                passed=False,
            ),
            _own(
                "litert", "size_mb", 5.0, measured="LiteRT", limit=1, difference=4.0, passed=False
            ),
        ),
        {},
        [
            (
                "error",
                "",
                "budget:litert.drift",
                "litert drift 0.02 (LiteRT interpreter (CPU)) is over the budget of 0.01 by 0.01, "
                "+100%",
            ),
        ],
        id="a-targets-own-drift-over-and-another-rules-figure",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg303(graph, conf, expected) -> None:
    assert rc.run("MG303", graph, **conf).findings == expected


def test_mg303_fix() -> None:
    graph = CASES[0].values[0]
    assert rc.run("MG303", graph).fixes == [
        "use a gentler preset (palettize-8, int8 instead of 4-bit), a smaller group or block "
        "size, or compression-aware training (coremltools.optimize.torch)"
    ]
