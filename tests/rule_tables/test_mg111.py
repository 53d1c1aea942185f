"""MG111 recipe-mismatch on build results made in memory: graph -> the exact findings."""

from __future__ import annotations

import pytest
import rule_cases as rc

from modelgate.graph import ModelGraph
from modelgate.results import BuildResult

BY = "recipe models.net:build"


def _built(**fields: object) -> ModelGraph:
    g = rc.graph("state_dict")
    g.build = BuildResult("recipe", BY, **fields)  # type: ignore[arg-type]
    return g


MANY = [f"blocks.{i}.weight" for i in range(8)]

CASES = [
    pytest.param(
        _built(mismatched=[("head.weight", [5, 8], [10, 8])],
               counts={"checkpoint": 2, "module": 2}),
        {},
        [("error", "", "keys", f"the weights do not fit the module {BY} makes (file 2 tensors, "
          "module 2): 1 mis-shaped (head.weight: file 5x8, module 10x8)")],
        id="mis-shaped",
    ),
    pytest.param(
        _built(missing=["head.bias"], unexpected=MANY),
        {},
        [("error", "head.bias", "keys", f"the weights do not fit the module {BY} makes: "
          "1 missing (head.bias); 8 unexpected (blocks.0.weight, blocks.1.weight, "
          "blocks.2.weight, blocks.3.weight, blocks.4.weight, blocks.5.weight, … 2 more)")],
        id="missing-and-unexpected-listed-then-counted",
    ),
    pytest.param(_built(ok=True, pt2="x.pt2"), {}, [], id="keys-fit"),
    pytest.param(_built(error="ImportError: no module"), {}, [], id="a-failed-build-is-mg112s"),
    pytest.param(rc.graph("state_dict"), {}, [], id="not-built"),
    pytest.param(_built(missing=["a"]), {"rules": {"MG111": "warning"}},
                 [("warning", "a", "keys", f"the weights do not fit the module {BY} "
                   "makes: 1 missing (a)")], id="severity-from-config"),
]  # fmt: skip


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg111(graph, conf, expected) -> None:
    assert rc.run("MG111", graph, **conf).findings == expected
