"""BatchNorm stored in FP16, or BatchNorm whose dtype differs from its input.

## What it does
Flags `batch_norm` ops whose input dtype differs from their parameters', in any graph. In
TorchScript files, state dicts, safetensors and pickled modules (what gets traced and
converted through coremltools' TorchScript path), also flags BatchNorm layers whose weight,
bias, running mean or running variance are float16 or bfloat16 — the mark of a model cast
with `.half()` (mixed-precision training keeps BatchNorm in FP32). Works from a bare state
dict too (the `running_mean` dtype).

## Why is this bad?
coremltools' PyTorch frontend assumes FP32 weights (coremltools issue #2429) and a `.half()`
model fails conversion where its FP16 parameters meet the converter's FP32 constants and
inputs: at BatchNorm before coremltools 9 (epsilon FP32, mean FP16: issue #2470), at the first
convolution with a bias in coremltools 9.0 (measured by modelgate's tests). Mixed dtypes also
fail ONNX type checking. Core ML computes in FP16 anyway when asked to, so casting the PyTorch
model first buys nothing. `torch.export` programs whose graph is consistently FP16 convert
with coremltools 9, so for `.pt2` files only mismatches are flagged.

## Example
```python
model = model.half()
torch.jit.trace(model, example.half()).save("model.pt")
```

## Use instead
```python
model = model.float()          # keep weights FP32
mlmodel = ct.convert(traced, compute_precision=ct.precision.FLOAT16)
```

## Options
None.

## References
- coremltools typed execution, https://apple.github.io/coremltools/docs-guides/source/typed-execution.html
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph

ID = "MG002"
NAME = "fp16-batchnorm"
SEVERITY = "error"
NEEDS = "weights"
OPTIONS: dict = {}

_HALF = {"float16", "bfloat16"}
_BN_OPS = {"aten::batch_norm", "aten::_native_batch_norm_legit_no_training",
           "aten::_native_batch_norm_legit", "aten::native_batch_norm",
           "aten::_native_batch_norm_legit_functional", "onnx::BatchNormalization"}  # fmt: skip
_FIX = (
    "keep the model in float32 (drop .half()) and let the converter lower precision: "
    "ct.convert(..., compute_precision=ct.precision.FLOAT16)"
)


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    flagged: set[str] = set()
    for op in graph.ops:
        if op.target not in _BN_OPS or not op.inputs:
            continue
        x = graph.value(op.inputs[0])
        params = [graph.value(n) for n in op.inputs[1:]]
        pdtypes = {p.dtype for p in params if p is not None and p.dtype}
        if x is None or not x.dtype or not pdtypes or pdtypes == {x.dtype}:
            continue
        module = op.module or op.name
        flagged.add(module)
        yield Problem(
            f"{module}: batch norm gets {x.dtype} input but its parameters are "
            f"{'/'.join(sorted(pdtypes))}",
            Location(graph.path, module=op.module, op=op.name, source=op.source),
            fix=_FIX,
            key=module,
        )
    if graph.format in ("onnx", "torch_export"):
        return  # ONNX Runtime and coremltools' torch.export path take consistent FP16 graphs
    for layer in graph.layers.values():
        if layer.kind != "batchnorm" or layer.path in flagged:
            continue
        half = {n: t.dtype for n, t in layer.tensors.items() if t.dtype in _HALF}
        if not half:
            continue
        names = ", ".join(f"{n} ({d})" for n, d in half.items())
        yield Problem(
            f"{layer.path}: {layer.short_type} stores {names}: the model was cast to half "
            "precision, which coremltools' PyTorch frontend cannot convert",
            Location(
                graph.path,
                module=layer.path or None,
                tensor=next(iter(layer.tensors[n].name for n in half)),
                source=graph.first_source(layer.path),
            ),
            fix=_FIX,
            key=layer.path,
        )
