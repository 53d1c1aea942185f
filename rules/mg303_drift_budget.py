"""Compression (or conversion) moved the model's outputs more than the budget allows.

## What it does
Compares `drift` against `budget.drift`: the relative L2 error of the outputs against the
original FP32 model on `measure.samples` seeded synthetic inputs. It is the drift of the
compressed model when `compress:` ran (the first preset), else of the Core ML conversion
(FP16 weights), else of ONNX Runtime. Core ML cannot run on Linux, so the compressed
weights are decompressed by coremltools, loaded into the torch model and run by torch; the
report says so (`drift_detail.method`) and also gives max abs error, cosine similarity,
PSNR and top-1 agreement for class-score outputs. When the original's outputs are
near-constant the drift is not reported at all (MG104), and the budget is not judged (MG304).
`budget.targets.<target>.drift` limits one target's own conversion drift (its row of the
target matrix), and the message names the target.

## Why is this bad?
Data-free compression is a guess about which weights matter. Teams have shipped compressed
models whose outputs were wrong; the size went down and nobody measured what it cost.

## Example
```yaml
compress: palettize-4
budget:
  drift: 0.01
```

## Use instead
A gentler preset (`palettize-8`, `int8`), a smaller group or block size (`coreml.group_size:
8`), or compression-aware training with `coremltools.optimize.torch` on real data.

## Options
None: the limit lives under `budget:`; the measurement under `measure:`.

## References
- coremltools, accuracy and compression, https://apple.github.io/coremltools/docs-guides/source/opt-overview.html
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate import limits
from modelgate.finding import Problem
from modelgate.graph import ModelGraph

ID = "MG303"
NAME = "drift-budget"
SEVERITY = "error"
NEEDS = "budget"
OPTIONS: dict = {}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    yield from limits.problems(graph, ID)
