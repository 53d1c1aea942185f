"""A checkpoint's weights do not fit the module its build recipe makes.

## What it does
When a build recipe (`models:` in the config, or a Hugging Face folder's `config.json`) makes
the module for a file of weights, modelgate loads the file's state dict into it before
exporting. This rule reports the keys that do not fit, listed by kind:
- missing: the module has the parameter or buffer, the file does not;
- unexpected: the file holds a tensor the module has no place for;
- mis-shaped: both have the key, with different shapes (file shape, then module shape).

A prefix that the whole checkpoint shares and the module lacks (`model.` of a
LightningModule's attribute, `module.` of DistributedDataParallel) is stripped first; the
recipe's `prefix:` sets it when the one that fits best is not the right one.

## Why is this bad?
The recipe and the checkpoint disagree: either the recipe builds another architecture than the
one trained (wrong `kwargs`, a changed model file), or the checkpoint is not what its path says.
Nothing after this can be trusted, so the model is not exported, converted or measured (MG106
and MG304 say so for what was asked).

## Example
```yaml
models:
  - path: "checkpoints/*.pth"
    build: "models.net:build"
    kwargs: {num_classes: 10}   # the checkpoint was trained with 100
```

## Use instead
```yaml
    kwargs: {num_classes: 100}
```

## Options
None.

## References
- modelgate README, "Checkpoints: build recipes"
- [torch.nn.Module.load_state_dict](https://pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module.load_state_dict)
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph

ID = "MG111"
NAME = "recipe-mismatch"
SEVERITY = "error"
NEEDS = "weights"
OPTIONS: dict = {}

_SHOWN = 6


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    built = graph.build
    if built is None or built.keys_fit:
        return
    parts = []
    for kind, keys in (("missing", built.missing), ("unexpected", built.unexpected)):
        if keys:
            parts.append(f"{len(keys)} {kind} ({_some(keys)})")
    if built.mismatched:
        shown = [
            f"{m[0]}: file {_dims(m[1])}, module {_dims(m[2])}" if len(m) == 3 else str(m[0])
            for m in built.mismatched
        ]
        parts.append(f"{len(shown)} mis-shaped ({_some(shown)})")
    counts = built.counts
    held = (
        f" (file {counts['checkpoint']} tensors, module {counts['module']})"
        if {"checkpoint", "module"} <= set(counts)
        else ""
    )
    yield Problem(
        f"the weights do not fit the module {built.label} makes{held}: " + "; ".join(parts),
        Location(graph.path, tensor=(built.missing or built.unexpected or [None])[0]),
        fix="make the recipe build the architecture the checkpoint was trained with (its "
        "kwargs), or set prefix: / state_dict: in the recipe where the keys sit elsewhere",
        key="keys",
    )


def _some(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", … {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def _dims(shape: object) -> str:
    if isinstance(shape, (list, tuple)):
        return "x".join(str(d) for d in shape) or "scalar"
    return str(shape)
