"""The converted program needs an operator the target's runtime has no kernel for.

## What it does
After a conversion that wrote its program (`convert:` / `--convert`), compares the operators
the program needs with the kernels the installed runtime registers, and reports each
operator that has none, located at the op of the model that made it. For ExecuTorch, the
`.pte`'s operator list against `executorch.runtime.Runtime.get().operator_registry`.

## Why is this bad?
The conversion succeeded and wrote a file, so the build is green; the program then fails
when the device loads it ("Missing operator: aten::sort.values"). Nothing says so until it
runs on the device. The operator list is in the program and the registry is queryable, so
the failure is known at build time.

## Example
```python
values, _ = torch.sort(x, dim=1)   # lowers to aten::sort.values: no portable kernel
```

## Use instead
```python
values = torch.topk(x, k=x.shape[1], dim=1).values   # where the runtime has topk
```
or build the runtime with the kernel (a custom kernel library, or selective build with it).

## Options
None. What to convert comes from `convert:` / `--convert`.

## References
- ExecuTorch kernel registration, https://pytorch.org/executorch/stable/kernel-library-custom-aten-kernel.html
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.conversion_findings import locate
from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph
from modelgate.targets import REGISTRY as TARGETS

ID = "MG108"
NAME = "missing-runtime-kernel"
SEVERITY = "error"
NEEDS = "checks"
OPTIONS: dict = {}


def check(graph: ModelGraph, options: dict) -> Iterator[Problem]:
    checks = graph.checks
    for target in TARGETS:
        result = checks.of(target.name) if checks else None
        for kernel in (result or {}).get("missing_kernels") or []:
            bare = kernel.split("::")[-1].split(".")[0]
            where = locate(graph, bare, None)
            module = where.get("module")
            yield Problem(
                f"{module + ': ' if module else ''}the {target.runtime or target.label} has no "
                f"kernel for {kernel}: the converted program will not load",
                Location(
                    graph.path,
                    module=module,
                    op=where["op"] if "source" in where else kernel,  # found in the graph
                    source=where.get("source"),
                ),
                fix=f"rewrite the op with ones the {target.label} runtime has kernels for, or "
                "build the runtime with a kernel for it",
                key=f"{target.name}:{kernel}",
            )
