"""ExecuTorch: PyTorch's on-device runtime, lowered to XNNPACK (or Core ML, Vulkan), run here.

The target module for ExecuTorch (see :mod:`modelgate.target` for what a target declares).
The step lowers a ``torch.export`` program with ``to_edge_transform_and_lower`` and the
partitioner of the configured backend (``executorch: {backend: xnnpack}``, the default; or
``coreml``, ``vulkan``), writes the ``.pte`` and reports:

- delegation: delegated and total nodes, and each op left on portable kernels with its count
  and its share of the model's MACs (what runs slowly: a model can lower, write a ``.pte`` and
  then run many times slower than on ONNX Runtime because a heavy op stayed portable);
- the ops the ``.pte`` needs that the installed runtime has no kernel for (the program's
  operator list against ``Runtime.get().operator_registry``): such a ``.pte`` does not load,
  which nothing says until it runs on the device (MG108);
- its size, and drift and latency from running the ``.pte`` in the ExecuTorch runtime here,
  with its threadpool at ``measure.threads``. A backend whose delegate this machine's runtime
  does not register (Core ML runs on Apple devices, Vulkan on GPUs) is lowered and reported
  the same, and its ``.pte`` is not run: drift and latency are not measured, with that reason.

MG003 predicts from ``executorch_ops.json``: what lowering with XNNPACK and the runtime's
kernel registry did with each op on torch's own OpInfo samples (``tools/gen_target_ops.py
executorch``), since ExecuTorch has no registry that says what will lower and load. The
prediction is XNNPACK's: with another backend, ``--convert executorch`` is the check.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
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
DRIFT_OF = "ExecuTorch runtime"  # declared once for every backend: the drift's method names it
RUNTIME = "ExecuTorch runtime"
# MG003: what lowering with XNNPACK and the kernel registry did with each op on torch's OpInfo
# samples (tools/gen_target_ops.py executorch)
OP_TABLE = "executorch_ops.json"
LOADING = "loading the program in the ExecuTorch runtime"
STAGE_LABELS = {LOADING: "ExecuTorch program"}
LATER_STAGES = (LOADING,)  # lowered: a failure there is the runtime's (MG108)
MODULES = (
    "torch",
    "numpy",
    "executorch.exir",
    "executorch.devtools.backend_debug",
    "executorch.runtime",
)
INSTALL = {"coremltools": "pip install coremltools (ExecuTorch's Core ML partitioner)"}
NO_EXPORT = "ExecuTorch lowers torch.export programs; save the model with torch.export.save (.pt2)"


@dataclass(frozen=True)
class Backend:
    """A delegate ExecuTorch lowers to: its partitioner, and the name its runtime registers."""

    name: str  # the config's value: executorch: {backend: coreml}
    label: str  # in the report: "4/5 nodes on Core ML"
    module: str  # its partitioner's module (preloaded by the worker)
    partitioner: str  # the class in it
    delegate: str  # the backend the ExecuTorch runtime registers to run it
    runs_on: str = "CPUs"  # where its delegate runs (the reason a .pte is not run here)
    needs: tuple[str, ...] = ()  # what else its partitioner imports


# the backends whose partitioners lower here (executorch 1.5.1, Linux x86-64)
BACKENDS = {
    b.name: b
    for b in (
        Backend("xnnpack", "XNNPACK", "executorch.backends.xnnpack.partition.xnnpack_partitioner",
                "XnnpackPartitioner", "XnnpackBackend"),
        Backend("coreml", "Core ML", "executorch.backends.apple.coreml.partition",
                "CoreMLPartitioner", "CoreMLBackend", "Apple devices", ("coremltools",)),
        Backend("vulkan", "Vulkan", "executorch.backends.vulkan.partitioner.vulkan_partitioner",
                "VulkanPartitioner", "VulkanBackend", "Vulkan GPUs"),
    )
}  # fmt: skip


@dataclass(frozen=True)
class ExecuTorchSettings:
    backend: str = "xnnpack"


def settings_schema() -> dict[str, Any]:
    """The ``executorch:`` section of the config."""
    return {
        "description": "ExecuTorch lowering settings",
        "type": "object",
        "properties": {
            "backend": {
                "description": "the delegate the program is lowered to: "
                + ", ".join(f"{b.name} ({b.label}, runs on {b.runs_on})" for b in BACKENDS.values())
                + "; a .pte this machine's ExecuTorch runtime cannot run is lowered and "
                "reported, not run",
                "enum": list(BACKENDS),
                "default": "xnnpack",
            },
        },
        "additionalProperties": False,
    }


def parse_settings(doc: dict[str, Any]) -> ExecuTorchSettings:
    return ExecuTorchSettings(**doc)


def job_options(settings: Any) -> dict[str, Any]:
    return {"backend": settings.of(NAME).backend}


def _backend(job: Any) -> Backend:
    """The job's backend (a probe job of :func:`modules` has no options: its settings')."""
    return BACKENDS[job.options.get("backend") or job.settings.of(NAME).backend]


def refuses(fmt: str) -> str | None:
    if fmt == "onnx":
        return "ExecuTorch has no ONNX frontend"
    if fmt == "torchscript":
        return NO_EXPORT
    return None


def summary(result: dict[str, Any]) -> str:
    """The target matrix's detail: "3/7 nodes on XNNPACK; portable: aten::mean x1" (and why
    the ``.pte`` was not run, for a backend this machine's runtime lacks)."""
    portable = ", ".join(f"{e['op']} x{e['count']}" for e in result.get("portable_ops") or [])
    backend = result.get("backend") or "its delegate"
    text = f"{result.get('delegated_nodes')}/{result.get('nodes')} nodes on {backend}"
    if result.get("missing_kernels"):
        text += f"; no kernel for {', '.join(result['missing_kernels'])}"
    text += f"; portable: {portable}" if portable else ""
    run = result.get("run") or {}
    return text + (f"; not run: {run['error']}" if run.get("error") else "")


