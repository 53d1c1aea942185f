"""MG007 fp64-weights on graphs built in memory: graph -> the exact findings."""

from __future__ import annotations

import pytest
import rule_cases as rc


def clean_state_dict(dtype: str) -> rc.ModelGraph:
    """conv 8x3x3x3, bn(8), fc 10x8 in ``dtype``; num_batches_tracked stays int64."""
    return rc.with_layers(
        rc.graph("state_dict"),
        rc.layer("conv", "Conv2d", rc.tensor("conv.weight", (8, 3, 3, 3), dtype),
                 rc.tensor("conv.bias", (8,), dtype), inferred=True),
        rc.layer("bn", "BatchNorm", rc.tensor("bn.weight", (8,), dtype),
                 rc.tensor("bn.bias", (8,), dtype),
                 rc.tensor("bn.running_mean", (8,), dtype, kind="buffer"),
                 rc.tensor("bn.running_var", (8,), dtype, kind="buffer"),
                 rc.tensor("bn.num_batches_tracked", (), "int64", kind="buffer"), inferred=True),
        rc.layer("fc", "Linear", rc.tensor("fc.weight", (10, 8), dtype),
                 rc.tensor("fc.bias", (10,), dtype), inferred=True),
    )  # fmt: skip


def float_model_with(*extra: rc.TensorInfo) -> rc.ModelGraph:
    """A float32 Linear(256, 256) and ``extra`` tensors of a "norm" layer."""
    return rc.with_layers(
        rc.graph("state_dict"),
        rc.layer("fc", "Linear", rc.tensor("fc.weight", (256, 256)),
                 rc.tensor("fc.bias", (256,)), inferred=True),
        rc.layer("norm", "", *extra, inferred=True),
    )  # fmt: skip


def onnx_with_double_scale() -> rc.ModelGraph:
    """An ONNX file: a float32 Gemm weight and a float64 scalar initializer."""
    g = rc.graph("onnx", ops=[rc.op("/fc/Gemm", "onnx::Gemm", module="fc",
                                    inputs=["x", "fc.weight"])])  # fmt: skip
    return rc.with_layers(
        g,
        rc.layer("/fc/Gemm", "Gemm", rc.tensor("fc.weight", (4, 8), kind="initializer")),
        rc.layer("/Mul", "Mul", rc.tensor("scale", (), "float64", kind="initializer")),
    )


CASES = [
    pytest.param(
        clean_state_dict("float64"),
        {},
        [
            (
                "warning",
                "conv.weight",
                "float64",
                "8 tensor(s) are float64 (2.8 kB, 100% of the weights); largest: conv.weight "
                "(8, 3, 3, 3)",
            )
        ],
        id="double-model-is-one-finding-naming-the-largest",
    ),
    pytest.param(
        float_model_with(rc.tensor("norm.scale", (256,), "float64", kind="buffer")),
        {},
        [
            (
                "warning",
                "norm.scale",
                "float64",
                "1 tensor(s) are float64 (2.0 kB, 1% of the weights); largest: norm.scale (256,)",
            )
        ],
        id="one-double-buffer-fires",
    ),
    pytest.param(
        onnx_with_double_scale(),
        {"rules": {"MG007": "error"}},
        [
            (
                "error",
                "scale",
                "float64",
                "1 tensor(s) are float64 (8 B, 6% of the weights); largest: scale ()",
            )
        ],
        id="onnx-scalar-initializer-at-the-configured-severity",
    ),
    pytest.param(
        float_model_with(rc.tensor("norm.empty", (0,), "float64", kind="buffer")),
        {},
        [],
        id="empty-double-tensor-does-not",
    ),
    pytest.param(clean_state_dict("float32"), {}, [], id="float32-does-not"),
    pytest.param(clean_state_dict("float16"), {}, [], id="float16-does-not"),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg007(graph, conf, expected) -> None:
    assert rc.run("MG007", graph, **conf).findings == expected
