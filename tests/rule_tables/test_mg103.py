"""MG103 compression-skipped-layers on results built in memory: graph -> the exact findings."""

from __future__ import annotations

import check_cases as cc
import pytest
import rule_cases as rc

from modelgate.graph import ModelGraph

FC = (
    "warning",
    "fc (tests/torchmodels.py:106)",
    "palettize-4:fc.weight",
    "palettize-4 left fc.weight (100x64, 6.4K weights, 23% of the parameters) uncompressed: "
    "Can't perform palettization: The number of channels at 0th axis (100) is not divisible by "
    "channel_group_size (16)",
)
STEM = (
    "warning",
    "stem (tests/torchmodels.py:104)",
    "int4:stem.weight",
    "int4 left stem.weight (32x3x5x5, 2.4K weights, 9% of the parameters) uncompressed: "
    "Invalid block_sizes; On 1th axis, the dim size 3 is not divisible by block size 32. "
    "Unable to perform structured quantization",
)
UNMAPPED_STEM = {k: v for k, v in cc.STEM_SKIPPED.items() if k != "tensor"}


def _compressed(presets: dict, coreml: dict | None = None, compress=None) -> ModelGraph:
    """Compressible converted and compressed with ``presets`` (in the config's order)."""
    asked = list(presets) if compress is None else compress
    results = {"presets": presets} if presets else {}
    return cc.with_checks(
        cc.compressible(),
        cc.checks(("coreml",), asked, coreml=coreml or cc.coreml_ok(), **results),
    )


BOTH = {
    "palettize-4": cc.preset_ok([cc.FC_SKIPPED]),
    "int4": cc.preset_ok([cc.STEM_SKIPPED]),
}

CASES = [
    pytest.param(
        _compressed({"palettize-4": cc.preset_ok([cc.FC_SKIPPED])}),
        {},
        [FC],
        id="palettize-4-skips-the-classifier",
    ),
    pytest.param(_compressed(BOTH), {}, [FC, STEM], id="each-preset-its-own-layers"),
    pytest.param(
        _compressed(BOTH),
        {"rules": {"MG103": {"severity": "error", "min_share": 0.1}}},
        [("error", *FC[1:])],
        id="min-share-drops-the-small-stem",
    ),
    pytest.param(
        _compressed(BOTH),
        {"rules": {"MG103": {"min_share": 0.25}}},
        [],
        id="min-share-above-every-layer",
    ),
    pytest.param(
        _compressed({"int4": cc.preset_ok([UNMAPPED_STEM])}),
        {},
        [
            (
                "warning",
                "const_9_to_fp16",
                "int4:const_9_to_fp16",
                "int4 left const_9_to_fp16 (32x3x5x5, 2.4K weights, 9% of the parameters) "
                f"uncompressed: {cc.STEM_SKIPPED['reason']}",
            )
        ],
        id="a-weight-not-mapped-to-torch-is-named-as-coremltools-names-it",
    ),
    pytest.param(
        _compressed({"palettize-8": cc.preset_ok(), "int8": cc.preset_ok(compressed=3)}),
        {},
        [],
        id="nothing-skipped",
    ),
    pytest.param(
        _compressed(
            {
                "int8": cc.step_error("ValueError: int8 went wrong", "compressing (int8)"),
                "palettize-4": cc.step_died(
                    "crash", "crashed (SIGABRT)", "compressing (palettize-4)"
                ),
                "int4": cc.not_run(cc.EARLIER_FAILED),
            }
        ),
        {},
        [],
        id="failed-and-unrun-presets-are-mg105s",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg103(graph, conf, expected) -> None:
    assert rc.run("MG103", graph, **conf).findings == expected


CASES_SKIPPED = [
    pytest.param(
        cc.with_checks(
            cc.state_dict(), cc.not_checked(cc.WEIGHTS_ONLY, cc.SAVE, compress=["palettize-4"])
        ),
        f"not compressed: {cc.WEIGHTS_ONLY}: {cc.SAVE}",
        id="state-dict",
    ),
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
            cc.onnx_file(),
            cc.checks(
                ("onnx",), ["int8"], coreml=cc.not_run(cc.NO_FRONTEND), onnx=cc.onnx_file_ok()
            ),
        ),
        f"not compressed: {cc.NO_FRONTEND}",
        id="onnx-file",
    ),
    pytest.param(
        cc.with_checks(cc.compressible(), cc.checks(("coreml",), coreml=cc.coreml_ok())),
        None,
        id="no-compression-asked-for",
    ),
]


@pytest.mark.parametrize(("graph", "reason"), CASES_SKIPPED)
def test_mg103_skipped(graph, reason) -> None:
    result = rc.run("MG103", graph)
    assert (result.skipped, result.findings) == (reason, [])


def test_mg103_fix_names_a_divisor_when_there_is_one() -> None:
    result = rc.run("MG103", _compressed(BOTH))
    assert result.fixes == [
        "set coreml.group_size: 4 (4 divides its 100 output channels), or give this op its own "
        "config in coremltools (op_name_configs)",
        "give this op its own config in coremltools (op_name_configs)",
    ]
    assert [(w.module, w.tensor) for w in result.locations] == [
        ("fc", "fc.weight"),
        ("stem", "stem.weight"),
    ]
