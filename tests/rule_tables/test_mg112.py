"""MG112 build-failed on build results made in memory: graph -> the exact findings."""

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


CASES = [
    pytest.param(
        _built(stage="calling models.net:build", error="BuildError: models.net has no build"),
        {},
        [("error", "", "build:calling models.net:build",
          f"{BY} could not build the model while calling models.net:build: models.net has no "
          "build")],
        id="stage-and-reason",
    ),
    pytest.param(
        _built(stage="exporting with torch.export", error="UserError: data-dependent branch"),
        {},
        [("error", "", "build:exporting with torch.export",
          f"{BY} could not build the model while exporting with torch.export: UserError: "
          "data-dependent branch")],
        id="export",
    ),
    pytest.param(_built(error="timed out after 3 s"), {},
                 [("error", "", "build:None",
                   f"{BY} could not build the model: timed out after 3 s")], id="no-stage"),
    pytest.param(_built(ok=True, pt2="x.pt2"), {}, [], id="built"),
    pytest.param(_built(error="weights", missing=["a"]), {}, [], id="keys-are-mg111s"),
    pytest.param(rc.graph("state_dict"), {}, [], id="not-built"),
]  # fmt: skip


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg112(graph, conf, expected) -> None:
    assert rc.run("MG112", graph, **conf).findings == expected


def test_mg112_fix_fits_the_stage() -> None:
    export = _built(stage="exporting with torch.export", error="x")
    inputs = _built(stage="choosing its inputs", error="x")
    assert rc.run("MG112", export).fixes[0].startswith("make the module exportable")
    assert rc.run("MG112", inputs).fixes[0].startswith("give the inputs it is deployed with")
