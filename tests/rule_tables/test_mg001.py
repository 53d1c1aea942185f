"""MG001 oversized-linear on graphs built in memory: graph -> the exact findings."""

from __future__ import annotations

import pytest
import rule_cases as rc

LINEAR = "torch.nn.modules.linear.Linear"
CONV = "torch.nn.modules.conv.Conv2d"


def _conv(fmt_source: int | None = None) -> rc.Layer:
    """conv: Conv2d(3, 8, 3): 224 parameters."""
    source = rc.source(fmt_source) if fmt_source else None
    return rc.layer("conv", CONV, rc.tensor("conv.weight", (8, 3, 3, 3)),
                    rc.tensor("conv.bias", (8,)), source=source)  # fmt: skip


def flatten_head_export() -> rc.ModelGraph:
    """torch.export of pool (32, 32) -> flatten -> Linear(8*32*32, 256), as the .pt2 loader
    reads it: ops by schema name, root ops in module "", layers with their source line."""
    g = rc.graph(
        "torch_export",
        inputs=[rc.value("x", (1, 3, 32, 32))],
        ops=[
            rc.op("conv2d", "aten::conv2d", overload="default", module="conv",
                  inputs=["x", "p_conv_weight", "p_conv_bias"], outputs=["conv2d"]),
            rc.op("relu", "aten::relu", overload="default", module="",
                  inputs=["conv2d"], outputs=["relu"]),
            rc.op("adaptive_avg_pool2d", "aten::adaptive_avg_pool2d", overload="default",
                  module="pool", inputs=["relu"], outputs=["adaptive_avg_pool2d"],
                  args={"output_size": [32, 32]}),
            rc.op("flatten", "aten::flatten", overload="using_ints", module="",
                  inputs=["adaptive_avg_pool2d"], outputs=["flatten"], args={"start_dim": 1}),
            rc.op("linear", "aten::linear", overload="default", module="head",
                  inputs=["flatten", "p_head_weight", "p_head_bias"], outputs=["linear"],
                  source=rc.source(36)),
        ],
    )  # fmt: skip
    rc.with_values(
        g,
        rc.value("conv2d", (1, 8, 32, 32)),
        rc.value("relu", (1, 8, 32, 32)),
        rc.value("adaptive_avg_pool2d", (1, 8, 32, 32)),
        rc.value("flatten", (1, 8192)),
        rc.value("linear", (1, 256)),
    )
    return rc.with_layers(
        g,
        _conv(35),
        rc.layer("head", LINEAR, rc.tensor("head.weight", (256, 8192)),
                 rc.tensor("head.bias", (256,)), source=rc.source(36)),
    )  # fmt: skip


def flatten_dropout_head_traced() -> rc.ModelGraph:
    """TorchScript trace of pool (16, 16) -> flatten -> Dropout (eval) -> Linear(2048, 512):
    ops named "kind#index", inputs that are constants, layers without a source of their own."""
    g = rc.graph(
        "torchscript",
        inputs=[rc.value("input_0", (1, 3, 16, 16))],
        ops=[
            rc.op("aten::adaptive_avg_pool2d#19", "aten::adaptive_avg_pool2d", module="pool",
                  inputs=["input.1", "24"], outputs=["x.1"], args={"output_size": [16, 16]}),
            rc.op("aten::flatten#20", "aten::flatten", inputs=["x.1", "3", "2"],
                  outputs=["input0.1"], args={"start_dim": 1, "end_dim": -1},
                  source=rc.source(36)),
            rc.op("aten::dropout#21", "aten::dropout", module="drop",
                  inputs=["input0.1", "40", "41"], outputs=["input1.1"],
                  args={"p": 0.5, "train": False}, source=rc.source(36)),
            rc.op("aten::linear#23", "aten::linear", module="head",
                  inputs=["input1.1", "weight.1", "bias.1"], outputs=["28"],
                  source=rc.source(37)),
        ],
    )  # fmt: skip
    rc.with_values(g, rc.value("x.1", (1, 8, 16, 16)), rc.value("input0.1", (1, 2048)))
    return rc.with_layers(
        g,
        _conv(),
        rc.layer("head", LINEAR, rc.tensor("head.weight", (512, 2048)),
                 rc.tensor("head.bias", (512,))),
    )  # fmt: skip


