"""The model is over its size budget.

## What it does
Compares the model's size against `budget:` in the config: `size_mb` (the compressed Core ML
package when `compress:` ran, else the converted Core ML package, else the ONNX export,
else the file), and also `file_mb`, `weights_mb`, `parameters` and `peak_activation_mb` (an
estimate of the activations alive at once, from the graph's shapes) when budgeted. A number
is a maximum; `{max_increase: ..., max_increase_pct: ...}` limits growth against a baseline
(`--baseline OLD`, or the base branch under the GitHub Action). The message has the measured
value, the limit and the difference. `budget.targets.<target>.size_mb` limits one converted
target's own size (what it made: the ONNX file, the `.pte`, the `.tflite`, the Core ML
package, before compression), and the message names the target.

## Why is this bad?
App stores cap over-the-air downloads, and users delete large apps; a phone runs out of
memory (activations) long before it runs out of disk. Sizes creep one commit at a time: a
budget makes each step visible.

## Example
```yaml
budget:
  size_mb: 25
  parameters: {max_increase_pct: 10}
```
```text
size_mb 31.2 MB (Core ML, palettize-4) is over the budget of 25 MB by 6.2 MB, +25%
```

## Use instead
Compress further (`compress: palettize-4` or `int4`), shrink the largest layers
(`metrics.largest_layers`), or raise the budget on purpose in the same pull request.

## Options
None: the limits live under `budget:`.

## References
- coremltools, optimizing models, https://apple.github.io/coremltools/docs-guides/source/opt-overview.html
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate import limits
from modelgate.finding import Problem
from modelgate.graph import ModelGraph

ID = "MG301"
NAME = "size-budget"
SEVERITY = "error"
NEEDS = "budget"
OPTIONS: dict = {}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    yield from limits.problems(graph, ID)
