"""Each rule on small models built here: the exact findings expected, by rule and location."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

import modelfactory

from modelgate import config as cfg
from modelgate import driver

FACTORY_FILE = str(Path(modelfactory.__file__).resolve().parent / "torchmodels.py")


def findings(path: Path, only: str | None = None, **conf: Any) -> list[tuple[str, str | None]]:
    """(rule, module or tensor or input) for every finding, in the report's order."""
    config = cfg.from_dict(conf)
    report = driver.run([str(path)], config)
    out = []
    for f in report.models[0].findings:
        if only is None or f.rule in only.split(","):
            loc = f.location
            out.append((f.rule, loc.module or loc.tensor or loc.input or loc.member or loc.op))
    return out


def model_report(path: Path, **conf: Any):
    return driver.run([str(path)], cfg.from_dict(conf)).models[0]


# -- MG001 oversized-linear ---------------------------------------------------------------------
def _flatten_head(models, fmt: str) -> Path:
    model = modelfactory.build("flatten_head", pool=(32, 32), out=256).eval()
    if fmt == "state_dict":
        return models.state_dict(model)
    if fmt == "checkpoint":
        return models.state_dict(model, wrap="model_state_dict")
    if fmt == "legacy":
        return models.state_dict(model, legacy=True)
    if fmt == "safetensors":
        return models.safetensors(model.state_dict())
    if fmt == "torchscript":
        return models.torchscript(model, shape=(1, 3, 32, 32))
    return models.pt2(model, shape=(1, 3, 32, 32))


@pytest.mark.parametrize(
    "fmt", ["state_dict", "checkpoint", "legacy", "safetensors", "torchscript", "pt2"]
)
def test_mg001_flags_the_flattened_head_in_every_format(models, fmt: str) -> None:
    path = _flatten_head(models, fmt)
    assert findings(path, "MG001") == [("MG001", "head")]


def test_mg001_message_has_shape_parameters_size_and_share(models) -> None:
    path = _flatten_head(models, "pt2")
    (finding,) = [f for f in model_report(path).findings if f.rule == "MG001"]
    # 8*32*32 = 8192 inputs, 256 outputs: 2,097,408 parameters with bias
    assert finding.message.startswith("head: Linear 256x8192 holds 2.1M parameters (8.4 MB, 100%")
    assert "fed by a flattened 8x32x32 feature map" in finding.message
    assert finding.location.source is not None
    assert str(Path(finding.location.source.file).resolve()) == FACTORY_FILE


def test_mg001_state_dict_says_2d_weight_not_a_class(models) -> None:
    path = _flatten_head(models, "state_dict")
    (finding,) = [f for f in model_report(path).findings if f.rule == "MG001"]
    assert finding.message.startswith("head: 2-D weight 256x8192 holds")


def test_mg001_clean_model_and_options(models) -> None:
    clean = models.pt2(modelfactory.build("clean").eval(), name="clean.pt2")
    assert findings(clean, "MG001") == []
    path = _flatten_head(models, "pt2")
    # a higher floor than the layer's size silences it; max_parameters flags regardless of share
    assert findings(path, "MG001", rules={"MG001": {"min_parameters": 10_000_000}}) == []
    assert findings(clean, "MG001", rules={"MG001": {"max_parameters": 50}}) == [("MG001", "fc")]


# -- MG002 fp16-batchnorm -----------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["state_dict", "safetensors", "pickled", "torchscript", "pt2"])
def test_mg002_half_batchnorm(models, fmt: str) -> None:
    model = modelfactory.build("clean").eval().half()
    if fmt == "state_dict":
        path = models.state_dict(model)
    elif fmt == "safetensors":
        path = models.safetensors(model.state_dict())
    elif fmt == "pickled":
        path = models.whole_module(model)
    elif fmt == "torchscript":
        import torch

        path = models.path("half.ts.pt")
        torch.jit.trace(model, torch.randn(1, 3, 16, 16).half()).save(str(path))
    else:
        import torch

        path = models.path("half.pt2")
        ep = torch.export.export(model, (torch.randn(1, 3, 16, 16).half(),))
        torch.export.save(ep, str(path))
        assert findings(path, "MG002") == []  # consistently FP16: coremltools 9 converts it
        return
    assert findings(path, "MG002") == [("MG002", "bn")]


