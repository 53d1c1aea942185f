"""Native code inside a model archive.

## What it does
Flags archive members that are compiled code: shared libraries (`.so`, `.dylib`, `.dll`),
GPU binaries (`.cubin`, `.fatbin`, `.ptx`), or any member with an ELF or Mach-O header.

## Why is this bad?
Loading an AOTInductor package or an archive with bundled kernels maps and runs that code
with the loader's privileges; no scanner can tell what it does. A model repository rarely
means to ship binaries in a pull request, and reviewers cannot read them.

## Example
```python
torch._inductor.aoti_compile_and_package(ep, package_path="model.pt2")  # bundles model.so
```

## Use instead
Ship the exported program (`torch.export.save`) and compile on the target, or set this rule
to `warning` for repositories that intentionally ship AOTInductor packages from trusted CI.

## Options
None.

## References
- AOTInductor, https://pytorch.org/docs/stable/torch.compiler_aot_inductor.html
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph

ID = "MG903"
NAME = "native-code"
SEVERITY = "error"
NEEDS = "file"
OPTIONS: dict = {}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    for member in graph.native_code:
        yield Problem(
            f"{member} is native code: loading this archive runs it",
            Location(graph.path, member=member),
            fix="ship the exported program without compiled artifacts, or review and allow it",
            key=f"native:{member}",
        )
