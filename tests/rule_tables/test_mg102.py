"""MG102 onnx-export-failed on results built in memory: graph -> the exact findings."""

from __future__ import annotations

import check_cases as cc
import pytest
import rule_cases as rc

from modelgate.graph import ModelGraph

EXPORTING = "exporting to ONNX"
SESSION = "creating an ONNX Runtime session"
NO_KTHVALUE = (
    "ConversionError: No ONNX function found for <OpOverload(op='aten.kthvalue', "
    "overload='default')>. Failure message: No decompositions registered for the real-valued input"
)
NO_PROD = (
    "ConversionError: No ONNX function found for <OpOverload(op='prims.prod', "
    "overload='default')>. Failure message: No decompositions registered for the real-valued input"
)
NO_SHAPE_FIELD = "ValidationError: Field 'shape' of 'type' is required but missing."
NO_RESIZE = (
    "NotImplemented: Could not find an implementation for Resize(19) node with name 'node_Resize_0'"
)
NOT_REGISTERED = (
    "Fail: Load model from model.onnx failed:Fatal error: com.example:Foo(-1) is not a "
    "registered function/op"
)
SHAPES_DIFFER = (
    "failed: InferenceError: [ShapeInferenceError] Inference error(s): (op_type:Relu): "
    "[ShapeInferenceError] Inferred shape and existing shape differ in dimension 1: (2) vs (3)\n"
)


def _onnx(result: dict, graph: ModelGraph | None = None, convert=("coreml", "onnx")) -> ModelGraph:
    coreml = cc.coreml_ok() if "coreml" in convert else None
    results = {"coreml": coreml} if coreml else {}
    return cc.with_checks(graph or cc.compressible(), cc.checks(convert, onnx=result, **results))


def _file(result: dict) -> ModelGraph:
    """An ONNX file checked with --convert onnx (nothing exported: the session decides)."""
    return cc.with_checks(cc.onnx_file(), cc.checks(("onnx",), onnx=result))


def _file_failed(checker: str = "passed (full check)") -> dict:
    failed = cc.step_error(NOT_REGISTERED, SESSION, exporter=None, bytes=90, opset=18)
    failed["checker"] = checker
    return failed