def test_mg002_mixed_dtypes_in_a_graph(models) -> None:
    """FP32 input into a BatchNormalization with FP16 parameters: flagged in any graph."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    params = [
        numpy_helper.from_array(np.ones(3, np.float16), name)
        for name in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")
    ]
    path = models.onnx(
        [helper.make_node("BatchNormalization", ["x", *(p.name for p in params)], ["y"],
                          name="/bn/BatchNormalization")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        params,
    )  # fmt: skip
    (finding,) = [f for f in model_report(path).findings if f.rule == "MG002"]
    assert finding.location.module == "bn"
    assert finding.message == "bn: batch norm gets float32 input but its parameters are float16"


def test_mg002_float_model_is_clean(models) -> None:
    assert findings(models.state_dict(modelfactory.build("clean")), "MG002") == []


# -- MG004 dropout-in-eval ----------------------------------------------------------------------
def test_mg004_training_mode_export_flags_dropout_and_batchnorm(models) -> None:
    path = models.pt2(modelfactory.build("dropout").train())
    assert sorted(findings(path, "MG004")) == [("MG004", "bn"), ("MG004", "drop")]


def test_mg004_training_mode_trace_flags_dropout_with_source(models) -> None:
    path = models.torchscript(modelfactory.build("dropout").train())
    report = model_report(path)
    got = [(f.rule, f.location.module) for f in report.findings if f.rule == "MG004"]
    assert sorted(got) == [("MG004", "bn"), ("MG004", "drop")]
    sources = {
        str(Path(f.location.source.file).resolve()) for f in report.findings if f.rule == "MG004"
    }
    assert sources == {FACTORY_FILE}


def test_mg004_eval_mode_is_clean(models) -> None:
    model = modelfactory.build("dropout").eval()
    assert findings(models.pt2(model), "MG004") == []
    assert findings(models.torchscript(model), "MG004") == []
    assert findings(models.whole_module(model), "MG004") == []


def test_mg004_pickled_module_saved_in_training_mode(models) -> None:
    path = models.whole_module(modelfactory.build("dropout").train())
    report = model_report(path, pickle={"allow": ["torchmodels.*"]})
    (finding,) = [f for f in report.findings if f.rule == "MG004"]
    assert "saved in training mode: 2 dropout / batch-norm layers" in finding.message


# -- MG005 dynamic-shape ------------------------------------------------------------------------
def test_mg005_dynamic_batch_names_input_dim_and_range(models) -> None:
    import torch

    batch = torch.export.Dim("batch", min=2, max=16)
    path = models.pt2(modelfactory.build("clean").eval(), shape=(4, 3, 16, 16),
                      dynamic_shapes={"x": {0: batch}})  # fmt: skip
    (finding,) = [f for f in model_report(path).findings if f.rule == "MG005"]
    assert finding.location.input == "x"
    assert "dimension 0 is dynamic" in finding.message
    assert "ct.RangeDim(2, 16)" in finding.message
    # ONNX alone takes dynamic shapes as they are
    assert findings(path, "MG005", targets=["onnx"]) == []


def test_mg005_data_dependent_op(models) -> None:
    path = models.pt2(modelfactory.build("data_dependent").eval(), shape=(2, 4))
    assert findings(path, "MG005") == [("MG005", "nonzero")]
    (finding,) = [f for f in model_report(path).findings if f.rule == "MG005"]
    assert "nonzero produces a data-dependent output shape" in finding.message


def test_mg005_static_model_is_clean(models) -> None:
    assert findings(models.pt2(modelfactory.build("clean").eval()), "MG005") == []


# -- MG006 adaptive-pool-expansion --------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_mg006_non_dividing_pool(models, fmt: str) -> None:
    model = modelfactory.build("odd_pool", out=(7, 7)).eval()
    save = models.pt2 if fmt == "pt2" else models.torchscript
    path = save(model, shape=(1, 3, 10, 10))
    (finding,) = [f for f in model_report(path).findings if f.rule == "MG006"]
    assert finding.location.module == "pool"
    assert "AdaptiveAvgPool2d to 7x7 from a 10x10 input" in finding.message
    assert "49 windows" in finding.message


def test_mg006_upsampling_pool(models) -> None:
    path = models.pt2(modelfactory.build("odd_pool", out=(12, 5)).eval(), shape=(1, 3, 10, 10))
    (finding,) = [f for f in model_report(path).findings if f.rule == "MG006"]
    assert "10 into 12" in finding.message and "10 into 5" not in finding.message


def test_mg006_dividing_pool_is_clean(models) -> None:
    path = models.pt2(modelfactory.build("odd_pool", out=(5, 5)).eval(), shape=(1, 3, 10, 10))
    assert findings(path, "MG006") == []
    ts = models.torchscript(modelfactory.build("odd_pool", out=(5, 5)).eval(), shape=(1, 3, 10, 10))
    assert findings(ts, "MG006") == []


def test_mg006_shapes_from_the_command_line_win(models) -> None:
    """A TorchScript traced at 10x10 but deployed at 14x14: 14 % 7 == 0, so the pool is fine."""
    path = models.torchscript(
        modelfactory.build("odd_pool", out=(7, 7)).eval(), shape=(1, 3, 10, 10)
    )
    assert findings(path, "MG006") == [("MG006", "pool")]
    assert findings(path, "MG006", inputs=[{"shape": [1, 3, 14, 14]}]) == []


def test_mg006_without_a_graph_says_why(models) -> None:
    path = models.state_dict(modelfactory.build("odd_pool").eval())
    report = model_report(path)
    assert "MG006" not in [f.rule for f in report.findings]
    path = models.whole_module(modelfactory.build("odd_pool").eval())
    report = model_report(path, pickle={"allow": ["torchmodels.*"]})
    assert "no graph" in report.skipped["MG006"]


# -- MG007 fp64-weights -------------------------------------------------------------------------
def test_mg007_double_weights(models) -> None:
    model = modelfactory.build("clean").double()
    assert findings(models.state_dict(model), "MG007") == [("MG007", "fc.weight")] or findings(
        models.state_dict(model), "MG007"
    ) == [("MG007", "conv.weight")]
    assert findings(models.state_dict(modelfactory.build("clean")), "MG007") == []


# -- config reaches rules -----------------------------------------------------------------------
def test_rule_off_and_severity_from_config(models) -> None:
    path = models.pt2(modelfactory.build("dropout").train())
    assert findings(path, "MG004", rules={"MG004": "off"}) == []
    report = model_report(path, rules={"dropout-in-eval": "warning"})
    assert {f.severity for f in report.findings if f.rule == "MG004"} == {"warning"}
    assert report.passed
