"""MG003 unsupported-op on graphs built in memory: graph -> the exact findings, skips, notes.

What is supported comes from the snapshot of the converters that ships with modelgate
(modelgate/data/opsupport.json); the versions in the messages are read from it, so that the
table states what the rule says, not which release is installed.
"""

from __future__ import annotations

import importlib.util

import pytest
import rule_cases as rc

from modelgate import opsupport
from modelgate.results import ChecksResult

CT = opsupport.load().coreml_version  # "9.0": coremltools' registry the verdicts come from
TORCH = opsupport.load().torch_version  # "2.13.0": torch.onnx's function registry
COREML_STAGE = "converting to Core ML (iOS18, float16)"


def exported(*ops: rc.Op, dialect: str = "TRAINING", **kw) -> rc.ModelGraph:
    """A .pt2 program: ops with their overloads, as the loader reads them."""
    g = rc.graph("torch_export", inputs=[rc.value("x", (2, 4))], ops=list(ops), **kw)
    g.metadata["dialect"] = dialect
    return g


def kthvalue(module: str = "", line: int = 79) -> rc.Op:
    return rc.op("kthvalue", "aten::kthvalue", overload="default", module=module,
                 inputs=["x"], outputs=["getitem", "getitem_1"], args={"k": 2, "dim": 1},
                 source=rc.source(line))  # fmt: skip


def erfinv(module: str = "", line: int = 80) -> rc.Op:
    return rc.op("erfinv", "aten::erfinv", overload="default", module=module,
                 inputs=["tanh"], outputs=["erfinv"], source=rc.source(line))  # fmt: skip


def two_unsupported(**kw) -> rc.ModelGraph:
    """kthvalue -> tanh -> erfinv at the root module, as torch.export records it."""
    tanh = rc.op("tanh", "aten::tanh", overload="default", module="", inputs=["getitem"],
                 outputs=["tanh"], source=rc.source(80))  # fmt: skip
    return exported(kthvalue(), tanh, erfinv(), **kw)


def clean_export() -> rc.ModelGraph:
    return exported(
        rc.op("conv2d", "aten::conv2d", overload="default", module="conv", inputs=["x"]),
        rc.op("relu", "aten::relu", overload="default", module="", inputs=["conv2d"]),
        rc.op("flatten", "aten::flatten", overload="using_ints", module="", inputs=["relu"]),
        rc.op("linear", "aten::linear", overload="default", module="fc", inputs=["flatten"]),
    )


def traced(views: bool) -> rc.ModelGraph:
    """A TorchScript trace with x.chunk(2) and kthvalue: ops without overloads, named
    "kind#index". coremltools turns a constant chunk into prim::ConstantChunk before it looks
    ops up; the loader keeps each converter's view in metadata["converter_ops"]."""
    chunk = rc.op("aten::chunk#1", "aten::chunk", module="split", inputs=["x.1", "2", "3"],
                  outputs=["4"], source=rc.source(12))  # fmt: skip
    kth = rc.op(
        "aten::kthvalue#3",
        "aten::kthvalue",
        module="pick",
        inputs=["5", "6", "7", "8"],
        outputs=["v.1", "9"],
        source=rc.source(13),
    )
    g = rc.graph("torchscript", inputs=[rc.value("input_0", (2, 4))], ops=[chunk, kth])
    if views:
        constant_chunk = rc.op(
            "prim::ConstantChunk#1",
            "prim::ConstantChunk",
            module="split",
            inputs=["x.1"],
            outputs=["4"],
            source=rc.source(12),
        )
        g.metadata["converter_ops"] = {"coreml": [constant_chunk, kth], "onnx": [chunk, kth]}
    return g


def onnx_file(*ops: rc.Op) -> rc.ModelGraph:
    """An ONNX file at opset 17 (shape inference gave no types here)."""
    g = rc.graph("onnx", inputs=[rc.value("x", (1, 4))], ops=list(ops))
    g.metadata.update({"opsets": {"ai.onnx": 17}, "onnx_functions": {}, "onnx_types": {}})
    return g


def onnx_custom_and_new_ops() -> rc.ModelGraph:
    return onnx_file(
        rc.op("/act/Relu", "onnx::Relu", module="act", inputs=["x"], outputs=["a"]),
        rc.op("/act2/Gelu", "onnx::Gelu", module="act2", inputs=["a"], outputs=["b"]),
        rc.op("/head/Fancy", "mylib::Fancy", module="head", inputs=["b"], outputs=["c"]),
        rc.op("/head/Fancy_1", "mylib::Fancy", module="head", inputs=["c"], outputs=["y"]),
    )


def checked(g: rc.ModelGraph, **results: dict) -> rc.ModelGraph:
    """``g`` after ``--convert``: the pipeline stores each target's outcome before rules run."""
    g.checks = ChecksResult.from_dict(results)
    return g


