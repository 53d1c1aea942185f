"""MG104 unreliable-measurement on results built in memory: graph -> the exact findings."""

from __future__ import annotations

import check_cases as cc
import pytest
import rule_cases as rc

from modelgate.graph import ModelGraph

RESHAPE_FAILED = (
    "Fail: [ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Reshape "
    "node. Name:'' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/"
    "reshape_helper.h:91 onnxruntime::ReshapeHelper::ReshapeHelper(const onnxruntime::"
    "TensorShape&, onnxruntime::TensorShapeVector&, boo"
)
UNRANKED = "input 'r' (tensor(float)): its rank is unknown"
FLOAT8 = (
    "input 'x' (tensor(float8e4m3fn)): ONNX Runtime's Python API takes no numpy array of this "
    "element type"
)
UNMAPPED = [f"const_{i}_to_fp16" for i in range(3, 10)]


def _measured(**results) -> ModelGraph:
    """Compressible converted to Core ML and ONNX and compressed with palettize-4."""
    results.setdefault("reference", cc.reference(top1_classes=3))
    results.setdefault("coreml", cc.coreml_ok())
    results.setdefault("onnx", cc.onnx_ok())
    results.setdefault("presets", {"palettize-4": cc.preset_ok([cc.FC_SKIPPED])})
    results.setdefault("latency", cc.latency(0.745, 0.98))
    return cc.with_checks(
        cc.compressible(), cc.checks(("coreml", "onnx"), ["palettize-4"], **results)
    )


def _onnx_file(run: dict) -> ModelGraph:
    checks = cc.checks(("onnx",), onnx=cc.onnx_file_ok(run=run))
    return cc.with_checks(cc.onnx_file(), checks)


def _drifting(preset_drift: dict) -> ModelGraph:
    return _measured(presets={"palettize-4": cc.preset_ok(drift=preset_drift)})


CASES = [
    pytest.param(
        _measured(
            reference=cc.reference(outputs=[[1, 64]], degenerate=cc.DEGENERATE, top1_classes=1)
        ),
        {},
        [
            (
                "warning",
                "",
                "degenerate-output",
                f"drift is not reported: {cc.DEGENERATE}, so a relative error would measure "
                "noise around a constant",
            )
        ],
        id="near-constant-original",
    ),
    pytest.param(
        _drifting(cc.preset_drift(0.0302589, unmapped=["const_3_to_fp16"], compressed=3)),
        {},
        [
            (
                "warning",
                "",
                "unmapped:palettize-4",
                "palettize-4: 1 of 3 compressed weights could not be mapped back onto the torch "
                "model, so their error is missing from the drift: const_3_to_fp16",
            )
        ],
        id="a-compressed-weight-not-mapped-back",
    ),
    pytest.param(
        _drifting(cc.preset_drift(0.0302589, unmapped=UNMAPPED, compressed=9)),
        {"rules": {"MG104": "error"}},
        [
            (
                "error",
                "",
                "unmapped:palettize-4",
                "palettize-4: 7 of 9 compressed weights could not be mapped back onto the torch "
                "model, so their error is missing from the drift: const_3_to_fp16, "
                "const_4_to_fp16, const_5_to_fp16, const_6_to_fp16, const_7_to_fp16",
            )
        ],
        id="unmapped-weights-name-the-first-five-at-the-configured-severity",
    ),
    pytest.param(
        _onnx_file({"ok": False, "error": RESHAPE_FAILED, "inputs": []}),
        {},
        [
            (
                "warning",
                "",
                "onnx-run",
                "ONNX Runtime loads the ONNX file, but running it on synthetic inputs failed: "
                f"{RESHAPE_FAILED}; give sample inputs the model accepts",
            )
        ],
        id="onnx-file-fails-on-synthetic-inputs",
    ),
    pytest.param(
        _onnx_file({"ok": None, "error": UNRANKED}),
        {},
        [
            (
                "warning",
                "",
                "onnx-run",
                "ONNX Runtime loads the ONNX file, but it was not run: no synthetic value for "
                f"{UNRANKED}; give sample inputs",
            )
        ],
        id="onnx-file-input-of-unknown-rank",
    ),
    pytest.param(
        _measured(latency=cc.latency(1.59, 2.406, runtime="torch 2.13.0 CPU")),
        {},
        [
            (
                "warning",
                "",
                "noisy-latency",
                "latency is noisy: p90 2.41 ms is 1.5x the median 1.59 ms (the machine was busy "
                "while timing)",
            )
        ],
        id="noisy-latency",
    ),
    pytest.param(
        _measured(latency=cc.latency(1.59, 2.406, runtime="torch 2.13.0 CPU")),
        {"rules": {"MG104": {"max_p90_ratio": 2.0}}},
        [],
        id="noisy-latency-under-a-higher-max-p90-ratio",
    ),
    pytest.param(
        _measured(latency=cc.latency(2.0, 2.8)),
        {"rules": {"MG104": {"max_p90_ratio": 1.2}}},
        [
            (
                "warning",
                "",
                "noisy-latency",
                "latency is noisy: p90 2.8 ms is 1.4x the median 2 ms (the machine was busy "
                "while timing)",
            )
        ],
        id="a-lower-max-p90-ratio-flags-more",
    ),
    pytest.param(
        _measured(latency=cc.latency(0.745, 1.217)),
        {},
        [],
        id="sub-millisecond-jitter-is-not-noise",
    ),
    pytest.param(_measured(), {}, [], id="everything-measured"),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg104(graph, conf, expected) -> None:
    assert rc.run("MG104", graph, **conf).findings == expected


TOP1 = (
    "MG104: every synthetic input gets the same top-1 class from the original model, so "
    "top-1 agreement is all or nothing"
)

CASES_NOTES = [
    pytest.param(
        _measured(reference=cc.reference(weak=cc.WEAK, top1_classes=1)),
        [f"MG104: {cc.WEAK}", TOP1],
        id="weakly-input-dependent-with-one-top1-class",
    ),
    pytest.param(
        _measured(reference=cc.reference(degenerate=cc.DEGENERATE, weak=cc.WEAK, top1_classes=1)),
        [TOP1],
        id="near-constant-is-a-finding-not-a-weak-note",
    ),
    pytest.param(_measured(), [], id="input-dependent"),
]


@pytest.mark.parametrize(("graph", "notes"), CASES_NOTES)
def test_mg104_notes(graph, notes) -> None:
    assert rc.run("MG104", graph).notes == notes


def test_mg104_skipped_when_nothing_was_measured() -> None:
    graph = cc.with_checks(
        cc.state_dict(), cc.not_checked(cc.WEIGHTS_ONLY, cc.SAVE, ("coreml", "onnx"))
    )
    result = rc.run("MG104", graph)
    assert (result.skipped, result.findings) == (
        f"nothing was measured: {cc.WEIGHTS_ONLY}: {cc.SAVE}",
        [],
    )


def test_mg104_fix_of_an_unrun_onnx_file_follows_why() -> None:
    shapes = (
        "give the input shapes the model expects (--input-shape NAME=1x3x224x224 or inputs: "
        "in the config); the session check itself passed"
    )
    cannot = "modelgate cannot feed this input type yet; the session check itself passed"
    assert [
        rc.run("MG104", _onnx_file(run)).fixes[0]
        for run in (
            {"ok": False, "error": RESHAPE_FAILED, "inputs": []},
            {"ok": None, "error": UNRANKED},
            {"ok": None, "error": FLOAT8},
        )
    ] == [shapes, shapes, cannot]