def modules(job: Any) -> list[str]:
    """The common modules and the configured backend's partitioner (with what it needs)."""
    backend = _backend(job)
    return [*MODULES, backend.module, *backend.needs]


def warm() -> None:
    """Build the XNNPACK partitioner's patterns once in the worker (about 6 s here, 17 s on
    slower machines), by lowering a two-layer model: each step forks from the worker and
    inherits them, so a lowering then costs about 2 s instead of 6 s. Only when XNNPACK is
    the backend: the worker preloaded the configured backend's partitioner (:func:`modules`),
    and Core ML's and Vulkan's first lowering costs what the next ones do (Vulkan's
    partitioner imports XNNPACK's, so it is the other partitioners that are looked for)."""
    if any(b.module in sys.modules for b in BACKENDS.values() if b.name != "xnnpack"):
        return
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
    """In the child: lower, report delegation and missing kernels, then run the ``.pte`` (not
    run, with the reason, when this machine's runtime has no delegate for the backend)."""
    import importlib

    from executorch.exir import to_edge_transform_and_lower

    from modelgate.checks import steps

    backend = _backend(job)
    doing = f"{CONVERTING} ({backend.label})"
    emit.stage(f"executorch: {doing}")
    start = time.perf_counter()
    try:
        partitioner = getattr(importlib.import_module(backend.module), backend.partitioner)
        edge = to_edge_transform_and_lower(model.program, partitioner=[partitioner()])
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
        "backend": backend.label,
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
    if backend.delegate not in delegates():
        why = (
            f"the {backend.label} delegate runs on {backend.runs_on}; this machine's ExecuTorch "
            f"runtime has no {backend.delegate}"
        )
        facts["run"] = {  # latency: not measured, with the reason (MG104 says it)
            "ok": False, "error": why, "elsewhere": "measure it on the device, or check with "
            "a backend this machine runs (executorch: {backend: xnnpack})",
        }  # fmt: skip
        emit("executorch", facts)
        if reference is not None:
            emit("executorch_drift", {"error": why})
        return
    threads = threadpool(job.settings.measure.threads)  # before loading: see threadpool()
    emit.stage(f"executorch: {LOADING}")
    try:
        method = _method(buffer)
    except Exception as exc:
        emit("executorch", {**facts, "ok": False, "stage": LOADING,
                            **steps.converter_error(exc, job)})  # fmt: skip
        return
    emit("executorch", facts)
    _run(emit, job, method, samples, reference, backend, threads)


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


def delegates() -> set[str]:
    """The delegates the installed ExecuTorch runtime registers ("XnnpackBackend", ...)."""
    from executorch.runtime import Runtime

    return set(Runtime.get().backend_registry.registered_backend_names)


def threadpool(threads: int) -> int | str:
    """Set the ExecuTorch threadpool (what XNNPACK runs on) to ``threads`` threads; the count
    it then has (read back), or, if this ExecuTorch cannot set it, "default (N)" with the
    count it has. Before the method is loaded: an XNNPACK method holds the pool it was loaded
    with, and a reset replaces that pool (the call is "unsafe" for that reason)."""
    from executorch.extension.pybindings import portable_lib

    reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
    count = getattr(portable_lib, "_threadpool_get_thread_count", lambda: None)
    if reset is not None:
        with contextlib.suppress(Exception):  # an experimental call: else the pool it has
            reset(threads)
    have = count()
    if reset is not None and have == threads:
        return have
    return "default" + (f" ({have})" if have is not None else "")


def _method(buffer: bytes) -> Any:
    from executorch.runtime import Runtime

    return Runtime.get().load_program(buffer).load_method("forward")


def _run(
    emit: Emit,
    job: Any,
    method: Any,
    samples: list[list[np.ndarray]],
    reference: list[np.ndarray] | None,
    backend: Backend,
    threads: int | str,
) -> None:
    from importlib import metadata

    from modelgate.checks import steps

    def call(sample: list[np.ndarray]) -> list[np.ndarray]:
        return [o.detach().float().numpy() for o in method.execute(steps.tensors(sample))]

    inputs = steps.tensors(samples[0])
    label = backend.label
    steps.measure_converted(
        emit, job, call, samples, reference,
        runtime=f"ExecuTorch {metadata.version('executorch')} CPU ({label})",
        method=f"the .pte run by the ExecuTorch runtime ({label}) on this CPU against torch, "
        "same inputs",
        model="the lowered .pte",
        threads=threads if isinstance(threads, int) else f"{label}'s {threads}",
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
