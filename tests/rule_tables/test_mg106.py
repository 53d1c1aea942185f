"""MG106 check-not-run on results built in memory: graph -> the exact findings."""

from __future__ import annotations

import check_cases as cc
import pytest
import rule_cases as rc

from modelgate.graph import ModelGraph

NO_OP_GRAPH = "a state dict holds weights only, no graph of ops"
NO_TORCH = (
    "TorchScript ops need torch to read: install modelgate-lint[torch] (weights, training flags "
    "and traced input shapes were read without it)"
)
INTERNAL = "internal error in modelgate's checks: KeyError: 'inputs'"


def _asked(label: str, asked: str, reason: str, key: str, severity: str = "error") -> tuple:
    return (severity, "", key, f"{label} was asked for ({asked}) but did not run: {reason}")


def _target(name: str, label: str, reason: str) -> tuple:
    return _asked(
        f"the {label} op check (MG003)", f"targets: / --target {name}", reason, f"target:{name}"
    )


def _convert(name: str, reason: str, severity: str = "error") -> tuple:
    label = {"coreml": "the Core ML conversion", "onnx": "the ONNX export"}[name]
    return _asked(label, f"convert: / --convert {name}", reason, f"convert:{name}", severity)


def _compress(preset: str, reason: str, severity: str = "error") -> tuple:
    return _asked(
        f"the {preset} compression",
        f"compress: / --compress {preset}",
        reason,
        f"compress:{preset}",
        severity,
    )


def _state_dict(convert=("coreml",), compress=(), asked=None) -> ModelGraph:
    checks = cc.not_checked(cc.WEIGHTS_ONLY, cc.SAVE, convert, compress, asked=asked)
    return cc.with_checks(cc.state_dict(), checks)


def _ran(convert=("coreml",), compress=(), **results) -> ModelGraph:
    return cc.with_checks(cc.compressible(), cc.checks(convert, compress, **results))


def _pickled_module() -> ModelGraph:
    t = rc.tensor
    g = rc.graph("pickled_module")
    return rc.with_layers(g, rc.layer("fc", "Linear", t("fc.weight", (4, 4)), t("fc.bias", (4,))))


def _torchscript_without_torch() -> ModelGraph:
    g = rc.graph("torchscript", inputs=[rc.value("x", (1, 3, 16, 16))])
    g.notes.append(NO_TORCH)
    return g


ONNX_FILE = cc.with_checks(
    cc.onnx_file(),
    cc.checks(
        ("coreml", "onnx"), ["int8"], coreml=cc.not_run(cc.NO_FRONTEND), onnx=cc.onnx_file_ok()
    ),
)

