"""MG004 dropout-in-eval on graphs built in memory: graph -> the exact findings."""

from __future__ import annotations

import pytest
import rule_cases as rc

BN = "torch.nn.modules.batchnorm.BatchNorm2d"
DROPOUT = "torch.nn.modules.dropout.Dropout"


def exported(training: bool) -> rc.ModelGraph:
    """torch.export of conv -> bn -> relu -> mean -> dropout(0.3) -> fc, exported in
    training mode (``training``) or after ``model.eval()``."""
    ops = [
        rc.op("batch_norm", "aten::batch_norm", overload="default", module="bn",
              inputs=["conv2d", "p_bn_weight", "p_bn_bias", "b_bn_running_mean",
                      "b_bn_running_var"], outputs=["batch_norm"], source=rc.source(48),
              args={"input": {"tensor": "conv2d"}, "training": training, "momentum": 0.1,
                    "eps": 1e-05, "cudnn_enabled": False}),
        rc.op("relu", "aten::relu", overload="default", module="", inputs=["batch_norm"],
              outputs=["relu"], source=rc.source(48)),
        rc.op("dropout", "aten::dropout", overload="default", module="drop", inputs=["mean"],
              outputs=["dropout"], source=rc.source(50),
              args={"input": {"tensor": "mean"}, "p": 0.3, "train": training}),
    ]  # fmt: skip
    return rc.graph("torch_export", inputs=[rc.value("x", (1, 3, 16, 16))], ops=ops)


def scripted(module: str, layer_training: bool | None, root_training: bool) -> rc.ModelGraph:
    """torch.jit.script: dropout's ``train`` is the module's ``self.training`` attribute, so
    the saved module flags decide (the layer's own, else the root's)."""
    g = rc.graph(
        "torchscript",
        training=root_training,
        ops=[rc.op("aten::dropout#4", "aten::dropout", module=module,
                   inputs=["x.1", "6", "training.1"], outputs=["7"],
                   args={"p": 0.2, "train": {"attribute": "training"}})],
    )  # fmt: skip
    layers = [rc.layer("", "S", training=root_training)]
    if layer_training is not None:
        layers.append(rc.layer("drop", DROPOUT, training=layer_training))
    return rc.with_layers(g, *layers)


def onnx_dropout(mode: str | None, mode_is_input: bool = False) -> rc.ModelGraph:
    """ONNX Dropout(h, ratio[, training_mode]); the mode is an initializer or a graph input."""
    inputs = [rc.value("x", (1, 8))]
    if mode_is_input and mode:
        inputs.append(rc.value(mode, (), "bool"))
    op_inputs = ["h", "ratio"] + ([mode] if mode else [])
    return rc.graph(
        "onnx",
        inputs=inputs,
        ops=[rc.op("/drop/Dropout", "onnx::Dropout", module="drop", inputs=op_inputs,
                   outputs=["d"])],
    )  # fmt: skip


def pickled_module(root_training: bool | None, *flags: tuple[str, str, bool]) -> rc.ModelGraph:
    """torch.save(model): no ops, each module's ``training`` flag as pickled."""
    g = rc.graph("pickled_module", training=root_training)
    layers = [rc.layer("", "torchmodels.WithDropout", training=root_training)]
    layers += [rc.layer(path, type_, training=training) for path, type_, training in flags]
    return rc.with_layers(g, *layers)


TRAIN_LAYERS = [
    ("conv", "torch.nn.modules.conv.Conv2d", True),
    ("bn", BN, True),
    ("drop", DROPOUT, True),
    ("fc", "torch.nn.modules.linear.Linear", True),
]

