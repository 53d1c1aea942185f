"""A budgeted figure could not be measured, so the budget did not judge it.

## What it does
Reports each `budget:` entry whose figure is missing, with the reason: latency or drift of
a model nothing converted or ran (no `convert:` / `compress:`), of a state dict (no
architecture to run), of a model whose outputs are near-constant (MG104), MACs of a model
without input shapes, a growth limit without a baseline. For a target's own figure
(`budget.targets`): the target was not converted (and what would convert it), its conversion
failed, will not load or was not run (with its result's detail), or the target does not
measure that figure (Core ML has no runtime on this machine, so no latency).

## Why is this bad?
A gate that silently passes what it could not measure is no gate: the budget looks green
while nobody checked it.

## Example
```yaml
budget:
  drift: 0.01         # but nothing is converted or compressed: there is no drift to measure
```

## Use instead
```yaml
compress: palettize-8 # drift of the compressed model against the original
budget:
  drift: 0.01
```

## Options
None.

## References
- modelgate README, "Budgets"
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate import limits
from modelgate.finding import Problem
from modelgate.graph import ModelGraph

ID = "MG304"
NAME = "budget-unmeasured"
SEVERITY = "warning"
NEEDS = "budget"
OPTIONS: dict = {}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    yield from limits.unjudged(graph)
