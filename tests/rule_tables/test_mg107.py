"""MG107 conversion-failed on results built in memory: graph -> the exact findings.

MG107 reports the targets that name no conversion rule of their own; the toy target
(tests/toy_target.py) is registered for these cases, as a plugin would be.
"""

from __future__ import annotations

import check_cases as cc
import pytest
import rule_cases as rc

from modelgate.graph import ModelGraph
from modelgate.targets import REGISTRY

NO_KERNEL = "ToyError: no kernel for 'relu'"


@pytest.fixture(autouse=True)
def toy():
    import toy_target

    REGISTRY.register(toy_target)
    yield
    REGISTRY.unregister("toy")


def _toy(result: dict | None, convert=("toy",), **results) -> ModelGraph:
    checks = cc.checks(**results)
    checks["requested"] = {"convert": list(convert), "compress": [], "asked": list(convert)}
    if result is not None:
        checks["toy"] = result
    return cc.with_checks(cc.compressible(), checks)


CASES = [
    pytest.param(
        _toy(cc.step_error(NO_KERNEL, "converting to Toy", op="relu")),
        {},
        [
            (
                "error",
                "aten::relu (tests/torchmodels.py:104)",
                "toy",
                f"Toy conversion failed at relu: {NO_KERNEL}",
            )
        ],
        id="fails-at-the-op-it-names",
    ),
    pytest.param(
        _toy(cc.step_died("timeout", "timed out after 0.2 s", "converting to Toy")),
        {"rules": {"MG107": "warning"}},
        [
            (
                "warning",
                "",
                "toy",
                "Toy conversion timed out while converting to Toy: timed out after 0.2 s",
            )
        ],
        id="timeout-at-the-configured-severity",
    ),
    pytest.param(_toy({"ok": True, "bytes": 100}), {}, [], id="converted"),
    pytest.param(
        _toy(None, convert=("coreml",), coreml=cc.step_error(NO_KERNEL, "converting to Core ML")),
        {},
        [],
        id="a-target-with-its-own-rule-is-not-mg107s",
    ),
    pytest.param(
        _toy(cc.step_error(NO_KERNEL, "converting to Toy", op="relu")),
        {"rules": {"MG107": "off"}},
        [],
        id="turned-off",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg107(graph, conf, expected) -> None:
    assert rc.run("MG107", graph, **conf).findings == expected


def test_mg107_fix_is_the_targets_default_for_its_kind() -> None:
    found = rc.run("MG107", _toy(cc.step_error(NO_KERNEL, "converting to Toy", op="relu")))
    assert found.fixes == ["rewrite what the Toy toolchain names in its message, or report it"]


def test_mg107_skips_when_the_conversion_did_not_run() -> None:
    assert rc.run("MG107", _toy(cc.not_run("torch is not installed"))).skipped == (
        "not converted: torch is not installed"
    )
