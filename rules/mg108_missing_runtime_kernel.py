"""The converted program needs an operator the target's runtime has no kernel for.

## What it does
After a conversion that wrote its program (`convert:` / `--convert`), compares the operators
the program needs with the kernels the installed runtime registers, and reports each
operator that has none, located at the op of the model that made it. For ExecuTorch, the
`.pte`'s operator list against `executorch.runtime.Runtime.get().operator_registry`; for
LiteRT, the builtin ops the interpreter refuses when the model is loaded into it. Where the
runtime names the kernel otherwise than the graph names the op (LiteRT's `STABLEHLO_SORT`
for `aten::topk`), the op is found from what the target's toolchain was observed to make of
each op (`targets/<target>_ops.json`).

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

from modelgate import opsupport
from modelgate.conversion_findings import locate
from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph
from modelgate.target import Target
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
            where = _site(graph, target, kernel, (result or {}).get("op"))
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


def _site(graph: ModelGraph, target: Target, kernel: str, hint: str | None) -> dict:
    """Where the op that needs ``kernel`` is: found by the kernel's op name
    ("aten::sort.values" -> sort), by the op the step named ("STABLEHLO_SORT" -> sort), else
    by the ops the target says produced it on its samples (aten::topk, aten::msort)."""
    where = locate(graph, kernel.split("::")[-1].split(".")[0], None)
    if hint and "source" not in where:
        where = locate(graph, hint, None)
    if "source" in where:
        return where
    producers = set(target.kernel_ops(kernel))
    op = next((o for o in graph.ops if opsupport.overload_name(o) in producers), None)
    if op is None:
        return where
    return {"module": op.module, "op": op.target, "source": op.source}
