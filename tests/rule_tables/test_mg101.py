"""MG101 coreml-conversion-failed on results built in memory: graph -> the exact findings."""

from __future__ import annotations

import check_cases as cc
import pytest
import rule_cases as rc

from modelgate.finding import SourceLocation
from modelgate.graph import ModelGraph

CONVERTING = "converting to Core ML (iOS18, float16)"
CRASHED = "crashed (SIGABRT): return cls.__new__(cls, *args)"
NO_KTHVALUE = "NotImplementedError: Unsupported fx node kthvalue, kind kthvalue"
NO_ERFINV = "NotImplementedError: PyTorch convert function for op 'erfinv' not implemented."
OUT_OF_MEMORY = "ran out of memory (the memory limit is 4096 MB: isolation.memory_mb)"
NOT_LOADED = (
    "torch could not load the model: RuntimeError: PytorchStreamReader failed reading zip "
    "archive: failed finding central directory"
)


def _torchscript_with_erfinv() -> ModelGraph:
    """A TorchScript model calling erfinv in two modules (coremltools names the second)."""
    at = SourceLocation(cc.SOURCE, 80, "forward")
    return rc.graph(
        "torchscript",
        ops=[
            rc.op("erfinv", "aten::erfinv", module="stem", source=SourceLocation(cc.SOURCE, 79)),
            rc.op("erfinv.1", "aten::erfinv", module="head", source=at),
        ],
        inputs=[rc.value("x", (1, 8))],
    )


def _coreml(result: dict, convert=("coreml",), graph=None, **results) -> ModelGraph:
    return cc.with_checks(graph or cc.compressible(), cc.checks(convert, coreml=result, **results))


