"""MG108 missing-runtime-kernel on results built in memory: graph -> the exact findings."""

from __future__ import annotations

import check_cases as cc
import pytest
import rule_cases as rc

from modelgate.finding import SourceLocation
from modelgate.graph import ModelGraph

LOADING = "loading the program in the ExecuTorch runtime"


def _sorts() -> ModelGraph:
    """A torch.export graph that sorts (line 16) and takes the top-k (line 17)."""
    return rc.graph(
        ops=[
            rc.op("sort", "aten::sort", module="head", source=SourceLocation("models.py", 16)),
            rc.op("topk", "aten::topk", source=SourceLocation("models.py", 17)),
        ],
        inputs=[rc.value("x", (1, 8))],
    )


def _lowered(missing: list[str] | None, ok: bool = False) -> ModelGraph:
    result = {"ok": ok, "bytes": 2528, "backend": "XNNPACK", "operators": ["aten::sort.values"]}
    if missing is not None:
        result.update(kind="error", stage=LOADING, op="sort", missing_kernels=missing,
                      error="the ExecuTorch runtime has no kernel for ...")  # fmt: skip
    checks = cc.checks(executorch=result)
    checks["requested"] = {"convert": ["executorch"], "compress": [], "asked": ["executorch"]}
    return cc.with_checks(_sorts(), checks)


NO_KERNEL = "the converted program will not load"
CASES = [
    pytest.param(
        _lowered(["aten::sort.values"]),
        {},
        [
            (
                "error",
                "head (models.py:16)",
                "executorch:aten::sort.values",
                f"head: the ExecuTorch runtime has no kernel for aten::sort.values: {NO_KERNEL}",
            )
        ],
        id="one-missing-kernel-at-its-op",
    ),
    pytest.param(
        _lowered(["aten::sort.values", "aten::topk.values"]),
        {"rules": {"MG108": "warning"}},
        [
            (
                "warning",
                "head (models.py:16)",
                "executorch:aten::sort.values",
                f"head: the ExecuTorch runtime has no kernel for aten::sort.values: {NO_KERNEL}",
            ),
            (
                "warning",
                "aten::topk (models.py:17)",
                "executorch:aten::topk.values",
                f"the ExecuTorch runtime has no kernel for aten::topk.values: {NO_KERNEL}",
            ),
        ],
        id="each-missing-kernel-named-and-located",
    ),
    pytest.param(_lowered(None, ok=True), {}, [], id="every-kernel-there"),
    pytest.param(_lowered(["aten::sort.values"]), {"rules": {"MG108": "off"}}, [], id="off"),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg108(graph, conf, expected) -> None:
    assert rc.run("MG108", graph, **conf).findings == expected


def test_mg107_leaves_a_program_with_missing_kernels_to_mg108() -> None:
    assert rc.run("MG107", _lowered(["aten::sort.values"])).findings == []
