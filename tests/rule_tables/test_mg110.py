"""MG110 ep-coverage on results built in memory: graph -> the exact findings."""

from __future__ import annotations

import check_cases as cc
import pytest
import rule_cases as rc

from modelgate.graph import ModelGraph


def _ep(supported: int, nodes: int, partitions: int, **extra) -> dict:
    return {"nodes": nodes, "supported_nodes": supported, "partitions": partitions,
            "unsupported_nodes": [], "dynamic_shape_nodes": 0, **extra}  # fmt: skip


def _partitioned(**eps: dict) -> ModelGraph:
    checks = cc.checks(**{"ort-mobile": {"ok": True, "exporter": None, "eps": eps}})
    checks["requested"] = {"convert": ["ort-mobile"], "compress": [], "asked": ["ort-mobile"]}
    return cc.with_checks(cc.onnx_file(), checks)


HSIG = [{"op": "HardSigmoid", "node": "hsig"}]
CASES = [
    pytest.param(
        _partitioned(
            NNAPI=_ep(5, 6, 2, unsupported_nodes=HSIG), **{"CoreML MLProgram": _ep(6, 6, 1)}
        ),
        {},
        [],
        id="five-of-six-in-two-partitions-passes-the-bar",
    ),
    pytest.param(
        _partitioned(
            NNAPI=_ep(
                0,
                6,
                0,
                unsupported_nodes=HSIG,
                dynamic_shape_nodes=6,
                with_fixed_shapes=_ep(5, 6, 2),
            )
        ),
        {},
        [
            (
                "warning",
                "",
                "ort-mobile:NNAPI",
                "the NNAPI execution provider takes 0/6 nodes (0%) in 0 partition(s); "
                "unsupported: HardSigmoid (hsig); 6 node(s) lost to dynamic shapes (with fixed "
                "shapes: 5/6 in 2 partition(s))",
            )
        ],
        id="dynamic-shapes-lose-every-node",
    ),
    pytest.param(
        _partitioned(NNAPI=_ep(9, 10, 3)),
        {},
        [
            (
                "warning",
                "",
                "ort-mobile:NNAPI",
                "the NNAPI execution provider takes 9/10 nodes (90%) in 3 partition(s)",
            )
        ],
        id="three-partitions-are-too-many",
    ),
    pytest.param(
        _partitioned(NNAPI=_ep(9, 10, 3)),
        {"rules": {"MG110": {"max_partitions": 3}}},
        [],
        id="a-configured-partition-limit",
    ),
    pytest.param(
        _partitioned(NNAPI=_ep(1, 10, 1), **{"CoreML MLProgram": _ep(2, 10, 1)}),
        {"rules": {"MG110": {"providers": ["CoreML MLProgram"]}}},
        [
            (
                "warning",
                "",
                "ort-mobile:CoreML MLProgram",
                "the CoreML MLProgram execution provider takes 2/10 nodes (20%) in 1 partition(s)",
            )
        ],
        id="only-the-providers-asked-for",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg110(graph, conf, expected) -> None:
    assert rc.run("MG110", graph, **conf).findings == expected


def test_mg110_fix_says_how_to_fix_the_shapes_first() -> None:
    dynamic = _partitioned(NNAPI=_ep(0, 6, 0, dynamic_shape_nodes=6))
    (fix,) = rc.run("MG110", dynamic).fixes
    assert fix.startswith("fix the input shapes (export with static shapes")
    (fix,) = rc.run("MG110", _partitioned(NNAPI=_ep(1, 6, 1))).fixes
    assert fix == "replace the ops NNAPI does not support, or run the model on the CPU provider"