KTH_COREML = (
    f"aten::kthvalue will not convert to Core ML: coremltools {CT} has no converter for 'kthvalue'"
)
ERFINV_COREML = (
    f"aten::erfinv will not convert to Core ML: coremltools {CT} has no converter for 'erfinv'"
)
KTH_ONNX = (
    f"aten::kthvalue will not convert to ONNX: torch.onnx {TORCH} has no ONNX function for "
    "aten::kthvalue"
)
FAILED_ON_KTH = {"ok": False, "kind": "error", "stage": COREML_STAGE, "op": "kthvalue",
                 "error": "RuntimeError: PyTorch convert function for op 'kthvalue' not "
                 "implemented."}  # fmt: skip

CASES = [
    pytest.param(
        two_unsupported(),
        {},
        [
            ("error", "aten::kthvalue (net.py:79)", "coreml:aten::kthvalue:kthvalue", KTH_COREML),
            ("error", "aten::erfinv (net.py:80)", "coreml:aten::erfinv:erfinv", ERFINV_COREML),
            ("error", "aten::kthvalue (net.py:79)", "onnx:aten::kthvalue:kthvalue", KTH_ONNX),
            (
                "error",
                "aten::erfinv (net.py:80)",
                "onnx:aten::erfinv:erfinv",
                f"aten::erfinv will not convert to ONNX: torch.onnx {TORCH} has no ONNX function "
                "for prims::erf_inv (what the converter decomposes it into)",
            ),
        ],
        id="every-unsupported-op-for-each-default-target",
    ),
    pytest.param(
        two_unsupported(),
        {"targets": ["coreml"]},
        [
            ("error", "aten::kthvalue (net.py:79)", "coreml:aten::kthvalue:kthvalue", KTH_COREML),
            ("error", "aten::erfinv (net.py:80)", "coreml:aten::erfinv:erfinv", ERFINV_COREML),
        ],
        id="only-the-configured-target",
    ),
    pytest.param(clean_export(), {}, [], id="supported-ops-do-not"),
    pytest.param(
        exported(kthvalue("a"), kthvalue("a"), kthvalue("b", line=81)),
        {"targets": ["coreml"], "rules": {"MG003": "warning"}},
        [
            ("warning", "a (net.py:79)", "coreml:aten::kthvalue:a", f"a: {KTH_COREML}"),
            ("warning", "b (net.py:81)", "coreml:aten::kthvalue:b", f"b: {KTH_COREML}"),
        ],
        id="one-finding-per-op-module-and-line",
    ),
    pytest.param(
        exported(
            rc.op(
                "adjoint",
                "aten::adjoint",
                overload="default",
                module="t",
                inputs=["x"],
                source=rc.source(5),
            ),
            dialect="ATEN",
        ),
        {"targets": ["coreml"]},
        [
            (
                "error",
                "t (net.py:5)",
                "coreml:aten::adjoint:t",
                f"t: aten::adjoint will not convert to Core ML: coremltools {CT} has no converter "
                "for 'adjoint'",
            )
        ],
        id="aten-dialect-is-looked-up-without-run-decompositions",
    ),
    pytest.param(
        traced(views=False),
        {},
        [
            (
                "error",
                "split (net.py:12)",
                "coreml:aten::chunk:split",
                f"split: aten::chunk will not convert to Core ML: coremltools {CT} has no "
                "converter for 'chunk'",
            ),
            ("error", "pick (net.py:13)", "coreml:aten::kthvalue:pick", f"pick: {KTH_COREML}"),
            (
                "error",
                "pick (net.py:13)",
                "onnx:aten::kthvalue:pick",
                "pick: aten::kthvalue will not convert to ONNX: torch.onnx (TorchScript exporter) "
                "has no symbolic for 'aten::kthvalue' at opset 20",
            ),
        ],
        id="torchscript-graph-as-saved",
    ),
    pytest.param(
        traced(views=True),
        {},
        [
            ("error", "pick (net.py:13)", "coreml:aten::kthvalue:pick", f"pick: {KTH_COREML}"),
            (
                "error",
                "pick (net.py:13)",
                "onnx:aten::kthvalue:pick",
                "pick: aten::kthvalue will not convert to ONNX: torch.onnx (TorchScript exporter) "
                "has no symbolic for 'aten::kthvalue' at opset 20",
            ),
        ],
        id="torchscript-graph-as-each-converter-sees-it",
    ),
    pytest.param(
        checked(two_unsupported(), coreml=FAILED_ON_KTH),
        {"targets": ["coreml"]},
        [
            (
                "error",
                "aten::kthvalue (net.py:79)",
                "coreml:aten::kthvalue:kthvalue",
                f"{KTH_COREML}; the Core ML conversion failed on it",
            ),
            (
                "error",
                "aten::erfinv (net.py:80)",
                "coreml:aten::erfinv:erfinv",
                f"{ERFINV_COREML} (not reached: the Core ML conversion failed earlier, at "
                "'kthvalue')",
            ),
        ],
        id="failed-conversion-says-which-op-it-stopped-at",
    ),
    pytest.param(
        checked(exported(kthvalue()), coreml={**FAILED_ON_KTH, "op": None}),
        {"targets": ["coreml"]},
        [
            (
                "error",
                "aten::kthvalue (net.py:79)",
                "coreml:aten::kthvalue:kthvalue",
                f"{KTH_COREML} (the Core ML conversion failed too, without naming an op)",
            )
        ],
        id="failed-conversion-without-an-op",
    ),
    pytest.param(
        checked(
            exported(kthvalue()), coreml={"ok": False, "kind": "timeout", "stage": COREML_STAGE}
        ),
        {"targets": ["coreml"]},
        [("error", "aten::kthvalue (net.py:79)", "coreml:aten::kthvalue:kthvalue", KTH_COREML)],
        id="timed-out-conversion-says-nothing-about-ops",
    ),
    pytest.param(
        onnx_custom_and_new_ops(),
        {"targets": ["onnx"]},
        [
            (
                "error",
                "act2",
                "onnx:onnx::Gelu:/act2/Gelu",
                "act2: Gelu is not in the ONNX standard at opset 17 (added in opset 20)",
            ),
            (
                "error",
                "head",
                "onnx:mylib::Fancy:/head/Fancy",
                "head: Fancy is custom domain 'mylib': runtimes need its custom-op library "
                "(1 more Fancy node(s) alike)",
            ),
        ],
        id="onnx-file-for-the-onnx-target",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg003(graph, conf, expected) -> None:
    assert rc.run("MG003", graph, **conf).findings == expected


CASES_SKIPPED = [
    pytest.param(
        rc.with_layers(
            rc.graph("state_dict"), rc.layer("fc", "Linear", rc.tensor("fc.weight", (4, 4)))
        ),
        {},
        "a state dict holds weights only, no graph of ops",
        id="state-dict-has-no-graph",
    ),
    pytest.param(
        rc.graph(
            "torchscript",
            notes=[
                "TorchScript ops need torch to read: install modelgate-lint[torch] (weights, "
                "training flags and traced input shapes were read without it)"
            ],
        ),
        {},
        "TorchScript ops need torch to read: install modelgate-lint[torch] (weights, training "
        "flags and traced input shapes were read without it)",
        id="graph-not-read-says-what-it-needs",
    ),
    pytest.param(
        onnx_custom_and_new_ops(),
        {"targets": ["coreml"]},
        "coreml: Core ML has no ONNX frontend (coremltools 6 removed it): check the PyTorch model",
        id="onnx-file-for-core-ml",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "reason"), CASES_SKIPPED)
def test_mg003_skipped(graph, conf, reason) -> None:
    result = rc.run("MG003", graph, **conf)
    assert (result.findings, result.skipped) == ([], reason)


CASES_NOTES = [
    pytest.param(
        checked(two_unsupported(), coreml={"ok": True}),
        {"targets": ["coreml"]},
        [
            "MG003: coreml: predicted that 2 op(s) would not convert (aten::erfinv, "
            "aten::kthvalue), but the Core ML conversion succeeded: the prediction was dropped"
        ],
        id="conversion-that-worked-drops-the-prediction",
    ),
    pytest.param(
        checked(
            exported(kthvalue()),
            onnx={"ok": False, "kind": "error", "stage": "running onnx.checker"},
        ),
        {"targets": ["onnx"]},
        [
            "MG003: onnx: predicted that 1 op(s) would not convert (aten::kthvalue), but the "
            "ONNX export succeeded: the prediction was dropped"
        ],
        id="export-that-failed-only-in-the-checker-counts-as-exported",
    ),
    pytest.param(
        exported(rc.op("adjoint", "aten::adjoint", overload="default", module="t")),
        {"targets": ["coreml"]},
        [
            "MG003: coreml: 1 op(s) are rewritten by the converter into ops modelgate has no "
            "record of, so their support is unknown: aten::adjoint"
        ],
        id="unknown-decomposition-is-a-note",
    ),
    pytest.param(
        checked(onnx_custom_and_new_ops(), onnx={"ok": True}),
        {"targets": ["onnx"]},
        [
            "MG003: onnx: predicted that 2 node(s) would not load (Fancy, Gelu), but the ONNX "
            "Runtime session was created: the prediction was dropped"
        ],
        id="onnx-session-created-drops-the-prediction",
        # without onnxruntime a second note says that kernels were not checked
        marks=pytest.mark.skipif(
            importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime"
        ),
    ),
]


@pytest.mark.parametrize(("graph", "conf", "notes"), CASES_NOTES)
def test_mg003_notes(graph, conf, notes) -> None:
    result = rc.run("MG003", graph, **conf)
    assert (result.findings, result.notes) == ([], notes)


# ---- ExecuTorch and LiteRT: tables observed on torch's OpInfo samples (targets/*_ops.json) --
OBSERVED = {
    "generated": {"torch": "2.13.0", "executorch": "1.5.1", "backend": "XNNPACK", "samples": 9},
    "ops": {
        "aten::sort": {"verdict": "fails", "stage": "loading", "samples": 1,
                       "missing": ["aten::sort.values"]},
        "aten::kthvalue": {"verdict": "fails", "stage": "lowering", "samples": 1,
                           "error": "SpecViolationError: Operator aten.kthvalue is not in "
                                    "Core ATen opset"},
        "aten::div.Tensor_mode": {"verdict": "mixed", "stage": "lowering", "failed": 1,
                                  "samples": 2, "error": "ValueError: bad rounding"},
        "aten::fft_rfft": {"verdict": "fails", "stage": "conversion", "samples": 6,
                           "error": "NotImplementedError: FFT normalization != 0"},
        "aten::topk": {"verdict": "ok"},
        "aten::add.Tensor": {"verdict": "ok"},
    },
}  # fmt: skip
SEEN = "observed with torch 2.13.0, executorch 1.5.1 on torch's OpInfo samples"


@pytest.fixture
def observed_table(monkeypatch):
    monkeypatch.setattr(
        opsupport, "observed", lambda *a: opsupport.Observed(OBSERVED, a[2])
    )  # runtime


def _edge_graph() -> rc.ModelGraph:
    def op(name: str, target: str, overload: str, line: int, module: str = "") -> rc.Op:
        return rc.op(name, target, overload=overload, module=module, source=rc.source(line))

    return exported(
        op("sort", "aten::sort", "default", 16, "head"),
        op("topk", "aten::topk", "default", 17),
        op("kthvalue", "aten::kthvalue", "default", 18),
        op("div", "aten::div", "Tensor_mode", 19),
        op("fft_rfft", "aten::fft_rfft", "default", 23),  # failed, but not for want of support
        op("add_", "aten::add_", "Tensor", 20),  # in place: judged as aten::add.Tensor
        op("getitem", "_operator.getitem", "", 21),
        op("mystery", "mylib::mystery", "default", 22),
    )


def test_an_observed_table_flags_what_failed_and_notes_what_depends(observed_table) -> None:
    result = rc.run("MG003", _edge_graph(), targets=["executorch"])
    assert result.findings == [
        ("error", "head (net.py:16)", "executorch:aten::sort:head",
         "head: aten::sort will not load in ExecuTorch: the program then needs "
         f"aten::sort.values, which the ExecuTorch runtime has no kernel for ({SEEN})"),
        ("error", "aten::kthvalue (net.py:18)", "executorch:aten::kthvalue:kthvalue",
         "aten::kthvalue will not convert to ExecuTorch: lowering failed: SpecViolationError: "
         f"Operator aten.kthvalue is not in Core ATen opset ({SEEN})"),
    ]  # fmt: skip
    assert result.notes == [
        "MG003: executorch: 2 op(s) failed on torch's samples in a way their arguments may "
        "decide (--convert executorch tells): aten::div.Tensor_mode: "
        "1 of its 2 OpInfo samples failed: lowering failed: ValueError: bad rounding; "
        "aten::fft_rfft: 6 of its 6 OpInfo samples failed, maybe for their arguments: "
        "conversion failed: NotImplementedError: FFT normalization != 0",
        "MG003: executorch: 1 op(s) are not among the ops observed on torch's OpInfo samples, "
        "so their support is unknown: mylib::mystery",
    ]


def test_a_lowering_that_then_would_not_load_drops_the_prediction_for_mg108(
    observed_table,
) -> None:
    lowered = {"ok": False, "kind": "error", "stage": "loading the program in the ExecuTorch "
               "runtime", "op": "sort", "missing_kernels": ["aten::sort.values"]}  # fmt: skip
    result = rc.run("MG003", checked(_edge_graph(), executorch=lowered), targets=["executorch"])
    assert result.findings == []
    assert result.notes == [
        "MG003: executorch: predicted that 2 op(s) would not convert or load "
        "(aten::kthvalue, aten::sort); the ExecuTorch lowering "
        "succeeded and the ExecuTorch runtime refused the program, which MG108 reports: the "
        "prediction was dropped"
    ]