CASES = [
    pytest.param(
        _onnx(cc.step_error(NO_KTHVALUE, EXPORTING, op="kthvalue"), cc.two_unsupported()),
        {},
        [
            (
                "error",
                "aten::kthvalue (tests/torchmodels.py:79)",
                "onnx",
                f"ONNX export failed at kthvalue: {NO_KTHVALUE}",
            )
        ],
        id="export-fails-at-the-op-it-names",
    ),
    pytest.param(
        _onnx(cc.step_error(NO_PROD, EXPORTING, op="prod"), cc.cumprod()),
        {},
        [("error", "prod", "onnx", f"ONNX export failed at prod: {NO_PROD}")],
        id="export-fails-at-a-decomposed-op-the-graph-does-not-show",
    ),
    pytest.param(
        _onnx(cc.step_error(NO_SHAPE_FIELD, "running onnx.checker", bytes=117774, opset=20)),
        {},
        [("error", "", "onnx", f"onnx.checker failed: {NO_SHAPE_FIELD}")],
        id="checker-rejects-the-export",
    ),
    pytest.param(
        _onnx(cc.step_error(NO_RESIZE, SESSION, bytes=117774, opset=20)),
        {},
        [("error", "", "onnx", f"ONNX Runtime session failed: {NO_RESIZE}")],
        id="onnx-runtime-cannot-load-the-export",
    ),
    pytest.param(
        _onnx(cc.step_died("timeout", "timed out after 60 s", EXPORTING), convert=("onnx",)),
        {},
        [
            (
                "error",
                "",
                "onnx",
                "ONNX export timed out while exporting to ONNX: timed out after 60 s",
            )
        ],
        id="export-timed-out",
    ),
    pytest.param(
        _onnx(cc.step_died("crash", "crashed (SIGSEGV)", SESSION)),
        {"rules": {"MG102": {"severity": "warning"}}},
        [
            (
                "warning",
                "",
                "onnx",
                "ONNX Runtime session crashed while creating an ONNX Runtime session: "
                "crashed (SIGSEGV)",
            )
        ],
        id="session-crashed-at-the-configured-severity",
    ),
    pytest.param(
        _file(_file_failed()),
        {},
        [("error", "", "onnx", f"ONNX Runtime session of the ONNX file failed: {NOT_REGISTERED}")],
        id="onnx-file-onnx-runtime-cannot-load",
    ),
    pytest.param(_onnx(cc.onnx_ok()), {}, [], id="export-ok"),
    pytest.param(_file(cc.onnx_file_ok()), {}, [], id="onnx-file-loads"),
    pytest.param(
        cc.with_checks(
            cc.two_unsupported(),
            cc.checks(
                ("coreml",),
                coreml=cc.step_error(
                    "NotImplementedError: Unsupported fx node kthvalue, kind kthvalue",
                    "converting to Core ML (iOS18, float16)",
                    op="kthvalue",
                ),
            ),
        ),
        {},
        [],
        id="onnx-not-asked-for",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg102(graph, conf, expected) -> None:
    assert rc.run("MG102", graph, **conf).findings == expected


CASES_SKIPPED = [
    pytest.param(
        _onnx(cc.not_run(cc.installing("onnxscript", "onnx")), convert=("onnx",)),
        "not converted: onnxscript is not installed: pip install 'modelgate-lint[onnx]'",
        id="onnxscript-missing",
    ),
    pytest.param(
        _file(cc.not_run(cc.installing("onnxruntime", "onnx"))),
        "not converted: onnxruntime is not installed: pip install 'modelgate-lint[onnx]'",
        id="onnx-file-onnxruntime-missing",
    ),
    pytest.param(
        cc.with_checks(
            rc.graph("torchscript", ops=cc.compressible().ops),
            cc.not_checked(cc.NO_SHAPES, cc.HOW_TO_SHAPE, ("onnx",)),
        ),
        f"not converted: {cc.NO_SHAPES}: {cc.HOW_TO_SHAPE}",
        id="no-input-shapes",
    ),
]


@pytest.mark.parametrize(("graph", "reason"), CASES_SKIPPED)
def test_mg102_skipped(graph, reason) -> None:
    result = rc.run("MG102", graph)
    assert (result.skipped, result.findings) == (reason, [])


CASES_NOTES = [
    pytest.param(
        _file(cc.onnx_file_ok(checker=SHAPES_DIFFER)),
        [],
        [f"MG102: onnx.checker rejects the file, which ONNX Runtime loads: {SHAPES_DIFFER}"],
        id="checker-rejects-a-file-onnx-runtime-loads",
    ),
    pytest.param(
        _file(_file_failed(checker=SHAPES_DIFFER)),
        [("error", "", "onnx", f"ONNX Runtime session of the ONNX file failed: {NOT_REGISTERED}")],
        [],
        id="a-file-that-does-not-load-has-no-checker-note",
    ),
    pytest.param(_file(cc.onnx_file_ok()), [], [], id="checker-passes"),
]


@pytest.mark.parametrize(("graph", "findings", "notes"), CASES_NOTES)
def test_mg102_notes(graph, findings, notes) -> None:
    result = rc.run("MG102", graph)
    assert (result.findings, result.notes) == (findings, notes)


def test_mg102_fix_of_an_onnx_file_asks_for_no_export() -> None:
    assert rc.run("MG102", _file(_file_failed())).fixes == [
        "use ops and opsets this ONNX Runtime implements (its message names the op), or a "
        "newer onnxruntime; re-export the ONNX file from its source model if it is damaged"
    ]
    assert rc.run("MG102", _onnx(cc.step_error(NO_PROD, EXPORTING, op="prod"))).fixes == [
        "make the op exportable: rewrite it with ops torch.onnx exports, or register a custom "
        "ONNX function (torch.onnx.export(..., custom_translation_table=...))"
    ]
