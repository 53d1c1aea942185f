"""ExecuTorch: PyTorch's on-device runtime, lowered to XNNPACK, run on this machine's CPU.

The target module for ExecuTorch (see :mod:`modelgate.target` for what a target declares).
The step lowers a ``torch.export`` program with ``to_edge_transform_and_lower`` and the
XNNPACK partitioner, writes the ``.pte`` and reports:

- delegation: delegated and total nodes, and each op left on portable kernels with its count
  and its share of the model's MACs (what runs slowly: a model can lower, write a ``.pte`` and
  then run many times slower than on ONNX Runtime because a heavy op stayed portable);
- the ops the ``.pte`` needs that the installed runtime has no kernel for (the program's
  operator list against ``Runtime.get().operator_registry``): such a ``.pte`` does not load,
  which nothing says until it runs on the device (MG108);
- its size, and drift and latency from running the ``.pte`` in the ExecuTorch runtime here.

There is no static op table: MG003 says so, and ``--convert executorch`` is the check.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the step's types; what it uses is imported in the child, when it runs
    import numpy as np

    from modelgate.checks import steps
    from modelgate.checks.isolate import Emit

NAME = "executorch"
LABEL = "ExecuTorch"
EXTRA = "executorch"
REQUIRES = ("torch", "executorch")
CONVERSION = "ExecuTorch lowering"
CONVERTING = "lowering to ExecuTorch"
OP_FIX = "rewrite it with ops ExecuTorch has kernels for, or register a custom kernel"
FAILURE_FIXES = {
    "error": "make the op lowerable: rewrite it with core ATen ops, or register a custom op "
    "with its ExecuTorch kernel",
    "crash": "the ExecuTorch lowering crashed: report it to executorch with the model",
}
DRIFT_LABEL = "the ExecuTorch program"
DRIFT_OF = "ExecuTorch runtime (XNNPACK)"
RUNTIME = "ExecuTorch runtime"
BACKEND = "XNNPACK"
LOADING = "loading the program in the ExecuTorch runtime"
STAGE_LABELS = {LOADING: "ExecuTorch program"}
LATER_STAGES = (LOADING,)  # lowered: a failure there is the runtime's (MG108)
MODULES = (
    "torch",
    "numpy",
    "executorch.exir",
    "executorch.backends.xnnpack.partition.xnnpack_partitioner",
    "executorch.devtools.backend_debug",
    "executorch.runtime",
)
NO_EXPORT = "ExecuTorch lowers torch.export programs; save the model with torch.export.save (.pt2)"


def refuses(fmt: str) -> str | None:
    if fmt == "onnx":
        return "ExecuTorch has no ONNX frontend"
    if fmt == "torchscript":
        return NO_EXPORT
    return None


PREDICTS = False  # no static op table: MG003 says so; --convert executorch is the check


def summary(result: dict[str, Any]) -> str:
    """The target matrix's detail: "3/7 nodes on XNNPACK; portable: aten::mean x1"."""
    portable = ", ".join(f"{e['op']} x{e['count']}" for e in result.get("portable_ops") or [])
    text = f"{result.get('delegated_nodes')}/{result.get('nodes')} nodes on {BACKEND}"
    if result.get("missing_kernels"):
        text += f"; no kernel for {', '.join(result['missing_kernels'])}"
    return text + (f"; portable: {portable}" if portable else "")


def modules(job: Any) -> list[str]:
    return list(MODULES)


def warm() -> None:
    """Build the XNNPACK partitioner's patterns once in the worker (about 6 s here, 17 s on
    slower machines), by lowering a two-layer model: each step forks from the worker and
    inherits them, so a lowering then costs about 2 s instead of 6 s."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval()
    program = torch.export.export(model, (torch.zeros(1, 4),))
    to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()


def step(
    emit: Emit,
    job: steps.Job,
    model: steps.Loaded,
    samples: list[list[np.ndarray]],
    reference: list[np.ndarray] | None,
) -> None:
    """In the child: lower, report delegation and missing kernels, then run the ``.pte``."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from modelgate.checks import steps

    doing = f"{CONVERTING} ({BACKEND})"
    emit.stage(f"executorch: {doing}")
    start = time.perf_counter()
    try:
        edge = to_edge_transform_and_lower(model.program, partitioner=[XnnpackPartitioner()])
        # before to_executorch(), which rewrites the graph in place (out variants, memory)
        delegated = delegation(edge.exported_program().graph_module, model.program.graph_module)
        program = edge.to_executorch()
        buffer = program.buffer
    except Exception as exc:
        emit("executorch", {"ok": False, "stage": doing, **steps.converter_error(exc, job)})
        return
    facts: dict[str, Any] = {
        "ok": True,
        "seconds": round(time.perf_counter() - start, 3),
        "bytes": len(buffer),
        "backend": BACKEND,
        **delegated,
    }
    needed = program_operators(program)
    missing = sorted(set(needed) - kernels())
    facts["operators"] = needed
    if missing:
        facts.update(
            ok=False,
            kind="error",
            stage=LOADING,
            op=_bare(missing[0]),
            error=f"the ExecuTorch runtime has no kernel for {', '.join(missing)}: the .pte "
            "will not load",
            missing_kernels=missing,
        )
        emit("executorch", facts)
        return
    emit.stage(f"executorch: {LOADING}")
    try:
        method = _method(buffer)
    except Exception as exc:
        emit("executorch", {**facts, "ok": False, "stage": LOADING,
                            **steps.converter_error(exc, job)})  # fmt: skip
        return
    emit("executorch", facts)
    _run(emit, job, method, samples, reference)