def state_dict(*layers: rc.Layer) -> rc.ModelGraph:
    """A bare state dict: layers grouped from tensor names, types guessed (``inferred``)."""
    for item in layers:
        item.inferred = True
    return rc.with_layers(rc.graph("state_dict"), *layers)


def clean_state_dict() -> rc.ModelGraph:
    """conv (224), bn (16 parameters + buffers), fc 10x8 (90): 330 parameters."""
    return state_dict(
        rc.layer("conv", "Conv2d", rc.tensor("conv.weight", (8, 3, 3, 3)),
                 rc.tensor("conv.bias", (8,))),
        rc.layer("bn", "BatchNorm", rc.tensor("bn.weight", (8,)), rc.tensor("bn.bias", (8,)),
                 rc.tensor("bn.running_mean", (8,), kind="buffer"),
                 rc.tensor("bn.running_var", (8,), kind="buffer"),
                 rc.tensor("bn.num_batches_tracked", (), "int64", kind="buffer")),
        rc.layer("fc", "Linear", rc.tensor("fc.weight", (10, 8)), rc.tensor("fc.bias", (10,))),
    )  # fmt: skip


def flatten_head_state_dict() -> rc.ModelGraph:
    return state_dict(
        rc.layer("conv", "Conv2d", rc.tensor("conv.weight", (8, 3, 3, 3)),
                 rc.tensor("conv.bias", (8,))),
        rc.layer("head", "Linear", rc.tensor("head.weight", (256, 8192)),
                 rc.tensor("head.bias", (256,))),
    )  # fmt: skip


def big_conv_and_linear() -> rc.ModelGraph:
    """A 3.0M-parameter 1x1 conv and a 2.0M-parameter Linear fed by a mean (not a flatten):
    the Linear holds 40% of the model."""
    g = rc.graph(
        "torch_export",
        inputs=[rc.value("x", (1, 3000, 7, 7))],
        ops=[
            rc.op("conv2d", "aten::conv2d", overload="default", module="proj",
                  inputs=["x", "p_proj_weight"], outputs=["conv2d"]),
            rc.op("mean", "aten::mean", overload="dim", module="", inputs=["conv2d"],
                  outputs=["mean"], args={"dim": [2, 3]}),
            rc.op("linear", "aten::linear", overload="default", module="fc",
                  inputs=["mean", "p_fc_weight", "p_fc_bias"], outputs=["linear"],
                  source=rc.source(50)),
        ],
    )  # fmt: skip
    rc.with_values(g, rc.value("conv2d", (1, 1000, 7, 7)), rc.value("mean", (1, 1000)))
    return rc.with_layers(
        g,
        rc.layer("proj", CONV, rc.tensor("proj.weight", (1000, 3000, 1, 1)),
                 source=rc.source(49)),
        rc.layer("fc", LINEAR, rc.tensor("fc.weight", (1000, 2000)),
                 rc.tensor("fc.bias", (1000,)), source=rc.source(50)),
    )  # fmt: skip


def onnx_head(flatten: bool) -> rc.ModelGraph:
    """An ONNX export: layers keyed by node name ("/head/Gemm"), ops by scope module."""
    ops = [
        rc.op("/head/Gemm", "onnx::Gemm", module="head", args={"transB": 1},
              inputs=["/Flatten_output_0" if flatten else "x", "head.weight", "head.bias"],
              outputs=["y"]),
    ]  # fmt: skip
    if flatten:
        ops.insert(0, rc.op("/Flatten", "onnx::Flatten", inputs=["x"],
                            outputs=["/Flatten_output_0"], args={"axis": 1}))  # fmt: skip
    shape = (1, 8, 32, 32) if flatten else (1, 8192)
    g = rc.graph("onnx", inputs=[rc.value("x", shape)], ops=ops)
    rc.with_values(g, rc.value("/Flatten_output_0", (1, 8192)), rc.value("y", (1, 256)))
    head = rc.layer("/head/Gemm", "Gemm",
                    rc.tensor("head.weight", (256, 8192), kind="initializer"),
                    rc.tensor("head.bias", (256,), kind="initializer"),
                    attrs={"transB": 1, "module": "head"})  # fmt: skip
    return rc.with_layers(g, head)


