"""MG006 adaptive-pool-expansion on graphs built in memory: graph -> the exact findings."""

from __future__ import annotations

import pytest
import rule_cases as rc

EXPANDS = "coremltools emits one op per output window"
DECOMPOSE = "and ONNX export must decompose it"
HOW_TO_GIVE_SHAPES = (
    "pass --input-shape NAME=1x3x224x224 or set inputs: [{name: NAME, shape: [1, 3, 224, 224]}] "
    "in modelgate.yaml"
)


def exported(size: tuple, output_size: list, target: str = "aten::adaptive_avg_pool2d"):
    """A .pt2 program: conv -> adaptive pool to ``output_size`` from a map of ``size``."""
    g = rc.graph(
        "torch_export",
        inputs=[rc.value("x", (1, 3, *size[-2:]))],
        ops=[
            rc.op("conv2d", "aten::conv2d", overload="default", module="conv", inputs=["x"],
                  outputs=["conv2d"]),
            rc.op("pool", target, overload="default", module="pool", inputs=["conv2d"],
                  outputs=["pool"], args={"self": {"tensor": "conv2d"},
                                          "output_size": output_size},
                  source=rc.source(62)),
        ],
    )  # fmt: skip
    return rc.with_values(g, rc.value("conv2d", size))


def traced(shape: tuple | None, output_size: list) -> rc.ModelGraph:
    """A TorchScript trace: the pool's input shape is known only once shapes were inferred
    (from traced inputs, the config or --input-shape); ``None``: not known."""
    g = rc.graph(
        "torchscript",
        ops=[rc.op("aten::adaptive_avg_pool2d#15", "aten::adaptive_avg_pool2d", module="pool",
                   inputs=["input.1", "18"], outputs=["19"], args={"output_size": output_size},
                   source=rc.source(62))],
    )  # fmt: skip
    if shape is not None:
        rc.with_values(g, rc.value("input.1", shape))
    return g


CASES = [
    pytest.param(
        exported((1, 4, 10, 10), [7, 7]),
        {},
        [
            (
                "error",
                "pool (net.py:62)",
                "pool",
                "pool: AdaptiveAvgPool2d to 7x7 from a 10x10 input does not divide (10 into 7): "
                f"{EXPANDS} (49 windows) {DECOMPOSE}",
            )
        ],
        id="seven-from-ten-fires-once-per-size",
    ),
    pytest.param(
        exported((1, 4, 10, 10), [12, 5]),
        {},
        [
            (
                "error",
                "pool (net.py:62)",
                "pool",
                "pool: AdaptiveAvgPool2d to 12x5 from a 10x10 input does not divide "
                f"(10 into 12): {EXPANDS} (60 windows) {DECOMPOSE}",
            )
        ],
        id="upsampling-dim-fires-the-dividing-one-is-not-named",
    ),
    pytest.param(
        traced((1, 64, 200, 200), [128, 72]),
        {},
        [
            (
                "error",
                "pool (net.py:62)",
                "pool",
                "pool: AdaptiveAvgPool2d to 128x72 from a 200x200 input does not divide "
                f"(200 into 128, 200 into 72): {EXPANDS} (9,216 windows) {DECOMPOSE}",
            )
        ],
        id="traced-pool-counts-its-windows",
    ),
    pytest.param(
        exported((1, 16, 100), [30], "aten::adaptive_max_pool1d"),
        {},
        [
            (
                "error",
                "pool (net.py:62)",
                "pool",
                "pool: AdaptiveMaxPool1d to 30 from a 100 input does not divide (100 into 30): "
                f"{EXPANDS} (30 windows) {DECOMPOSE}",
            )
        ],
        id="max-pool-1d-fires",
    ),
    pytest.param(
        exported((1, 4, 10, 10), [None, 7]),
        {},
        [
            (
                "error",
                "pool (net.py:62)",
                "pool",
                "pool: AdaptiveAvgPool2d to 10x7 from a 10x10 input does not divide (10 into 7): "
                f"{EXPANDS} (70 windows) {DECOMPOSE}",
            )
        ],
        id="none-in-output-size-keeps-the-input-size",
    ),
    pytest.param(exported((1, 4, 10, 10), [5, 5]), {}, [], id="dividing-pool-does-not"),
    pytest.param(exported((1, 4, 10, 10), [1, 1]), {}, [], id="global-pool-does-not"),
    pytest.param(
        rc.with_layers(
            rc.graph("state_dict"),
            rc.layer("conv", "Conv2d", rc.tensor("conv.weight", (4, 3, 3, 3)), inferred=True),
        ),
        {},
        [],
        id="weights-without-pooling-layers-do-not",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg006(graph, conf, expected) -> None:
    assert rc.run("MG006", graph, **conf).findings == expected


def _with_unknown_pool(g: rc.ModelGraph) -> rc.ModelGraph:
    """``g`` and a second pool, on a map whose spatial size is a symbol."""
    g.ops.append(rc.op("pool2", "aten::adaptive_avg_pool2d", overload="default", module="pool2",
                       inputs=["dyn"], args={"output_size": [7, 7]}))  # fmt: skip
    return rc.with_values(g, rc.value("dyn", (1, 4, "s0", "s0")))


CASES_SKIPPED = [
    pytest.param(
        traced(None, [7, 7]),
        [],
        f"1 adaptive pooling op(s) with unknown input shapes; {HOW_TO_GIVE_SHAPES}",
        id="unknown-input-shape-says-how-to-give-one",
    ),
    pytest.param(
        _with_unknown_pool(exported((1, 4, 10, 10), [7, 7])),
        [
            (
                "error",
                "pool (net.py:62)",
                "pool",
                "pool: AdaptiveAvgPool2d to 7x7 from a 10x10 input does not divide (10 into 7): "
                f"{EXPANDS} (49 windows) {DECOMPOSE}",
            )
        ],
        f"1 adaptive pooling op(s) with unknown input shapes; {HOW_TO_GIVE_SHAPES}",
        id="symbolic-spatial-size-is-unknown-the-others-are-judged",
    ),
    pytest.param(
        rc.with_layers(
            rc.graph("pickled_module"),
            rc.layer(
                "conv", "torch.nn.modules.conv.Conv2d", rc.tensor("conv.weight", (4, 3, 3, 3))
            ),
            rc.layer("pool", "torch.nn.modules.pooling.AdaptiveAvgPool2d"),
        ),
        [],
        "1 adaptive pooling layer(s) but no graph to follow shapes through; check the traced or "
        "exported model (.pt2 / TorchScript) instead",
        id="pooling-layer-without-a-graph",
    ),
]


@pytest.mark.parametrize(("graph", "expected", "reason"), CASES_SKIPPED)
def test_mg006_skipped(graph, expected, reason) -> None:
    result = rc.run("MG006", graph)
    assert (result.findings, result.skipped) == (expected, reason)