CASES = [
    pytest.param(
        _coreml(
            cc.step_error(NO_KTHVALUE, CONVERTING, op="kthvalue", deployment_target="iOS18"),
            convert=("coreml", "onnx"),
            graph=cc.two_unsupported(),
        ),
        {},
        [
            (
                "error",
                "aten::kthvalue (tests/torchmodels.py:79)",
                "coreml",
                f"Core ML conversion failed at kthvalue: {NO_KTHVALUE}",
            )
        ],
        id="fails-at-the-op-it-names",
    ),
    pytest.param(
        _coreml(
            cc.step_error(
                NO_ERFINV,
                "converting to Core ML (iOS16, float16)",
                op="erfinv",
                located_at="head/input.5",
            ),
            graph=_torchscript_with_erfinv(),
        ),
        {},
        [
            (
                "error",
                "head (tests/torchmodels.py:80)",
                "coreml",
                f"Core ML conversion failed at erfinv (located at 'head/input.5'): {NO_ERFINV}",
            )
        ],
        id="located-at-picks-the-module-among-two-ops",
    ),
    pytest.param(
        _coreml(
            cc.step_error(
                "NotImplementedError: PyTorch convert function for op 'gelu' not implemented.",
                CONVERTING,
                op="gelu",
                located_at="encoder.mlp/input.9",
            )
        ),
        {},
        [
            (
                "error",
                "encoder.mlp",
                "coreml",
                "Core ML conversion failed at gelu (located at 'encoder.mlp/input.9'): "
                "NotImplementedError: PyTorch convert function for op 'gelu' not implemented.",
            )
        ],
        id="an-op-the-graph-does-not-show-points-at-its-module",
    ),
    pytest.param(
        _coreml(cc.step_died("crash", CRASHED, "converting to Core ML (iOS16, float16)")),
        {},
        [
            (
                "error",
                "",
                "coreml",
                "Core ML conversion crashed while converting to Core ML (iOS16, float16): "
                f"{CRASHED}",
            )
        ],
        id="crash-while-converting",
    ),
    pytest.param(
        _coreml(cc.step_died("timeout", "timed out after 0.2 s", "loading the model with torch")),
        {},
        [
            (
                "error",
                "",
                "coreml",
                "Core ML conversion timed out while loading the model with torch: "
                "timed out after 0.2 s",
            )
        ],
        id="timeout-while-loading",
    ),
    pytest.param(
        _coreml(cc.step_died("memory", OUT_OF_MEMORY, CONVERTING)),
        {"rules": {"MG101": "warning"}},
        [
            (
                "warning",
                "",
                "coreml",
                f"Core ML conversion ran out of memory while {CONVERTING}: {OUT_OF_MEMORY}",
            )
        ],
        id="out-of-memory-at-the-configured-severity",
    ),
    pytest.param(
        _coreml({"ok": False, "error": NOT_LOADED, "kind": "error", "stage": "loading the model"}),
        {},
        [("error", "", "coreml", f"Core ML conversion failed: {NOT_LOADED}")],
        id="torch-cannot-load-the-model",
    ),
    pytest.param(
        _coreml(cc.coreml_ok(), convert=("coreml", "onnx"), onnx=cc.onnx_ok()),
        {},
        [],
        id="conversion-ok",
    ),
    pytest.param(
        cc.with_checks(
            cc.two_unsupported(),
            cc.checks(("onnx",), onnx=cc.step_error(NO_KTHVALUE, "exporting to ONNX")),
        ),
        {},
        [],
        id="core-ml-not-asked-for",
    ),
    pytest.param(
        _coreml(cc.step_error(NO_KTHVALUE, CONVERTING, op="kthvalue"), graph=cc.two_unsupported()),
        {"rules": {"MG101": "off"}},
        [],
        id="turned-off",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg101(graph, conf, expected) -> None:
    assert rc.run("MG101", graph, **conf).findings == expected


# what the rule says when the conversion did not run (MG106 reports it when it was asked for)
CASES_SKIPPED = [
    pytest.param(
        cc.with_checks(cc.state_dict(), cc.not_checked(cc.WEIGHTS_ONLY, cc.SAVE, ("coreml",))),
        f"not converted: {cc.WEIGHTS_ONLY}: {cc.SAVE}",
        id="state-dict",
    ),
    pytest.param(
        cc.with_checks(
            rc.graph("torchscript", ops=_torchscript_with_erfinv().ops),
            cc.not_checked(cc.NO_SHAPES, cc.HOW_TO_SHAPE, ("coreml",)),
        ),
        f"not converted: {cc.NO_SHAPES}: {cc.HOW_TO_SHAPE}",
        id="no-input-shapes",
    ),
    pytest.param(
        cc.with_checks(
            cc.onnx_file(),
            cc.checks(
                ("coreml", "onnx"), coreml=cc.not_run(cc.NO_FRONTEND), onnx=cc.onnx_file_ok()
            ),
        ),
        f"not converted: {cc.NO_FRONTEND}",
        id="onnx-file",
    ),
    pytest.param(
        _coreml(cc.not_run(cc.installing("coremltools", "coreml"))),
        "not converted: coremltools is not installed: pip install 'modelgate-lint[coreml]'",
        id="coremltools-missing",
    ),
    pytest.param(
        _coreml(cc.not_run(cc.TIME_USED_UP)),
        f"not converted: {cc.TIME_USED_UP}",
        id="time-limit-used-up",
    ),
    pytest.param(
        cc.with_checks(cc.state_dict(), cc.not_checked(cc.WEIGHTS_ONLY, cc.SAVE, ("onnx",))),
        None,
        id="not-asked-for-no-skip",
    ),
]


@pytest.mark.parametrize(("graph", "reason"), CASES_SKIPPED)
def test_mg101_skipped(graph, reason) -> None:
    result = rc.run("MG101", graph)
    assert (result.skipped, result.findings) == (reason, [])


def test_mg101_fix_follows_the_kind_of_failure() -> None:
    kinds = {
        "error": cc.step_error(NO_KTHVALUE, CONVERTING, op="kthvalue"),
        "crash": cc.step_died("crash", CRASHED, CONVERTING),
        "timeout": cc.step_died("timeout", "timed out after 300 s", CONVERTING),
        "memory": cc.step_died("memory", OUT_OF_MEMORY, CONVERTING),
    }
    fixes = {kind: rc.run("MG101", _coreml(result)).fixes for kind, result in kinds.items()}
    assert fixes == {
        "error": [
            "make the op convertible: rewrite it with ops coremltools converts, or register a "
            "converter with @coremltools.converters.mil.register_torch_op"
        ],
        "crash": [
            "the converter itself crashed: try the other source format (TorchScript or "
            "torch.export) or another deployment target, and report it to coremltools with "
            "the model"
        ],
        "timeout": [
            "raise the time limit (timeout: / --timeout, isolation.timeout), or find the part "
            "of the model the converter spends its time on"
        ],
        "memory": ["raise isolation.memory_mb, or convert on a machine with more memory"],
    }


def test_mg101_location_carries_the_op_and_its_source() -> None:
    graph = _coreml(
        cc.step_error(NO_KTHVALUE, CONVERTING, op="kthvalue"), graph=cc.two_unsupported()
    )
    (where,) = rc.run("MG101", graph).locations
    assert (where.path, where.module, where.op, where.source) == (
        rc.PATH,
        None,
        "aten::kthvalue",
        SourceLocation(cc.SOURCE, 79, "forward"),
    )
