"""A file of weights has a build recipe, and the build failed.

## What it does
Reports a build recipe (`models:` in the config, a Hugging Face folder, a pickled module
whose classes `pickle.allow` lists) that could not make the model modelgate checks: the
callable could not be imported or raised, it returned no `nn.Module`, the checkpoint could not
be read with `torch.load(weights_only=True)`, the recipe gives no inputs, or `torch.export`
failed on the built module. The message says at which stage and why; keys that do not fit are
MG111's. A folder that only looks like a Hugging Face model (transformers is not installed, it
does not know the model type, its kind has no default inputs) is not a finding unless a
`models:` entry names it: the report notes why it was not built, and MG106 reports the
conversions that were asked for.

## Why is this bad?
The recipe was written so that the checkpoint gets the full check (graph rules, conversions,
compression, the budget). A build that fails leaves only the checkpoint's metadata checked; the
gate must not pass as if the rest had been done. A model that `torch.export` cannot export
will not reach ExecuTorch, Core ML (from `.pt2`) or LiteRT either.

## Example
```yaml
models:
  - path: "checkpoints/*.pth"
    build: "models.net:biuld"
```

## Use instead
```yaml
    build: "models.net:build"
    inputs: [{name: image, shape: [1, 3, 224, 224]}]
```

## Options
None.

## References
- modelgate README, "Checkpoints: build recipes"
- [torch.export](https://pytorch.org/docs/stable/export.html)
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph

ID = "MG112"
NAME = "build-failed"
SEVERITY = "error"
NEEDS = "weights"
OPTIONS: dict = {}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    built = graph.build
    if built is None or built.ok or built.refused or not built.keys_fit:
        return
    where = f" while {built.stage}" if built.stage else ""
    error = (built.error or "no reason given").removeprefix("BuildError: ")
    yield Problem(
        f"{built.label} could not build the model{where}: {error}",
        Location(graph.path),
        fix=_fix(built.stage or ""),
        key=f"build:{built.stage}",
    )


def _fix(stage: str) -> str:
    if stage.startswith("exporting"):
        return (
            "make the module exportable with torch.export (see the error), or give the inputs "
            "it is deployed with in the recipe's inputs:"
        )
    if stage.startswith("choosing"):
        return "give the inputs it is deployed with: inputs: [{name: ..., shape: [...]}]"
    return "fix the recipe (build: module:callable, kwargs:) so that it builds the model"
