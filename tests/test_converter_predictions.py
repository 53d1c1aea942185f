"""Rules that predict what a converter will do, checked against real conversions.

MG003: flagged ops do make coremltools / torch.onnx fail, and models with nothing flagged do
convert. MG002: a half-precision TorchScript model it flags fails coremltools; the FP16
.pt2 it leaves alone converts. MG006: the pooling it flags does expand into one op per window.
Each conversion runs in its own process (tests/convert_probe.py), two at a time.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("coremltools")

import convert_probe
import modelfactory

from modelgate import config as cfg
from modelgate import driver, opsupport

# model, input shape
MODELS = {
    "clean": (1, 3, 16, 16),
    "two_unsupported": (1, 8),
    "cumprod": (1, 8),
    "half": (1, 3, 16, 16),
    "odd_pool": (1, 3, 10, 10),
    "even_pool": (1, 3, 10, 10),
}
# (model, file kind, target): what the real conversion must do, and what MG003 must predict
CASES = [
    ("clean", "ts", "coreml"),
    ("clean", "pt2", "coreml"),
    ("clean", "pt2", "onnx"),
    ("clean", "ts", "onnx"),
    ("two_unsupported", "ts", "coreml"),
    ("two_unsupported", "pt2", "coreml"),
    ("two_unsupported", "pt2", "onnx"),
    ("two_unsupported", "ts", "onnx"),
    ("cumprod", "pt2", "coreml"),
    ("cumprod", "pt2", "onnx"),
    ("half", "ts", "coreml"),
    ("half", "pt2", "coreml"),
    ("odd_pool", "ts", "coreml"),
    ("even_pool", "ts", "coreml"),
]


def start_background(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build the files at the start of the session; their conversions run in the background
    (tests/background.py) until :func:`conversions` reads them."""
    _AHEAD["files"] = _build(tmp_path_factory)
    convert_probe.submit(__name__, _runs(_AHEAD["files"]))


_AHEAD: dict[str, dict[tuple[str, str], Path]] = {}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    return _AHEAD.get("files") or _build(tmp_path_factory)


