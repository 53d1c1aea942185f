"""MG002 fp16-batchnorm on graphs built in memory: graph -> the exact findings."""

from __future__ import annotations

import pytest
import rule_cases as rc

BN = "torch.nn.modules.batchnorm.BatchNorm2d"
CAST = "the model was cast to half precision, which coremltools' PyTorch frontend cannot convert"


def bn_layer(type_: str = BN, dtype: str = "float16", stats: str | None = None) -> rc.Layer:
    """bn: BatchNorm2d(8); weight and bias in ``dtype``, running stats in ``stats`` (same)."""
    stats = stats or dtype
    return rc.layer(
        "bn",
        type_,
        rc.tensor("bn.weight", (8,), dtype),
        rc.tensor("bn.bias", (8,), dtype),
        rc.tensor("bn.running_mean", (8,), stats, kind="buffer"),
        rc.tensor("bn.running_var", (8,), stats, kind="buffer"),
        rc.tensor("bn.num_batches_tracked", (), "int64", kind="buffer"),
    )


def state_dict(dtype: str = "float16", stats: str | None = None) -> rc.ModelGraph:
    layer = bn_layer("BatchNorm", dtype, stats)
    layer.inferred = True
    return rc.with_layers(rc.graph("state_dict"), layer)


def traced(x: str, params: str) -> rc.ModelGraph:
    """A TorchScript trace: aten::batch_norm with input ``x`` and parameters in ``params``;
    inputs 5.. are constants (no value), as after the loader's shape inference."""
    g = rc.graph(
        "torchscript",
        inputs=[rc.value("input_0", (1, 3, 16, 16), x)],
        ops=[rc.op("aten::batch_norm#25", "aten::batch_norm", module="bn", source=rc.source(21),
                   inputs=["input.1", "weight.4", "bias.4", "running_mean.1", "running_var.1",
                           "27", "26", "25", "28"], outputs=["39"],
                   args={"training": False, "momentum": 0.1, "eps": 1e-05,
                         "cudnn_enabled": True})],
    )  # fmt: skip
    rc.with_values(
        g,
        rc.value("input.1", (1, 8, 16, 16), x),
        *(rc.value(n, (8,), params) for n in ("weight.4", "bias.4", "running_mean.1",
                                              "running_var.1")),
    )  # fmt: skip
    return rc.with_layers(g, bn_layer(dtype=params))


def exported(x: str, params: str) -> rc.ModelGraph:
    """torch.export: the same batch norm, placeholders named p_* / b_*."""
    names = ["p_bn_weight", "p_bn_bias", "b_bn_running_mean", "b_bn_running_var"]
    g = rc.graph(
        "torch_export",
        inputs=[rc.value("x", (1, 8, 16, 16), x)],
        ops=[rc.op("batch_norm", "aten::batch_norm", overload="default", module="bn",
                   inputs=["x", *names], outputs=["batch_norm"], source=rc.source(21),
                   args={"training": False, "momentum": 0.1, "eps": 1e-05})],
    )  # fmt: skip
    rc.with_values(g, *(rc.value(n, (8,), params) for n in names))
    return rc.with_layers(g, bn_layer(dtype=params))


def onnx_mixed() -> rc.ModelGraph:
    """ONNX BatchNormalization: float32 input, float16 initializers; the layer is keyed by
    node name, the op by scope."""
    names = ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"]
    g = rc.graph(
        "onnx",
        inputs=[rc.value("x", (1, 3, 4, 4))],
        ops=[rc.op("/bn/BatchNormalization", "onnx::BatchNormalization", module="bn",
                   inputs=["x", *names], outputs=["y"])],
    )  # fmt: skip
    rc.with_values(g, *(rc.value(n, (3,), "float16") for n in names))
    layer = rc.Layer(
        "/bn/BatchNormalization",
        "BatchNormalization",
        {n.split(".")[1]: rc.tensor(n, (3,), "float16", kind="initializer") for n in names},
    )
    return rc.with_layers(g, layer)


CASES = [
    pytest.param(
        state_dict(),
        {},
        [
            (
                "error",
                "bn",
                "bn",
                "bn: BatchNorm stores weight (float16), bias (float16), running_mean (float16), "
                f"running_var (float16): {CAST}",
            )
        ],
        id="half-state-dict-fires",
    ),
    pytest.param(
        state_dict("float32", stats="bfloat16"),
        {"rules": {"fp16-batchnorm": "warning"}},
        [
            (
                "warning",
                "bn",
                "bn",
                f"bn: BatchNorm stores running_mean (bfloat16), running_var (bfloat16): {CAST}",
            )
        ],
        id="bfloat16-running-stats-fire-at-the-configured-severity",
    ),
    pytest.param(state_dict("float32"), {}, [], id="float32-state-dict-does-not"),
    pytest.param(
        traced("float16", "float16"),
        {},
        [
            (
                "error",
                "bn (net.py:21)",
                "bn",
                "bn: BatchNorm2d stores weight (float16), bias (float16), running_mean (float16), "
                f"running_var (float16): {CAST}",
            )
        ],
        id="half-trace-fires-on-the-layer-with-the-op-source",
    ),
    pytest.param(
        traced("float32", "float16"),
        {},
        [
            (
                "error",
                "bn (net.py:21)",
                "bn",
                "bn: batch norm gets float32 input but its parameters are float16",
            )
        ],
        id="mismatch-and-half-layer-reported-once",
    ),
    pytest.param(
        exported("float16", "float16"),
        {},
        [],
        id="consistently-half-export-does-not",
    ),
    pytest.param(
        exported("float16", "float32"),
        {},
        [
            (
                "error",
                "bn (net.py:21)",
                "bn",
                "bn: batch norm gets float16 input but its parameters are float32",
            )
        ],
        id="half-input-into-float32-export-fires",
    ),
    pytest.param(
        onnx_mixed(),
        {},
        [("error", "bn", "bn", "bn: batch norm gets float32 input but its parameters are float16")],
        id="onnx-mixed-dtypes-fire-on-the-op",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg002(graph, conf, expected) -> None:
    assert rc.run("MG002", graph, **conf).findings == expected