def delegation(lowered: Any, original: Any) -> dict[str, Any]:
    """Delegated and total nodes, and the ops left on portable kernels: their count and their
    share of the model's MACs (convolutions, linear layers and matrix products)."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(lowered)
    portable: dict[str, dict[str, Any]] = {}
    total_macs = sum(_macs(n) for n in original.graph.nodes if n.op == "call_function")
    for node in lowered.graph.nodes:
        if node.op != "call_function" or _is_plumbing(node):
            continue
        name = _op_name(node)
        entry = portable.setdefault(name, {"op": name, "count": 0, "macs": 0})
        entry["count"] += 1
        entry["macs"] += _macs(node)
    for entry in portable.values():
        entry["macs_share"] = round(entry["macs"] / total_macs, 4) if total_macs else None
    return {
        "delegated_nodes": info.num_delegated_nodes,
        "nodes": info.num_delegated_nodes + info.num_non_delegated_nodes,
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "portable_ops": sorted(portable.values(), key=lambda e: (-e["macs"], -e["count"])),
        "macs": total_macs,
    }


def program_operators(program: Any) -> list[str]:
    """The operators the ``.pte``'s program needs a kernel for: "aten::sort.values"."""
    out = []
    for plan in program.executorch_program.execution_plan:
        for op in plan.operators:
            out.append(f"{op.name}.{op.overload}" if op.overload else op.name)
    return sorted(set(out))


def kernels() -> set[str]:
    """The kernels the installed ExecuTorch runtime registers."""
    from executorch.runtime import Runtime

    return set(Runtime.get().operator_registry.operator_names)


def _method(buffer: bytes) -> Any:
    from executorch.runtime import Runtime

    return Runtime.get().load_program(buffer).load_method("forward")


def _run(
    emit: Emit,
    job: Any,
    method: Any,
    samples: list[list[np.ndarray]],
    reference: list[np.ndarray] | None,
) -> None:
    from importlib import metadata

    from modelgate.checks import steps

    def call(sample: list[np.ndarray]) -> list[np.ndarray]:
        return [o.detach().float().numpy() for o in method.execute(steps.tensors(sample))]

    inputs = steps.tensors(samples[0])
    steps.measure_converted(
        emit, job, call, samples, reference,
        runtime=f"ExecuTorch {metadata.version('executorch')} CPU ({BACKEND})",
        method=f"the .pte run by the ExecuTorch runtime ({BACKEND}) on this CPU against torch, "
        "same inputs",
        model="the lowered .pte", threads=f"{BACKEND}'s default",
        timed=lambda: method.execute(inputs),
    )  # fmt: skip


_PLUMBING = ("executorch_call_delegate", "getitem", "alloc", "sym_size")


def _is_plumbing(node: Any) -> bool:
    name = getattr(node.target, "__name__", str(node.target))
    return any(p in name for p in _PLUMBING)


def _op_name(node: Any) -> str:
    """ "aten::native_layer_norm" for an edge node (its schema name, without the overload)."""
    schema = getattr(node.target, "_schema", None)
    if schema is not None:
        return schema.name
    return str(getattr(node.target, "__name__", node.target))


def _bare(kernel: str) -> str:
    """ "aten::sort.values" -> "sort" (how the finding locates the op in the graph)."""
    return kernel.split("::")[-1].split(".")[0]


def _macs(node: Any) -> int:
    """Multiply-accumulates of a convolution, linear layer or matrix product node, from its
    recorded shapes; 0 for everything else."""
    name = _op_name(node).split("::")[-1]
    out = node.meta.get("val")
    shape = getattr(out, "shape", None)
    if shape is None:
        return 0
    outputs = math.prod(int(d) for d in shape)
    args = [a.meta.get("val") for a in node.args if hasattr(a, "meta")]
    shapes = [tuple(int(d) for d in a.shape) for a in args if hasattr(a, "shape")]
    if name in ("conv1d", "conv2d", "conv3d", "convolution") and len(shapes) > 1:
        weight = shapes[1]
        return outputs * math.prod(weight[1:])
    if name == "addmm" and len(shapes) > 2:  # addmm(bias, input, weight)
        return outputs * shapes[1][-1]
    if name in ("linear", "mm", "bmm", "matmul") and shapes and shapes[0]:
        return outputs * shapes[0][-1]
    return 0