def root_linear_state_dict() -> rc.ModelGraph:
    """torch.save(nn.Linear(2048, 1000).state_dict()): tensors "weight" and "bias", one layer
    at the root (path "")."""
    return state_dict(
        rc.layer("", "Linear", rc.tensor("weight", (1000, 2048)), rc.tensor("bias", (1000,)))
    )


CASES = [
    pytest.param(
        flatten_head_export(),
        {},
        [
            (
                "error",
                "head (net.py:36)",
                "head",
                "head: Linear 256x8192 holds 2.1M parameters (8.4 MB, 100% of the model); "
                "it is fed by a flattened 8x32x32 feature map",
            )
        ],
        id="flattened-head-export-fires",
    ),
    pytest.param(
        flatten_dropout_head_traced(),
        {},
        [
            (
                "error",
                "head (net.py:37)",
                "head",
                "head: Linear 512x2048 holds 1.0M parameters (4.2 MB, 100% of the model); "
                "it is fed by a flattened 8x16x16 feature map",
            )
        ],
        id="traced-flatten-through-dropout-fires-with-op-source",
    ),
    pytest.param(
        flatten_head_state_dict(),
        {},
        [
            (
                "error",
                "head",
                "head",
                "head: 2-D weight 256x8192 holds 2.1M parameters (8.4 MB, 100% of the model)",
            )
        ],
        id="state-dict-says-2d-weight-not-a-class",
    ),
    pytest.param(
        onnx_head(flatten=False),
        {},
        [
            (
                "error",
                "/head/Gemm",
                "/head/Gemm",
                "/head/Gemm: Gemm 256x8192 holds 2.1M parameters (8.4 MB, 100% of the model)",
            )
        ],
        id="onnx-gemm-fires",
    ),
    pytest.param(
        onnx_head(flatten=True),
        {},
        [
            (
                "error",
                "/head/Gemm",
                "/head/Gemm",
                "/head/Gemm: Gemm 256x8192 holds 2.1M parameters (8.4 MB, 100% of the model); "
                "it is fed by a flattened 8x32x32 feature map",
            )
        ],
        id="onnx-flatten-into-gemm-names-the-feeder",
    ),
    pytest.param(clean_state_dict(), {}, [], id="pooled-small-head-does-not"),
    pytest.param(
        state_dict(
            rc.layer("tok_emb", "Embedding", rc.tensor("tok_emb.weight", (50000, 768))),
            rc.layer(
                "head", "Linear", rc.tensor("head.weight", (10, 768)), rc.tensor("head.bias", (10,))
            ),
        ),
        {},
        [],
        id="embedding-table-is-not-a-linear",
    ),
    pytest.param(big_conv_and_linear(), {}, [], id="linear-below-min-share-does-not"),
    pytest.param(
        big_conv_and_linear(),
        {"rules": {"MG001": {"min_share": 0.4}}},
        [
            (
                "error",
                "fc (net.py:50)",
                "fc",
                "fc: Linear 1000x2000 holds 2.0M parameters (8.0 MB, 40% of the model)",
            )
        ],
        id="min-share-option-fires-without-a-feeder",
    ),
    pytest.param(
        flatten_head_export(),
        {"rules": {"MG001": {"min_parameters": 10_000_000}}},
        [],
        id="min-parameters-option-silences",
    ),
    pytest.param(
        clean_state_dict(),
        {"rules": {"oversized-linear": {"severity": "warning", "max_parameters": 50}}},
        [
            (
                "warning",
                "fc",
                "fc",
                "fc: 2-D weight 10x8 holds 90 parameters (360 B, 27% of the model)",
            )
        ],
        id="max-parameters-flags-whatever-the-share-at-the-configured-severity",
    ),
    pytest.param(
        root_linear_state_dict(),
        {},
        [
            (
                "error",
                "weight",
                "",
                "(root): 2-D weight 1000x2048 holds 2.0M parameters (8.2 MB, 100% of the model)",
            )
        ],
        id="root-linear-names-the-root",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg001(graph, conf, expected) -> None:
    assert rc.run("MG001", graph, **conf).findings == expected
