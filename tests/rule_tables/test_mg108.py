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


def test_a_kernel_the_runtime_names_otherwise_is_located_at_the_op_that_made_it(
    monkeypatch,
) -> None:
    """LiteRT's interpreter names STABLEHLO_SORT; the graph holds aten::topk. The target's
    observed table says which ops made that builtin on torch's samples."""
    from modelgate import opsupport

    table = {"ops": {"aten::topk": {"verdict": "mixed", "stage": "loading", "failed": 1,
                                    "samples": 2, "missing": ["STABLEHLO_SORT"]},
                     "aten::msort": {"verdict": "fails", "stage": "loading",
                                     "missing": ["STABLEHLO_SORT"]}}}  # fmt: skip
    monkeypatch.setattr(opsupport, "observed", lambda *a: opsupport.Observed(table, "LiteRT"))
    graph = rc.graph(ops=[rc.op("topk", "aten::topk", module="head",
                                source=SourceLocation("models.py", 17))],
                     inputs=[rc.value("x", (1, 8))])  # fmt: skip
    result = {"ok": False, "kind": "error", "stage": "loading the model into the LiteRT "
              "interpreter", "op": "sort", "missing_kernels": ["STABLEHLO_SORT"],
              "error": "Didn't find op for builtin opcode 'STABLEHLO_SORT'"}  # fmt: skip
    checks = cc.checks(litert=result)
    checks["requested"] = {"convert": ["litert"], "compress": [], "asked": ["litert"]}
    assert rc.run("MG108", cc.with_checks(graph, checks)).findings == [
        (
            "error",
            "head (models.py:17)",
            "litert:STABLEHLO_SORT",
            f"head: the LiteRT interpreter has no kernel for STABLEHLO_SORT: {NO_KERNEL}",
        )
    ]
