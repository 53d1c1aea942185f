"""MG005 dynamic-shape on graphs built in memory: graph -> the exact findings."""

from __future__ import annotations

import pytest
import rule_cases as rc

FIXED_OR_BOUNDED = (
    "fixed or bounded: ct.RangeDim(lower, upper) with an upper bound, or ct.EnumeratedShapes"
)


def exported(shape: tuple, **symbols: tuple[int | None, int | None]) -> rc.ModelGraph:
    """A .pt2 program whose input x has ``shape``; torch.export names dynamic dimensions by
    symbol ("s77") and keeps their ranges (None: unbounded)."""
    g = rc.graph(
        "torch_export",
        inputs=[rc.value("x", shape)],
        ops=[rc.op("conv2d", "aten::conv2d", overload="default", module="conv", inputs=["x"])],
    )
    g.symbols = {name: {"min": low, "max": high} for name, (low, high) in symbols.items()}
    return g


def onnx_batch() -> rc.ModelGraph:
    """An ONNX file whose input has dim_param "batch" (no range: ONNX records none)."""
    return rc.graph(
        "onnx",
        inputs=[rc.value("x", ("batch", 8))],
        ops=[rc.op("/fc/Gemm", "onnx::Gemm", module="fc", inputs=["x", "fc.weight"])],
    )


def nonzero() -> rc.ModelGraph:
    """torch.nonzero at the root module of a .pt2 program: the output's first dim is u0."""
    g = rc.graph(
        "torch_export",
        inputs=[rc.value("x", (2, 4))],
        ops=[
            rc.op("gt", "aten::gt", overload="Scalar", module="", inputs=["linear"],
                  outputs=["gt"], source=rc.source(72)),
            rc.op("nonzero", "aten::nonzero", overload="default", module="", inputs=["gt"],
                  outputs=["nonzero"], source=rc.source(72)),
        ],
    )  # fmt: skip
    g.symbols = {"u0": {"min": 0, "max": 8}}
    return rc.with_values(g, rc.value("nonzero", ("u0", 2), "int64"))


CASES = [
    pytest.param(
        exported(("s77", 3, 16, 16), s77=(2, 16)),
        {},
        [
            (
                "warning",
                "x",
                "input:x",
                "input x (s77, 3, 16, 16): dimension 0 is dynamic (s77, range 2..16); Core ML "
                "needs it declared: ct.TensorType(shape=(ct.RangeDim(2, 16), 3, 16, 16)) or "
                "ct.EnumeratedShapes",
            )
        ],
        id="bounded-batch-gets-the-range-dim-to-declare",
    ),
    pytest.param(
        exported(("s77", 3, "s53", 64), s77=(0, None), s53=(32, 512)),
        {},
        [
            (
                "warning",
                "x",
                "input:x",
                "input x (s77, 3, s53, 64): dimensions 0 and 2 are dynamic (s77, range 0..∞; "
                f"s53, range 32..512); Core ML needs them {FIXED_OR_BOUNDED}",
            )
        ],
        id="one-unbounded-dim-asks-for-bounds",
    ),
    pytest.param(
        exported(("s0", 3, "s1", "s2"), s0=(0, 8), s1=(32, 512), s2=(32, 512)),
        {},
        [
            (
                "warning",
                "x",
                "input:x",
                "input x (s0, 3, s1, s2): dimensions 0, 2 and 3 are dynamic (s0, range 0..8; "
                "s1, range 32..512; s2, range 32..512); Core ML needs them declared: "
                "ct.TensorType(shape=(ct.RangeDim(1, 8), 3, ct.RangeDim(32, 512), "
                "ct.RangeDim(32, 512))) or ct.EnumeratedShapes",
            )
        ],
        id="every-dynamic-dim-of-an-input-in-one-finding",
    ),
    pytest.param(
        exported(("s0",), s0=(1, 64)),
        {},
        [
            (
                "warning",
                "x",
                "input:x",
                "input x (s0): dimension 0 is dynamic (s0, range 1..64); Core ML needs it "
                "declared: ct.TensorType(shape=(ct.RangeDim(1, 64),)) or ct.EnumeratedShapes",
            )
        ],
        id="one-d-input-keeps-the-tuple-comma",
    ),
    pytest.param(
        onnx_batch(),
        {},
        [
            (
                "warning",
                "x",
                "input:x",
                f"input x (batch, 8): dimension 0 is dynamic (batch); Core ML needs it "
                f"{FIXED_OR_BOUNDED}",
            )
        ],
        id="onnx-dim-param-has-no-range",
    ),
    pytest.param(
        onnx_batch(),
        {"rules": {"MG005": {"allow_dims": ["batch"]}}},
        [],
        id="allow-dims-option-admits-a-name",
    ),
    pytest.param(
        exported(("s0", 3, "s1", 64), s0=(1, 8), s1=(0, None)),
        {"rules": {"dynamic-shape": {"severity": "error", "allow_dims": ["s0"]}}},
        [
            (
                "error",
                "x",
                "input:x",
                "input x (s0, 3, s1, 64): dimension 2 is dynamic (s1, range 0..∞); Core ML "
                f"needs it {FIXED_OR_BOUNDED}",
            )
        ],
        id="allowed-dim-is-left-out-at-the-configured-severity",
    ),
    pytest.param(
        exported(("s0", 3, "s1", 64), s0=(1, 8), s1=(32, 512)),
        {"rules": {"MG005": {"allow_dims": ["s0"]}}},
        [
            (
                "warning",
                "x",
                "input:x",
                "input x (s0, 3, s1, 64): dimension 2 is dynamic (s1, range 32..512); Core ML "
                "needs it declared: ct.TensorType(shape=(ct.RangeDim(1, 8), 3, "
                "ct.RangeDim(32, 512), 64)) or ct.EnumeratedShapes",
            )
        ],
        id="declaration-beside-an-allowed-dim-is-code-that-runs",
    ),
    pytest.param(onnx_batch(), {"targets": ["onnx"]}, [], id="onnx-target-takes-dynamic-dims"),
    pytest.param(exported((1, 3, 16, 16)), {}, [], id="static-input-does-not"),
    pytest.param(
        nonzero(),
        {},
        [
            (
                "warning",
                "nonzero (net.py:72)",
                "op:nonzero:aten::nonzero",
                "nonzero: nonzero produces a data-dependent output shape",
            )
        ],
        id="data-dependent-op-fires",
    ),
    pytest.param(
        rc.graph("onnx", ops=[rc.op("/NonZero", "onnx::NonZero", inputs=["d"])]),
        {},
        [
            (
                "warning",
                "/NonZero",
                "op:/NonZero:onnx::NonZero",
                "/NonZero: NonZero produces a data-dependent output shape",
            )
        ],
        id="onnx-nonzero-fires",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg005(graph, conf, expected) -> None:
    assert rc.run("MG005", graph, **conf).findings == expected
