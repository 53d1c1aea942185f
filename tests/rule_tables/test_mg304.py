"""MG304 budget-unmeasured on budget evaluations built in memory: graph -> the exact findings."""

from __future__ import annotations

import check_cases as cc
import pytest
import rule_cases as rc

NO_BASELINE = "no baseline to compare with (--baseline OLD; in the Action: a new model)"
NOT_RUN = "not measured: the model was not run (measure.latency: false, or a step failed)"
NOT_FINISHED = "not measured: the conversion or compression did not finish"
NO_OPS = "no graph of ops in this format"
GROWTH_NOT_JUDGED = (
    "growth limits not judged: no baseline (--baseline OLD; in the Action: a new model)"
)


def _unjudged(name: str, severity: str = "warning", reason: str = "", key: str = "") -> tuple:
    return (
        severity,
        "",
        f"budget:{key or name}:unjudged",
        f"the budget for {name} was not judged: {reason}",
    )


def _own(target: str, figure: str, value, **fields) -> tuple[str, dict]:
    """A target's own figure's entry (``budget.targets``), keyed as budget.evaluate keys it."""
    _, entry = cc.entry(figure, value, **fields)
    return f"{target}.{figure}", entry


CASES = [
    pytest.param(
        cc.budget_view(
            cc.entry(
                "drift",
                None,
                measured="Core ML, palettize-4",
                limit=0.001,
                passed=None,
                reason=f"not meaningful: {cc.DEGENERATE}",
            ),
        ),
        {},
        [_unjudged("drift", reason=f"not meaningful: {cc.DEGENERATE}")],
        id="drift-of-a-near-constant-model",
    ),
    pytest.param(
        cc.budget_view(
            cc.entry(
                "drift",
                None,
                limit=0.01,
                passed=None,
                reason=f"not measured: {cc.WEIGHTS_ONLY}: {cc.SAVE}",
            ),
            cc.entry("macs", None, limit=1000, passed=None, reason=NO_OPS),
            cc.entry("size_mb", 0.005, measured="file", limit=1, difference=-0.995, passed=True),
        ),
        {},
        [
            _unjudged("drift", reason=f"not measured: {cc.WEIGHTS_ONLY}: {cc.SAVE}"),
            _unjudged("macs", reason=NO_OPS),
        ],
        id="state-dict-drift-and-macs",
    ),
    pytest.param(
        cc.budget_view(
            cc.entry(
                "size_mb", 0.007, measured="file", limit=0.001, difference=0.006, passed=False
            ),
            cc.entry("drift", None, limit=0.001, passed=None, reason=NOT_FINISHED),
            cc.entry("latency_ms", None, limit=0.0001, passed=None, reason=NOT_RUN),
            cc.entry("parameters", 0, passed=None, reason=NO_BASELINE),
        ),
        {"rules": {"MG304": "error"}},
        [
            _unjudged("drift", "error", NOT_FINISHED),
            _unjudged("latency_ms", "error", NOT_RUN),
            _unjudged("parameters", "error", NO_BASELINE),
        ],
        id="failed-conversions-at-the-configured-severity",
    ),
    pytest.param(
        cc.budget_view(
            cc.entry(
                "latency_ms",
                12.0,
                measured=cc.ORT,
                limit=30,
                difference=-18.0,
                note=GROWTH_NOT_JUDGED,
                passed=True,
            ),
        ),
        {},
        [],
        id="growth-limit-beside-a-maximum-without-baseline-is-noted-not-reported",
    ),
    pytest.param(
        cc.budget_view(
            cc.entry(
                "size_mb",
                0.03,
                measured="Core ML, palettize-4",
                limit=0.001,
                difference=0.029,
                passed=False,
            ),
            cc.entry(
                "latency_ms", 0.745, measured=cc.ORT, limit=10, difference=-9.255, passed=True
            ),
        ),
        {},
        [],
        id="every-figure-judged",
    ),
    pytest.param(
        cc.budget_view(
            _own(
                "coreml",
                "latency_ms",
                None,
                measured="Core ML",
                limit=5,
                passed=None,
                reason="not measured by Core ML: nothing on this machine runs what it makes",
            ),
            _own(
                "executorch",
                "size_mb",
                None,
                measured="ExecuTorch",
                limit=1,
                passed=None,
                reason="not measured: the ExecuTorch lowering failed: boom",
            ),
            _own(
                "onnx", "size_mb", 0.002, measured="ONNX", limit=1, difference=-0.998, passed=True
            ),
        ),
        {},
        [
            _unjudged(
                "coreml latency_ms",
                reason="not measured by Core ML: nothing on this machine runs what it makes",
                key="coreml.latency_ms",
            ),
            _unjudged(
                "executorch size_mb",
                reason="not measured: the ExecuTorch lowering failed: boom",
                key="executorch.size_mb",
            ),
        ],
        id="targets-own-figures-unmeasured-say-which-and-why",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg304(graph, conf, expected) -> None:
    assert rc.run("MG304", graph, **conf).findings == expected
