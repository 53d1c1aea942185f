"""Dropout or batch statistics active in an inference graph.

## What it does
Flags dropout ops whose `train` flag is set and batch-norm ops that use batch statistics
(`training=True`) in a traced or exported graph, and modules pickled with `training=True`.

## Why is this bad?
A model traced or exported without `model.eval()` bakes training behaviour into the graph:
dropout zeroes random activations on every inference, batch norm normalises with the
statistics of whatever batch arrives (a batch of one on a phone). Outputs become random or
wrong, and converters either drop the op silently or refuse it.

## Example
```python
model = Net()                       # still in training mode
torch.export.export(model, (x,))
```

## Use instead
```python
model = Net().eval()
torch.export.export(model, (x,))
```

## Options
None.

## References
- torch.nn.Module.eval, https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.eval
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph, Op

ID = "MG004"
NAME = "dropout-in-eval"
SEVERITY = "error"
NEEDS = "weights"
OPTIONS: dict = {}

_DROPOUT = {"aten::dropout", "aten::feature_dropout", "aten::alpha_dropout",
            "aten::feature_alpha_dropout", "aten::native_dropout", "aten::dropout_",
            "aten::feature_dropout_"}  # fmt: skip
_BATCHNORM_TRAINING_FLAG = {"aten::batch_norm", "aten::native_batch_norm",
                            "aten::_native_batch_norm_legit_functional"}  # fmt: skip
_FIX = "call model.eval() before tracing, exporting or saving"


def _truthy(value: Any, graph: ModelGraph, op: Op) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, dict) and value.get("attribute") == "training":
        layer = graph.layers.get(op.module or "")
        flag = (
            layer.training if layer is not None and layer.training is not None else graph.training
        )
        return bool(flag)
    return False


def _active(op: Op, graph: ModelGraph) -> str | None:
    """What is active about ``op``, or None."""
    if op.target in _DROPOUT:
        train = op.args.get("train", op.args.get("arg2"))
        if _truthy(train, graph, op):
            p = op.args.get("p")
            return f"dropout (p={p}) is active" if isinstance(p, float) else "dropout is active"
    elif op.target in _BATCHNORM_TRAINING_FLAG:
        if _truthy(op.args.get("training"), graph, op):
            return "batch norm uses batch statistics (training=True)"
    elif op.target == "aten::_native_batch_norm_legit":
        if _truthy(op.args.get("training", True), graph, op):
            return "batch norm uses batch statistics (training=True)"
    elif op.target == "onnx::Dropout":
        mode = op.inputs[2] if len(op.inputs) >= 3 else ""
        # a graph input is chosen by the caller at run time (ONNX's default is inference)
        if mode and mode not in {v.name for v in graph.inputs}:
            return "Dropout has a training_mode input"
    elif op.target == "onnx::BatchNormalization" and op.args.get("training_mode") == 1:
        return "BatchNormalization has training_mode=1"
    return None


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    seen_modules: set[str] = set()
    for op in graph.ops:
        what = _active(op, graph)
        if what is None:
            continue
        where = op.module or op.name
        seen_modules.add(op.module or "")
        yield Problem(
            f"{where}: {what} in an inference graph",
            Location(graph.path, module=op.module, op=op.name, source=op.source),
            fix=_FIX,
            key=f"op:{where}:{op.target}",
        )
    if graph.has_graph:
        return  # the graph is what runs; module flags add nothing to it
    affected = [
        layer for layer in graph.layers.values()
        if layer.kind in ("dropout", "batchnorm") and layer.training
    ]  # fmt: skip
    if graph.training and affected:
        names = ", ".join(layer.path for layer in affected[:5])
        more = f" and {len(affected) - 5} more" if len(affected) > 5 else ""
        yield Problem(
            f"the model was saved in training mode: {len(affected)} dropout / batch-norm "
            f"layers would run as in training ({names}{more})",
            Location(graph.path, module=affected[0].path),
            fix=_FIX,
            key="training-mode",
        )
        return
    for layer in affected:
        yield Problem(
            f"{layer.path}: {layer.short_type} was saved in training mode",
            Location(graph.path, module=layer.path),
            fix=_FIX,
            key=f"module:{layer.path}",
        )
