"""The model is over its latency (or compute) budget.

## What it does
Compares the measured latency against `budget.latency_ms`: the median of `measure.runs`
timed runs after `measure.warmup` untimed ones, with `measure.threads` threads (default 1),
on seeded synthetic inputs, by ONNX Runtime when the ONNX export ran, else by torch, on this
machine's CPU; the report labels which. Also `budget.macs` (multiply-accumulates of
convolutions, linear layers and matrix products, from the graph's shapes). A number is a
maximum; `{max_increase_pct: ...}` limits growth against a baseline.
`budget.targets.<target>.latency_ms` limits the median timed in one target's own runtime
(ONNX Runtime, the ExecuTorch runtime, the LiteRT interpreter), and the message names the
target: `executorch latency_ms 25.3 ms (ExecuTorch runtime) is over the budget of 20 ms by
5.3 ms, +26%`.

## Why is this bad?
A model that got twice as slow on the CI machine got slower on the phone too. The CI figure
is not the device's, so it is most useful against a baseline (the same machine, the same
run): `max_increase_pct` catches the regression without pretending to know the device.

## Example
```yaml
budget:
  latency_ms: {max: 30, max_increase_pct: 15}
```

## Use instead
Reduce the work: smaller feature maps early (stride or pool sooner), fewer channels in the
heaviest layers (by MACs), or a lighter architecture.

## Options
None: the limits live under `budget:`; the measurement under `measure:`.

## References
- ONNX Runtime threading, https://onnxruntime.ai/docs/performance/tune-performance/threading.html
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate import limits
from modelgate.finding import Problem
from modelgate.graph import ModelGraph

ID = "MG302"
NAME = "latency-budget"
SEVERITY = "error"
NEEDS = "budget"
OPTIONS: dict = {}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    yield from limits.problems(graph, ID)
