"""MG301 size-budget on budget evaluations built in memory: graph -> the exact findings."""

from __future__ import annotations

import check_cases as cc
import pytest
import rule_cases as rc

NO_BASELINE = "no baseline to compare with (--baseline OLD; in the Action: a new model)"

SIZE_OVER = cc.entry(
    "size_mb", 31.25, measured="Core ML, palettize-4", limit=25, difference=6.25, passed=False
)
PARAMETERS_GREW = cc.entry(
    "parameters",
    8480,
    baseline=330,
    increase=8150.0,
    increase_pct=2469.7,
    max_increase_pct=10,
    passed=False,
)


def _own(target: str, figure: str, value, **fields) -> tuple[str, dict]:
    """A target's own figure's entry (``budget.targets``), keyed as budget.evaluate keys it."""
    _, entry = cc.entry(figure, value, **fields)
    return f"{target}.{figure}", entry


CASES = [
    pytest.param(
        cc.budget_view(SIZE_OVER),
        {},
        [
            (
                "error",
                "",
                "budget:size_mb",
                "size_mb 31.2 MB (Core ML, palettize-4) is over the budget of 25 MB by 6.25 MB, "
                "+25%",
            )
        ],
        id="compressed-size-over-its-maximum",
    ),
    pytest.param(
        cc.budget_view(PARAMETERS_GREW, baseline="old.pt"),
        {},
        [
            (
                "error",
                "",
                "budget:parameters:growth",
                "parameters grew by 8.2K (+2469.7%) against old.pt (330 -> 8.5K), more than the "
                "10% allowed",
            )
        ],
        id="parameters-grew-more-than-the-percentage",
    ),
    pytest.param(
        cc.budget_view(
            cc.entry(
                "size_mb",
                12.5,
                measured="file",
                limit=10,
                difference=2.5,
                baseline=10.0,
                increase=2.5,
                increase_pct=25.0,
                max_increase=1,
                max_increase_pct=5,
                passed=False,
            ),
            baseline="models/net.pt2 at origin/main",
        ),
        {},
        [
            (
                "error",
                "",
                "budget:size_mb",
                "size_mb 12.5 MB (file) is over the budget of 10 MB by 2.5 MB, +25%",
            ),
            (
                "error",
                "",
                "budget:size_mb:growth",
                "size_mb grew by 2.5 MB (+25.0%) against models/net.pt2 at origin/main "
                "(10 MB -> 12.5 MB), more than the 1 MB / 5% allowed",
            ),
        ],
        id="over-the-maximum-and-both-growth-limits",
    ),
    pytest.param(
        cc.budget_view(
            cc.entry(
                "weights_mb",
                4.2,
                baseline=3.1,
                increase=1.1,
                increase_pct=35.4839,
                max_increase=0.5,
                passed=False,
            )
        ),
        {"rules": {"MG301": "warning"}},
        [
            (
                "warning",
                "",
                "budget:weights_mb:growth",
                "weights_mb grew by 1.1 MB (+35.5%) against the baseline (3.1 MB -> 4.2 MB), "
                "more than the 0.5 MB allowed",
            )
        ],
        id="unnamed-baseline-at-the-configured-severity",
    ),
    pytest.param(
        cc.budget_view(
            cc.entry(
                "parameters",
                100,
                baseline=0,
                increase=100.0,
                increase_pct=None,
                max_increase_pct=10,
                passed=False,
            ),
            baseline="old.pt",
        ),
        {},
        [
            (
                "error",
                "",
                "budget:parameters:growth",
                "parameters grew by 100 against old.pt (0 -> 100), more than the 10% allowed",
            )
        ],
        id="growth-from-nothing",
    ),
    pytest.param(
        cc.budget_view(
            cc.entry("peak_activation_mb", 0.131, limit=0.1, difference=0.031, passed=False)
        ),
        {},
        [
            (
                "error",
                "",
                "budget:peak_activation_mb",
                "peak_activation_mb 0.131 MB is over the budget of 0.1 MB by 0.031 MB, +31%",
            )
        ],
        id="peak-activations-over",
    ),
    pytest.param(
        cc.budget_view(
            cc.entry(
                "size_mb",
                6.66,
                measured="Core ML, palettize-4",
                limit=25,
                difference=-18.34,
                passed=True,
            ),
            cc.entry(
                "parameters",
                300,
                baseline=330,
                increase=-30.0,
                increase_pct=-9.09091,
                max_increase_pct=10,
                passed=True,
            ),
            baseline="old.pt",
        ),
        {},
        [],
        id="within-the-maximum-and-shrinking",
    ),
    pytest.param(
        cc.budget_view(
            cc.entry("parameters", 27492, reason=NO_BASELINE, passed=None),
            cc.entry(
                "latency_ms",
                56.0,
                measured="torch 2.13.0 CPU",
                limit=30,
                difference=26.0,
                passed=False,
            ),
            cc.entry(
                "drift",
                0.0302589,
                measured="Core ML, palettize-4",
                limit=0.001,
                difference=0.0292589,
                passed=False,
            ),
        ),
        {},
        [],
        id="unjudged-and-other-rules-figures",
    ),
    pytest.param(cc.budget_view(), {}, [], id="no-budget"),
    pytest.param(
        cc.budget_view(
            _own(
                "onnx",
                "size_mb",
                0.002,
                measured="ONNX",
                limit=0.001,
                difference=0.001,
                passed=False,
            ),
            _own(
                "executorch",
                "size_mb",
                0.03,
                measured="ExecuTorch",
                baseline=0.02,
                increase=0.01,
                increase_pct=50.0,
                max_increase_pct=10,
                passed=False,
            ),
            _own(
                "litert",
                "size_mb",
                0.026,
                measured="LiteRT",
                limit=1,
                difference=-0.974,
                passed=True,
            ),
            baseline="old.pt2",
        ),
        {},
        [
            (
                "error",
                "",
                "budget:onnx.size_mb",
                "onnx size_mb 0.002 MB (ONNX) is over the budget of 0.001 MB by 0.001 MB, +100%",
            ),
            (
                "error",
                "",
                "budget:executorch.size_mb:growth",
                "executorch size_mb grew by 0.01 MB (+50.0%) against old.pt2 (0.02 MB -> 0.03 MB), "
                "more than the 10% allowed",
            ),
        ],
        id="targets-own-sizes-over-the-maximum-and-grown",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg301(graph, conf, expected) -> None:
    assert rc.run("MG301", graph, **conf).findings == expected


def test_mg301_fix_follows_the_figure() -> None:
    graph = cc.budget_view(SIZE_OVER, PARAMETERS_GREW)
    assert rc.run("MG301", graph).fixes == [
        "compress further (compress: palettize-4 / int4), shrink the largest layers "
        "(metrics.largest_layers), or raise the budget",
        "shrink the largest layers (metrics.largest_layers)",
    ]
