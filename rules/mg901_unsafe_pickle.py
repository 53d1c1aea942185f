"""A pickle inside the model file would run code when loaded.

## What it does
Scans every pickle in the file before anything is unpickled (every archive member that is a
pickle, nested archives, the legacy `torch.save` layout, `.pt2` sample inputs and pickled
constants) and flags each global outside the allow-list of what tensors and plain containers
need, naming it, what the pickle does with it and the member. The opcodes are read exactly as
CPython's unpickler (`pickle.Unpickler`, what `torch.load` uses) reads them: frames, the memo,
`STACK_GLOBAL`, protocols 0-5. A global that is a known code-execution gadget (`os.system`,
`subprocess`, `builtins.eval` / `exec` / `getattr` / `__import__`, `runpy`, `torch.hub`,
nested `pickle.loads` / `torch.load`, `functools.partial` and `operator` chains, ...) says so:
"calls os.system while loading: a known code-execution gadget (runs a shell command)", so an
attack reads differently from a class of your own that is merely not allowed.

A pickle whose opcode stream the scanner cannot follow exactly is flagged too ("cannot
follow the pickle: ..."): fail closed. That is every stream CPython's readers could read
differently, such as fickling's frame-boundary trick (an opcode that runs past the end of its
`FRAME`, which the C unpickler reading a file executes differently from a linear reader),
`EXT` codes (the loading program's copyreg registry names the global), a `STACK_GLOBAL` on
values only running the pickle would produce, and a stream that ends before `STOP`. So is
TorchScript code that `torch.jit.load` would run (a `__setstate__`) calling anything but
PyTorch's tensor ops.

## Why is this bad?
Pickle is a program. `torch.load` of a file from a pull request can run `os.system`,
`exec` or anything importable, on a developer's laptop or a CI runner with secrets. A model
that pickles its own classes (`torch.save(model)`) also breaks when the code moves.

## Example
```python
torch.save(model, "model.pt")          # pickles __main__.Net: code runs at load
```

## Use instead
```python
torch.save(model.state_dict(), "model.pt")
# or: safetensors.torch.save_file(model.state_dict(), "model.safetensors")
```
If you trust a class of your own, allow it in `modelgate.yaml`:
```yaml
pickle:
  allow: ["mypackage.models.*"]
```
A known gadget is never allowed by advice of this rule; a stream the scanner cannot follow
cannot be allowed at all.

## Options
None (the allow-list is extended under `pickle: allow:` at the top of the config).

## References
- Python pickle security warning, https://docs.python.org/3/library/pickle.html
- torch.load weights_only, https://pytorch.org/docs/stable/generated/torch.load.html
- fickling's frame-boundary bypass tests, https://github.com/trailofbits/fickling
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph
from modelgate.loaders.hostile import explain

ID = "MG901"
NAME = "unsafe-pickle"
SEVERITY = "error"
NEEDS = "file"
OPTIONS: dict = {}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    for issue in graph.pickle_issues:
        message = f"{issue.member}: {issue.detail}"
        name = issue.global_name
        if name is None:
            fix = (
                "a checkpoint of tensors never needs this: re-save the state dict or safetensors "
                "(pickle.allow cannot admit a stream modelgate cannot follow)"
            )
        elif explain(name) is not None or name.startswith("builtins."):
            fix = (
                f"do not load this file: {name} runs code; never add it to pickle.allow. "
                "If the file is yours, re-save the state dict or safetensors"
            )
        else:
            trust = "a function it calls" if issue.usage == "call" else "its class"
            fix = (
                "save the state dict instead (torch.save(model.state_dict())), or if you "
                f'trust {trust}, allow it in modelgate.yaml: pickle: {{allow: ["{name}"]}}'
            )
        yield Problem(
            message,
            Location(graph.path, member=issue.member),
            fix=fix,
            key=f"{issue.member}:{name or 'stream'}",
        )
