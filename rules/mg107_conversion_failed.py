"""The model does not convert to a target that has no conversion rule of its own.

## What it does
Reports a failed conversion, for every target in `targets/` that names no rule of its own for
it (Core ML's is MG101, ONNX's MG102): the converter's reason trimmed to the op it names and
where, a crash, a hang past the time limit or running out of memory, each with the target's
own fix. It runs when `convert:` / `--convert` names the target, in a child process with a
time limit, like every conversion.

## Why is this bad?
A model that does not convert does not ship to that runtime. Without this rule a target added
to modelgate would fail its conversion in silence: what was asked for and failed must be a
finding.

## Example
```yaml
convert: [mytarget]   # a target added by a module in targets/, whose converter fails
```

## Use instead
Change the model as the finding's fix says (an op the converter supports), or stop asking for
the conversion.

## Options
None. What to convert comes from `convert:` / `--convert`; limits from `timeout` and
`isolation:`.

## References
- modelgate README, "Targets"
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.conversion_findings import failures
from modelgate.finding import Problem
from modelgate.graph import ModelGraph
from modelgate.rule import Note, Skip

ID = "MG107"
NAME = "conversion-failed"
SEVERITY = "error"
NEEDS = "checks"
OPTIONS: dict = {}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem | Skip | Note]:
    yield from failures(graph, None)  # the targets that name no FAILURE_RULE (targets/)