CASES = [
    pytest.param(
        _state_dict(compress=["int8"]),
        {"targets": ["coreml"]},
        [
            _target("coreml", "Core ML", NO_OP_GRAPH),
            _convert("coreml", cc.WEIGHTS_ONLY),
            _compress("int8", cc.WEIGHTS_ONLY),
        ],
        id="state-dict-asked-for-everything",
    ),
    pytest.param(
        ONNX_FILE,
        {"targets": ["coreml", "onnx"]},
        [
            _target("coreml", "Core ML", "Core ML has no ONNX frontend (coremltools 6 removed it)"),
            _convert("coreml", cc.NO_FRONTEND),
            _compress("int8", cc.NO_FRONTEND),
        ],
        id="onnx-file-for-core-ml",
    ),
    pytest.param(
        _state_dict((), ["int8"]),
        {},
        [_compress("int8", cc.WEIGHTS_ONLY)],
        id="a-preset-alone-does-not-ask-for-the-conversion",
    ),
    pytest.param(
        _pickled_module(),
        {"targets": ["onnx"]},
        [
            _target(
                "onnx",
                "ONNX",
                "a pickled nn.Module records no graph of ops (loading it would run its code)",
            )
        ],
        id="pickled-module-target",
    ),
    pytest.param(
        _torchscript_without_torch(),
        {"targets": ["coreml"]},
        [_target("coreml", "Core ML", NO_TORCH)],
        id="the-loader-says-what-is-missing",
    ),
    pytest.param(
        _ran(("onnx",), onnx=cc.not_run(cc.installing("onnxscript", "onnx"))),
        {},
        [_convert("onnx", "onnxscript is not installed: pip install 'modelgate-lint[onnx]'")],
        id="exporter-package-missing",
    ),
    pytest.param(
        cc.with_checks(
            cc.onnx_file(),
            cc.checks(("onnx",), onnx=cc.not_run(cc.installing("onnxruntime", "onnx"))),
        ),
        {},
        [
            _asked(
                "the ONNX Runtime session check of the ONNX file",
                "convert: / --convert onnx",
                "onnxruntime is not installed: pip install 'modelgate-lint[onnx]'",
                "convert:onnx",
            )
        ],
        id="onnx-file-onnxruntime-missing",
    ),
    pytest.param(
        _ran(("coreml",), ["int8"], coreml=cc.not_run(cc.TIME_USED_UP)),
        {"rules": {"MG106": "warning"}},
        [
            _convert("coreml", cc.TIME_USED_UP, "warning"),
            _compress("int8", cc.TIME_USED_UP, "warning"),
        ],
        id="time-limit-used-up-at-the-configured-severity",
    ),
    pytest.param(
        cc.with_checks(
            cc.compressible(),
            {"requested": cc.requested(("onnx",)), "graph": {}, "skipped": INTERNAL},
        ),
        {},
        [_convert("onnx", INTERNAL)],
        id="internal-error-in-the-checks",
    ),
    pytest.param(
        _state_dict(),
        {"targets": ["coreml"], "rules": {"MG003": "off"}},
        [_convert("coreml", cc.WEIGHTS_ONLY)],
        id="targets-count-only-while-mg003-runs",
    ),
    pytest.param(cc.state_dict(), {}, [], id="plain-check-of-a-state-dict"),
    pytest.param(
        cc.compressible(), {"targets": ["coreml", "onnx"]}, [], id="targets-on-a-model-with-a-graph"
    ),
    pytest.param(
        _ran(
            ("coreml", "onnx"),
            ["int8"],
            coreml=cc.step_died(
                "crash", "crashed (SIGABRT)", "converting to Core ML (iOS16, float16)"
            ),
            onnx=cc.step_error("ConversionError: No ONNX function found", "exporting to ONNX"),
        ),
        {},
        [],
        id="failed-conversions-are-mg101-and-mg102s",
    ),
    pytest.param(
        _ran(
            ("coreml",),
            ["palettize-4", "int4"],
            coreml=cc.coreml_ok(),
            presets={
                "palettize-4": cc.step_died(
                    "crash", "crashed (SIGABRT)", "compressing (palettize-4)"
                ),
                "int4": cc.not_run(cc.EARLIER_FAILED),
            },
        ),
        {},
        [],
        id="a-preset-after-a-crashed-one-is-mg105s",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg106(graph, conf, expected) -> None:
    assert rc.run("MG106", graph, **conf).findings == expected


def test_mg106_fix_says_what_would_let_it_run() -> None:
    stop = "or stop asking for it"
    no_shapes = cc.with_checks(
        rc.graph("torchscript", ops=cc.compressible().ops),
        cc.not_checked(cc.NO_SHAPES, cc.HOW_TO_SHAPE, ("onnx",)),
    )
    assert rc.run("MG106", _state_dict(compress=["int8"]), targets=["coreml"]).fixes == [
        f"{cc.SAVE}, which keep its graph; {stop} (targets: / --target coreml)",
        f"{cc.SAVE}; {stop} (convert: / --convert coreml)",
        f"{cc.SAVE}; {stop} (compress: / --compress int8)",
    ]
    assert rc.run("MG106", no_shapes).fixes == [
        f"{cc.HOW_TO_SHAPE}; {stop} (convert: / --convert onnx)"
    ]
    assert rc.run("MG106", _torchscript_without_torch(), targets=["coreml"]).fixes == [
        f"make it runnable (see the reason), {stop} (targets: / --target coreml)"
    ]
