"""MG105 compression-failed on results built in memory: graph -> the exact findings."""

from __future__ import annotations

import check_cases as cc
import pytest
import rule_cases as rc

from modelgate.graph import ModelGraph

TOO_OLD = (
    "palettize-4 needs deployment target iOS18 or later (its ops do not exist before); the "
    "conversion targets iOS17"
)
CRASHED = "crashed (SIGABRT): return cls.__new__(cls, *args)"


def _compressed(presets: dict, coreml: dict | None = None, compress=None) -> ModelGraph:
    """Compressible converted to Core ML, then compressed with each preset of ``presets``."""
    asked = list(presets) if compress is None else compress
    results = {"presets": presets} if presets else {}
    return cc.with_checks(
        cc.compressible(),
        cc.checks((), asked, coreml=coreml or cc.coreml_ok(), **results),
    )


CASES = [
    pytest.param(
        _compressed(
            {"palettize-4": {"ok": False, "error": TOO_OLD}, "int8": cc.preset_ok(compressed=3)},
            coreml=cc.coreml_ok("iOS17"),
        ),
        {},
        [("error", "", "compress:palettize-4", f"palettize-4 failed: {TOO_OLD}")],
        id="4-bit-preset-on-ios17",
    ),
    pytest.param(
        _compressed(
            {
                "int8": cc.step_error("ValueError: int8 went wrong", "compressing (int8)"),
                "palettize-8": cc.preset_ok(compressed=3),
                "palettize-4": cc.step_died("crash", CRASHED, "compressing (palettize-4)"),
                "int4": cc.not_run(cc.EARLIER_FAILED),
            }
        ),
        {},
        [
            (
                "error",
                "",
                "compress:int8",
                "int8 failed while compressing (int8): ValueError: int8 went wrong",
            ),
            (
                "error",
                "",
                "compress:palettize-4",
                f"palettize-4 failed while compressing (palettize-4): {CRASHED}",
            ),
        ],
        id="raised-and-crashed-presets-not-the-one-never-run",
    ),
    pytest.param(
        _compressed(
            {"int4": cc.step_died("timeout", "timed out after 120 s", "compressing (int4)")}
        ),
        {"rules": {"MG105": "warning"}},
        [
            (
                "warning",
                "",
                "compress:int4",
                "int4 failed while compressing (int4): timed out after 120 s",
            )
        ],
        id="timed-out-at-the-configured-severity",
    ),
    pytest.param(
        _compressed({"palettize-4": cc.preset_ok([cc.FC_SKIPPED]), "int8": cc.preset_ok()}),
        {},
        [],
        id="every-preset-ran",
    ),
    pytest.param(
        cc.with_checks(cc.compressible(), cc.checks(("coreml",), coreml=cc.coreml_ok())),
        {},
        [],
        id="no-compression-asked-for",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg105(graph, conf, expected) -> None:
    assert rc.run("MG105", graph, **conf).findings == expected


CASES_SKIPPED = [
    pytest.param(
        _compressed(
            {},
            compress=["int8"],
            coreml=cc.step_died("timeout", "timed out after 0.2 s", "loading the model with torch"),
        ),
        "not compressed: the Core ML conversion failed (MG101)",
        id="core-ml-conversion-failed",
    ),
    pytest.param(
        cc.with_checks(
            cc.state_dict(), cc.not_checked(cc.WEIGHTS_ONLY, cc.SAVE, ("coreml",), ["int8"])
        ),
        f"not compressed: {cc.WEIGHTS_ONLY}: {cc.SAVE}",
        id="state-dict",
    ),
    pytest.param(
        cc.with_checks(
            cc.onnx_file(),
            cc.checks(
                ("onnx",), ["int8"], coreml=cc.not_run(cc.NO_FRONTEND), onnx=cc.onnx_file_ok()
            ),
        ),
        f"not compressed: {cc.NO_FRONTEND}",
        id="onnx-file",
    ),
    pytest.param(
        _compressed(
            {}, compress=["palettize-4"], coreml=cc.not_run(cc.installing("coremltools", "coreml"))
        ),
        "not compressed: coremltools is not installed: pip install 'modelgate-lint[coreml]'",
        id="coremltools-missing",
    ),
    pytest.param(
        cc.with_checks(cc.state_dict(), cc.not_checked(cc.WEIGHTS_ONLY, cc.SAVE, ("coreml",))),
        None,
        id="no-compression-asked-for-no-skip",
    ),
]


@pytest.mark.parametrize(("graph", "reason"), CASES_SKIPPED)
def test_mg105_skipped(graph, reason) -> None:
    result = rc.run("MG105", graph)
    assert (result.skipped, result.findings) == (reason, [])


def test_mg105_fix_names_the_deployment_target_when_that_is_why() -> None:
    graph = _compressed(
        {
            "palettize-4": {"ok": False, "error": TOO_OLD},
            "int8": cc.step_error("ValueError: int8 went wrong", "compressing (int8)"),
        },
        coreml=cc.coreml_ok("iOS17"),
    )
    assert rc.run("MG105", graph).fixes == [
        "set coreml.deployment_target to iOS18 or later (or leave it out)",
        "try another preset, or report the failure to coremltools with the model",
    ]
