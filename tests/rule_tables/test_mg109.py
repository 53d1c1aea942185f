"""MG109 not-delegated on results built in memory: graph -> the exact findings."""

from __future__ import annotations

import check_cases as cc
import pytest
import rule_cases as rc

from modelgate.finding import SourceLocation
from modelgate.graph import ModelGraph


def _graph() -> ModelGraph:
    return rc.graph(
        ops=[
            rc.op("mm", "aten::mm", module="head", source=SourceLocation("models.py", 9)),
            rc.op("mean", "aten::mean", module="pool"),
        ],
        inputs=[rc.value("x", (1, 8))],
    )


def _lowered(*portable: dict) -> ModelGraph:
    result = {"ok": True, "bytes": 5264, "backend": "XNNPACK", "delegated_nodes": 3,
              "nodes": 7, "portable_ops": list(portable), "macs": 1000}  # fmt: skip
    checks = cc.checks(executorch=result)
    checks["requested"] = {"convert": ["executorch"], "compress": [], "asked": ["executorch"]}
    return cc.with_checks(_graph(), checks)


MM = {"op": "aten::mm", "count": 2, "macs": 400, "macs_share": 0.4}
MEAN = {"op": "aten::mean", "count": 1, "macs": 0, "macs_share": 0.0}
SMALL = {"op": "aten::bmm", "count": 1, "macs": 50, "macs_share": 0.05}
CASES = [
    pytest.param(
        _lowered(MM, MEAN, SMALL),
        {},
        [
            (
                "warning",
                "head (models.py:9)",
                "executorch:portable:aten::mm",
                "aten::mm (2x, 40% of the model's MACs) stays on ExecuTorch's portable "
                "kernels, not XNNPACK",
            )
        ],
        id="the-heavy-op-not-the-light-ones",
    ),
    pytest.param(
        _lowered(MM, SMALL),
        {"rules": {"MG109": {"min_macs_share": 0.01}}},
        [
            (
                "warning",
                "head (models.py:9)",
                "executorch:portable:aten::mm",
                "aten::mm (2x, 40% of the model's MACs) stays on ExecuTorch's portable "
                "kernels, not XNNPACK",
            ),
            (
                "warning",
                "aten::bmm",
                "executorch:portable:aten::bmm",
                "aten::bmm (1x, 5% of the model's MACs) stays on ExecuTorch's portable "
                "kernels, not XNNPACK",
            ),
        ],
        id="a-lower-limit-reports-more",
    ),
    pytest.param(_lowered(MEAN), {}, [], id="only-light-ops-portable"),
    pytest.param(_lowered(MM), {"rules": {"MG109": "off"}}, [], id="off"),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg109(graph, conf, expected) -> None:
    assert rc.run("MG109", graph, **conf).findings == expected