CASES = [
    pytest.param(
        exported(training=True),
        {},
        [
            (
                "error",
                "bn (net.py:48)",
                "op:bn:aten::batch_norm",
                "bn: batch norm uses batch statistics (training=True) in an inference graph",
            ),
            (
                "error",
                "drop (net.py:50)",
                "op:drop:aten::dropout",
                "drop: dropout (p=0.3) is active in an inference graph",
            ),
        ],
        id="training-mode-export-fires-on-dropout-and-batch-norm",
    ),
    pytest.param(exported(training=False), {}, [], id="eval-export-does-not"),
    pytest.param(
        rc.graph(
            ops=[
                rc.op(
                    "_native_batch_norm_legit",
                    "aten::_native_batch_norm_legit",
                    overload="default",
                    module="bn",
                    args={"momentum": 0.1},
                )
            ]
        ),
        {},
        [
            (
                "error",
                "bn",
                "op:bn:aten::_native_batch_norm_legit",
                "bn: batch norm uses batch statistics (training=True) in an inference graph",
            )
        ],
        id="native-batch-norm-legit-trains-unless-told-otherwise",
    ),
    pytest.param(
        rc.graph(
            ops=[
                rc.op(
                    "_native_batch_norm_legit_no_training",
                    "aten::_native_batch_norm_legit_no_training",
                    overload="default",
                    module="bn",
                    args={"momentum": 0.1},
                )
            ]
        ),
        {},
        [],
        id="native-batch-norm-no-training-does-not",
    ),
    pytest.param(
        scripted("drop", layer_training=False, root_training=True),
        {},
        [],
        id="scripted-dropout-follows-its-own-layer-flag",
    ),
    pytest.param(
        # the TorchScript loader names a scripted submodule's ops "drop.UNKNOWN_INSTANCE",
        # which is no layer path: the root's flag decides
        scripted("drop.UNKNOWN_INSTANCE", layer_training=False, root_training=True),
        {},
        [
            (
                "error",
                "drop.UNKNOWN_INSTANCE",
                "op:drop.UNKNOWN_INSTANCE:aten::dropout",
                "drop.UNKNOWN_INSTANCE: dropout (p=0.2) is active in an inference graph",
            )
        ],
        id="scripted-dropout-without-its-layer-follows-the-root",
    ),
    pytest.param(
        onnx_dropout("tm"),
        {},
        [
            (
                "error",
                "drop",
                "op:drop:onnx::Dropout",
                "drop: Dropout has a training_mode input in an inference graph",
            )
        ],
        id="onnx-dropout-with-a-fixed-training-mode-fires",
    ),
    pytest.param(
        onnx_dropout("training_mode", mode_is_input=True),
        {},
        [],
        id="onnx-dropout-mode-chosen-by-the-caller-does-not",
    ),
    pytest.param(onnx_dropout(None), {}, [], id="onnx-dropout-without-a-mode-does-not"),
    pytest.param(
        rc.graph(
            "onnx",
            ops=[
                rc.op(
                    "/bn/BatchNormalization",
                    "onnx::BatchNormalization",
                    module="bn",
                    args={"epsilon": 1e-05, "training_mode": 1},
                )
            ],
        ),
        {},
        [
            (
                "error",
                "bn",
                "op:bn:onnx::BatchNormalization",
                "bn: BatchNormalization has training_mode=1 in an inference graph",
            )
        ],
        id="onnx-batch-normalization-in-training-mode-fires",
    ),
    pytest.param(
        pickled_module(True, *TRAIN_LAYERS),
        {},
        [
            (
                "error",
                "bn",
                "training-mode",
                "the model was saved in training mode: 2 dropout / batch-norm layers would run as "
                "in training (bn, drop)",
            )
        ],
        id="module-saved-in-training-mode-is-one-finding",
    ),
    pytest.param(
        pickled_module(True, *[(f"drop{i}", DROPOUT, True) for i in range(7)]),
        {},
        [
            (
                "error",
                "drop0",
                "training-mode",
                "the model was saved in training mode: 7 dropout / batch-norm layers would run as "
                "in training (drop0, drop1, drop2, drop3, drop4 and 2 more)",
            )
        ],
        id="many-layers-are-cut-at-five",
    ),
    pytest.param(
        pickled_module(False, ("bn", BN, False), ("drop", DROPOUT, True)),
        {},
        [("error", "drop", "module:drop", "drop: Dropout was saved in training mode")],
        id="one-submodule-left-in-training-mode",
    ),
    pytest.param(
        pickled_module(True, ("conv", "torch.nn.modules.conv.Conv2d", True)),
        {},
        [],
        id="training-flag-without-dropout-or-batch-norm-does-not",
    ),
    pytest.param(
        # module flags that say training over ops that run in eval (a model traced after
        # model.eval() and saved after model.train()): what runs is the graph
        rc.with_layers(
            exported(training=False), *[rc.layer(p, t, training=f) for p, t, f in TRAIN_LAYERS]
        ),
        {},
        [],
        id="graph-decides-not-the-module-flags",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg004(graph, conf, expected) -> None:
    assert rc.run("MG004", graph, **conf).findings == expected
