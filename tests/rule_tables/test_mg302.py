"""MG302 latency-budget on budget evaluations built in memory: graph -> the exact findings."""

from __future__ import annotations

import check_cases as cc
import pytest
import rule_cases as rc

GROWTH_NOT_JUDGED = (
    "growth limits not judged: no baseline (--baseline OLD; in the Action: a new model)"
)


def _latency(value: float, runtime: str = cc.ORT, **fields) -> tuple[str, dict]:
    return cc.entry("latency_ms", value, measured=runtime, **fields)


def _own(target: str, figure: str, value, **fields) -> tuple[str, dict]:
    """A target's own figure's entry (``budget.targets``), keyed as budget.evaluate keys it."""
    _, entry = cc.entry(figure, value, **fields)
    return f"{target}.{figure}", entry


CASES = [
    pytest.param(
        cc.budget_view(
            _latency(56.0, "torch 2.13.0 CPU", limit=30, difference=26.0, passed=False),
        ),
        {},
        [
            (
                "error",
                "",
                "budget:latency_ms",
                "latency_ms 56 ms (torch 2.13.0 CPU) is over the budget of 30 ms by 26 ms, +87%",
            )
        ],
        id="torch-latency-over-its-maximum",
    ),
    pytest.param(
        cc.budget_view(
            cc.entry("macs", 5339392, limit=1000000, difference=4339390.0, passed=False)
        ),
        {"rules": {"MG302": "warning"}},
        [
            (
                "warning",
                "",
                "budget:macs",
                "macs 5.3M is over the budget of 1.0M by 4.3M, +434%",
            )
        ],
        id="macs-over-at-the-configured-severity",
    ),
    pytest.param(
        cc.budget_view(
            _latency(
                12.0,
                limit=30,
                difference=-18.0,
                baseline=10.0,
                increase=2.0,
                increase_pct=20.0,
                max_increase_pct=15,
                passed=False,
            ),
            baseline="old/net.pt2",
        ),
        {},
        [
            (
                "error",
                "",
                "budget:latency_ms:growth",
                "latency_ms grew by 2 ms (+20.0%) against old/net.pt2 (10 ms -> 12 ms), more "
                "than the 15% allowed",
            )
        ],
        id="under-the-maximum-but-grew-too-much",
    ),
    pytest.param(
        cc.budget_view(
            _latency(12.0, limit=30, difference=-18.0, note=GROWTH_NOT_JUDGED, passed=True),
        ),
        {},
        [],
        id="under-the-maximum-no-baseline",
    ),
    pytest.param(
        cc.budget_view(
            _latency(0.745, limit=10, difference=-9.255, passed=True),
            cc.entry("macs", 5339392, limit=10000000, difference=-4660610.0, passed=True),
        ),
        {},
        [],
        id="within-budget",
    ),
    pytest.param(
        cc.budget_view(
            cc.entry(
                "latency_ms",
                None,
                limit=0.0001,
                passed=None,
                reason="not measured: the model was not run (measure."
                "latency: false, or a step failed)",
            ),
            cc.entry(
                "size_mb",
                0.03,
                measured="Core ML, palettize-4",
                limit=0.001,
                difference=0.029,
                passed=False,
            ),
        ),
        {},
        [],
        id="unmeasured-latency-and-other-rules-figures",
    ),
    pytest.param(
        cc.budget_view(
            _own(
                "executorch",
                "latency_ms",
                25.3,
                measured="ExecuTorch runtime",
                limit=20,
                difference=5.3,
                passed=False,
            ),
            _own(
                "onnx",
                "latency_ms",
                0.02,
                measured=cc.ORT,
                limit=20,
                difference=-19.98,
                passed=True,
            ),
        ),
        {},
        [
            (
                "error",
                "",
                "budget:executorch.latency_ms",
                "executorch latency_ms 25.3 ms (ExecuTorch runtime) is over the budget of 20 ms by "
                "5.3 ms, +26%",
            ),
        ],
        id="a-targets-own-latency-over",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg302(graph, conf, expected) -> None:
    assert rc.run("MG302", graph, **conf).findings == expected