def _build(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    import torch

    f = modelfactory.Factory(tmp_path_factory.mktemp("predictions"))
    built = {
        "half": modelfactory.build("clean").eval().half(),
        "odd_pool": modelfactory.build("odd_pool", out=(7, 7)).eval(),
        "even_pool": modelfactory.build("odd_pool", out=(5, 5)).eval(),
    }
    out = {}
    for name, shape in MODELS.items():
        model = built.get(name) or modelfactory.build(name).eval()
        if name == "half":
            example = torch.randn(*shape).half()
            out[(name, "ts")] = f.path("half.ts.pt")
            torch.jit.trace(model, example).save(str(out[(name, "ts")]))
            out[(name, "pt2")] = f.path("half.pt2")
            torch.export.save(torch.export.export(model, (example,)), str(out[(name, "pt2")]))
            continue
        out[(name, "ts")] = f.torchscript(model, shape=shape, name=f"{name}.ts.pt")
        out[(name, "pt2")] = f.pt2(model, shape=shape, name=f"{name}.pt2")
    return out


def _runs(files: dict[tuple[str, str], Path]) -> list[tuple[str, str, str]]:
    return [
        (str(files[(name, kind)]), target, "x".join(str(d) for d in MODELS[name]))
        for name, kind, target in CASES
    ]


@pytest.fixture(scope="module")
def conversions(files: dict[tuple[str, str], Path]) -> dict[tuple[str, str, str], dict]:
    return dict(zip(CASES, convert_probe.results(__name__, _runs(files)), strict=True))


def mg003(path: Path, target: str, rule: str = "MG003") -> list:
    report = driver.run([str(path)], cfg.from_dict({"targets": [target]}))
    return [f for f in report.models[0].findings if f.rule == rule]


def predicted(path: Path, target: str) -> list[str]:
    return sorted({f.location.op for f in mg003(path, target)})


def _names(finding) -> set[str]:
    """Op names a finding blames: the op, and what the converter decomposes it into."""
    names = {finding.location.op}
    names.update(re.findall(r"\b(\w+::\w+)", finding.message.split(": ", 2)[-1]))
    return {n.replace("::", ".") for n in names} | {n.split("::")[-1] for n in names}


MG003_CASES = [c for c in CASES if c[0] in ("clean", "two_unsupported", "cumprod")]


@pytest.mark.slow
@pytest.mark.parametrize("case", MG003_CASES, ids=["-".join(c) for c in MG003_CASES])
def test_prediction_matches_the_converter(files, conversions, case) -> None:
    name, kind, target = case
    outcome = conversions[case]
    findings = mg003(files[(name, kind)], target)
    if not findings:
        assert outcome["ok"], f"MG003 flagged nothing but {target} failed: {outcome.get('error')}"
        return
    assert not outcome["ok"], f"MG003 flagged {findings} but {target} converted"
    # the converter stops at the first op it cannot handle: one MG003 blamed
    blamed = set().union(*(_names(f) for f in findings))
    hit = [n for n in blamed if re.search(rf"\b{re.escape(n)}\b", outcome["error"])]
    assert hit, f"converter failed on something MG003 did not flag: {outcome['error'][:400]}"


@pytest.mark.slow
def test_every_missing_op_at_once(files, conversions) -> None:
    """coremltools itself can list every op it lacks (TorchScript path): MG003 says the same."""
    outcome = conversions[("two_unsupported", "ts", "coreml")]
    assert outcome["missing"] == ["erfinv", "kthvalue"]
    assert predicted(files[("two_unsupported", "ts")], "coreml") == [
        "aten::erfinv",
        "aten::kthvalue",
    ]
    assert predicted(files[("two_unsupported", "pt2")], "coreml") == [
        "aten::erfinv",
        "aten::kthvalue",
    ]


@pytest.mark.slow
def test_mg002_half_torchscript_fails_and_half_export_converts(files, conversions) -> None:
    flagged_ts = mg003(files[("half", "ts")], "coreml", "MG002")
    assert [f.location.module for f in flagged_ts] == ["bn"]
    outcome = conversions[("half", "ts", "coreml")]
    assert not outcome["ok"] and "fp16" in outcome["error"]
    assert mg003(files[("half", "pt2")], "coreml", "MG002") == []
    assert conversions[("half", "pt2", "coreml")]["ok"]
    assert conversions[("clean", "ts", "coreml")]["ok"]  # the same model in FP32 converts


@pytest.mark.slow
def test_mg006_flagged_pool_expands_per_window(files, conversions) -> None:
    (finding,) = mg003(files[("odd_pool", "ts")], "coreml", "MG006")
    assert "49 windows" in finding.message
    assert mg003(files[("even_pool", "ts")], "coreml", "MG006") == []
    odd, even = (
        conversions[("odd_pool", "ts", "coreml")],
        conversions[("even_pool", "ts", "coreml")],
    )
    assert odd["ok"] and even["ok"]
    assert odd["ops"] - even["ops"] >= 49, (odd["ops"], even["ops"])


def test_the_shipped_snapshot_matches_the_installed_coremltools() -> None:
    """Fails when coremltools is upgraded: regenerate with python tools/gen_opsupport.py."""
    import coremltools
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY
    from coremltools.converters.mil.frontend.torch.utils import (
        sanitize_op_kind,
        unify_inplace_and_functional,
    )

    support = opsupport.load()
    assert support.coreml_version == coremltools.__version__
    live = set(_TORCH_OPS_REGISTRY.name_to_func_mapping)
    assert support.coreml_registry == live
    # modelgate's copies of the converter's name handling agree with the real functions
    names = (
        live
        | set(support.snapshot["aten"]["mutable"])
        | set(support.snapshot["aten"]["cia_decomposed"])
    )
    for name in names:
        assert opsupport.ct_sanitize(name) == sanitize_op_kind(name), name
        assert opsupport.ct_unify_inplace(name) == unify_inplace_and_functional(name), name


def test_onnx_files_are_checked_against_the_standard(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    f = modelfactory.Factory(tmp_path)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    path = f.onnx(
        [helper.make_node("Relu", ["x"], ["a"], name="/act/Relu"),
         helper.make_node("Gelu", ["a"], ["b"], name="/act2/Gelu"),  # Gelu arrived in opset 20
         helper.make_node("Fancy", ["b"], ["y"], name="/head/Fancy", domain="mylib")],
        [x], [y], opset=17,
    )  # fmt: skip
    report = driver.run([str(path)], cfg.from_dict({"targets": ["onnx", "coreml"]}))
    got = [(f.location.module, f.message) for f in report.models[0].findings if f.rule == "MG003"]
    assert got == [
        ("act2", "act2: Gelu is not in the ONNX standard at opset 17 (added in opset 20)"),
        ("head", "head: Fancy is custom domain 'mylib': runtimes need its custom-op library"),
    ]


def test_torchscript_lookup_is_the_converters() -> None:
    """coremltools sanitizes a TorchScript kind twice before the registry lookup (once building
    its graph, once in get_func): modelgate's key finds what the converter finds."""
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY
    from coremltools.converters.mil.frontend.torch.utils import sanitize_op_kind

    support = opsupport.load()
    kinds = ["aten::__getitem__", "aten::__and__", "aten::add_", "aten::Float", "aten::Int",
             "aten::Bool", "prim::ConstantChunk", "prim::RaiseException", "aten::chunk",
             "aten::_convolution", "aten::relu_", "aten::kthvalue",
             "prim::NumToTensor"]  # fmt: skip
    for kind in kinds:
        found = _TORCH_OPS_REGISTRY.get_func(sanitize_op_kind(kind)) is not None
        assert (opsupport.ct_torchscript_key(kind) in support.coreml_registry) == found, kind
