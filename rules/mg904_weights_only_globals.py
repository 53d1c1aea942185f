"""`torch.load(weights_only=True)` will reject globals that this checkpoint uses.

## What it does
Lists the globals a `torch.save` pickle uses that modelgate read as inert values but that
`torch.load(path, weights_only=True)` (the default since PyTorch 2.6) rejects unless they are
allowed: `argparse.Namespace` hyper-parameters, `pathlib` paths, `datetime` values, numpy
arrays, scalars and dtypes, `collections.deque` / `defaultdict`, Lightning's `AttributeDict`,
and classes you allowed under `pickle: allow:`. The fix is the exact
`torch.serialization.add_safe_globals([...])` call, including the numpy dtype classes the
pickle never names but torch checks. Where allowing is not enough (torch's unpickler fills
only plain dicts, `OrderedDict` and `Counter` item by item, and extends only lists), it says
that the file cannot be loaded with `weights_only=True` at all.

## Why is this bad?
Deployment and resume code loads checkpoints with `weights_only=True`. A checkpoint that
passes every other check still fails there with `Unsupported global: GLOBAL argparse.Namespace`,
usually on the machine where nobody can debug it.

## Example
```python
torch.save({"state_dict": model.state_dict(), "hparams": args}, "model.ckpt")  # Namespace
```

## Use instead
```python
torch.save({"state_dict": model.state_dict(), "hparams": vars(args)}, "model.ckpt")
# or, where the file is loaded:
torch.serialization.add_safe_globals([argparse.Namespace])
```

## Options
None. The finding is `info`; set it to `warning` or `error` to require checkpoints that load
with `weights_only=True` as they are.

## References
- torch.load weights_only, https://pytorch.org/docs/stable/notes/serialization.html#weights-only
- torch.serialization.add_safe_globals,
  https://pytorch.org/docs/stable/notes/serialization.html#torch.serialization.add_safe_globals
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph

ID = "MG904"
NAME = "weights-only-globals"
SEVERITY = "info"
NEEDS = "file"
OPTIONS: dict = {}

_SHOWN = 12  # names in the message; the fix always has them all


def _expression(name: str) -> str:
    """How the global is written in Python where it is allowed."""
    if name.startswith("builtins."):
        return name.removeprefix("builtins.")
    if name.startswith("numpy.core."):  # numpy 1 pickles; numpy 2 keeps the old path working
        return f'({name}, "{name}")'
    return name


def _imports(names: list[str]) -> str:
    modules = {n.rpartition(".")[0] for n in names} - {"", "builtins"}
    # "import numpy.dtypes" binds numpy too: name each package once, by its deepest module
    kept = sorted(m for m in modules if not any(o.startswith(m + ".") for o in modules))
    return f"import {', '.join(kept)}; " if kept else ""


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    info = graph.metadata.get("weights_only")
    if not info:
        return
    needs: list[str] = info.get("needs", [])
    blocked: dict[str, str] = info.get("blocked", {})
    location = Location(graph.path, member=info.get("member"))
    unsafe = " (the MG901 globals come on top)" if graph.pickle_issues else ""
    if blocked:
        why = "; ".join(f"{name} {reason}" for name, reason in blocked.items())
        yield Problem(
            "torch.load(weights_only=True) cannot load this file, even with add_safe_globals: "
            f"{why}{unsafe}",
            location,
            fix=_blocked_fix(blocked),
            key="weights-only",
        )
        return
    shown = ", ".join(needs[:_SHOWN]) + (
        f" and {len(needs) - _SHOWN} more" if len(needs) > _SHOWN else ""
    )
    yield Problem(
        f"torch.load(weights_only=True) rejects {len(needs)} global"
        f"{'s' if len(needs) != 1 else ''} this pickle uses: {shown}{unsafe}",
        location,
        fix=f"where the file is loaded: {_imports(needs)}torch.serialization.add_safe_globals("
        f"[{', '.join(_expression(n) for n in needs)}])",
        key="weights-only",
    )


def _blocked_fix(blocked: dict[str, str]) -> str:
    """What lets torch's weights_only unpickler read the file, by what blocks it."""
    fixes = []
    if any(name.startswith("opcode ") for name in blocked):
        fixes.append("re-save it with torch.save's default pickle protocol (2)")
    if any(name.startswith("the legacy") for name in blocked):
        fixes.append("re-save it with torch.save from torch 1.6 or later")
    if any(not name.startswith(("opcode ", "the legacy")) for name in blocked):
        fixes.append("save these as plain dicts and lists (dict(hparams), list(queue)) before "
                     "torch.save")  # fmt: skip
    return "; ".join(fixes) + ", or load the file with weights_only=False only where you trust it"
