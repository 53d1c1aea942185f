"""Which ops each converter can convert, from the converters themselves (rule MG003).

The facts come from a snapshot generated from the installed converters
(``tools/gen_opsupport.py``: coremltools' torch op registry, torch.onnx's torchlib registry and
decomposition table, the legacy exporter's symbolic registry, and decompositions observed on
torch's own OpInfo samples), so the rule runs without torch or coremltools installed, as in a
pre-commit hook. When the installed coremltools is a different version from the snapshot's,
its live registry is used instead. The only hand-written logic mirrors the converters' own
name handling, and each piece cites where. The graph passes the converters run before looking
ops up are not mirrored here: the TorchScript loader runs them (``converter_views``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import metadata, resources
from typing import Any

from modelgate.graph import Op

# ----------------------------------------------------------------------------------------------
# name handling, mirroring the converters
# ----------------------------------------------------------------------------------------------


def overload_name(op: Op) -> str:
    """``OpOverload.name()`` of a graph op: "aten::add.Tensor", "aten::linear" (default
    overload), "higher_order::cond", "_operator.getitem" (how torch.export serializes them)."""
    if op.namespace in ("_operator", "operator", "builtins", "math"):
        return f"{op.namespace}.{op.opname}"
    if op.overload in (None, "", "default"):
        return op.target
    return f"{op.target}.{op.overload}"


def ct_sanitize(op_kind: str) -> str:
    """coremltools 9.0 converters/mil/frontend/torch/utils.py:118-166 ``sanitize_op_kind``."""

    def skip(kind: str, delim: str) -> str:
        split = kind.split(delim)
        start = 1 if split[0] in {"aten", "prim"} and len(split) > 1 else 0
        suffixes = {"default", "int", "tensor", "tensor_mode", "scalar", "tensor_scalar"}
        stop = -1 if split[-1] in suffixes and len(split) - start > 1 else len(split)
        return delim.join(split[start:stop])

    op_kind = op_kind.lower()
    if op_kind.startswith("__") and op_kind.endswith("__"):
        op_kind = op_kind[2:-2]
    return skip(skip(op_kind, "::"), ".")


def ct_unify_inplace(op_kind: str) -> str:
    """coremltools 9.0 .../torch/utils.py:169-179 ``unify_inplace_and_functional``."""
    return op_kind[:-1] if op_kind.endswith("_") else op_kind


def ct_torchscript_key(kind: str) -> str:
    """TorchScript lookup: internal_graph.py:208 sanitizes ``node.kind()``, and the registry's
    ``get_func`` (torch_op_registry.py:20-29) sanitizes that again and unifies in-place names.
    Twice matters: "aten::__getitem__" -> "__getitem__" -> "getitem"."""
    return ct_unify_inplace(ct_sanitize(ct_sanitize(kind)))


def ct_exported_key(name: str) -> str:
    """ExportedProgram lookup: internal_graph.py:280-289 sanitizes ``node.target.name()`` (or a
    callable's ``__name__``) and tests ``kind in registry``, without in-place unification."""
    if "::" in name:
        namespace, rest = name.split("::", 1)
        return ct_sanitize(rest if namespace == "higher_order" else name)
    return ct_sanitize(name.rsplit(".", 1)[-1])  # "_operator.getitem" -> "getitem"


# coremltools deletes prim::GetAttr before lookup (torchir_passes.py:232-256, converter.py:608).
_CT_TS_REMOVED = {"getattr"}
# The legacy ONNX exporter's TorchScript passes remove these before symbolic dispatch
# (torch/onnx/_internal/torchscript_exporter/utils.py, _optimize_graph). Only for graphs that
# did not go through those passes: the TorchScript loader runs them (converter_views), and
# MG003 then judges what they leave.
_ONNX_TS_REMOVED = {
    "prim::GetAttr", "prim::NumToTensor", "aten::Int", "aten::Float", "aten::ScalarImplicit",
    "prim::ImplicitTensorToNum", "prim::TupleUnpack", "prim::TupleIndex",
}  # fmt: skip


def _functional(name: str) -> str:
    """Functionalization's naming (torchgen): aten::add_.Tensor -> aten::add.Tensor."""
    namespace, _, rest = name.rpartition("::")
    op, dot, overload = rest.partition(".")
    if op.endswith("_") and not op.endswith("__"):
        op = op[:-1]
    return (f"{namespace}::" if namespace else "") + op + dot + overload


# ----------------------------------------------------------------------------------------------
# the tables
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Why an op will not convert. ``status`` is "unsupported" (every way it can go fails) or
    "unknown" (the converter rewrites it into ops the snapshot never saw)."""

    status: str
    reason: str
    stage: str | None = None  # where it fails when that is not the conversion ("loading")


class OpSupport:
    def __init__(self, snapshot: dict[str, Any], coreml_registry: set[str] | None = None,
                 coreml_version: str | None = None) -> None:  # fmt: skip
        self.snapshot = snapshot
        coreml = snapshot.get("coreml") or {}
        self.coreml_registry = coreml_registry or set(coreml.get("registry", ()))
        self.coreml_version = coreml_version or coreml.get("version", "?")
        generated = snapshot.get("generated", {})
        self.torch_version = str(generated.get("torch", "?")).split("+")[0]
        aten = snapshot.get("aten", {})
        self._mutable = set(aten.get("mutable", ()))
        self._cia = set(aten.get("cia_decomposed", ()))
        dynamo = snapshot.get("onnx_dynamo", {})
        self._onnx_registered = dynamo.get("registered", {})
        self._onnx_decomposed = set(dynamo.get("decomposed", ()))
        legacy = snapshot.get("onnx_torchscript", {})
        self.onnx_opset = int(legacy.get("default_opset", 17))
        self._symbolics = legacy.get("symbolics", {})
        observed = snapshot.get("decompositions", {})
        self._ep_decomp = observed.get("ep_inference", {})
        self._onnx_decomp = observed.get("onnx", {})

    # -- what each converter does to an op before looking it up --------------------------------
    def _after_run_decompositions(self, name: str) -> list[list[str]] | None:
        """What ``ExportedProgram.run_decompositions({})`` (required by coremltools for
        TRAINING-dialect programs) turns ``name`` into: alternative op lists, or None when
        it is decomposed into ops that were never observed."""
        if name in self._ep_decomp:
            return self._ep_decomp[name]
        if name in self._mutable:
            return [[_functional(name)]]
        if name in self._cia:
            return None
        return [[name]]

    def _onnx_ok(self, name: str) -> bool:
        return "real" in self._onnx_registered.get(name, ())

    def _after_onnx_decomposition(self, name: str) -> list[list[str]] | None:
        if name in self._onnx_decomp:
            return self._onnx_decomp[name]
        if self._onnx_ok(name):
            return [[name]]
        if name in self._mutable:
            return self._after_onnx_decomposition(_functional(name))
        if name in self._onnx_decomposed or name in self._cia:
            return None
        return [[name]]

    # -- verdicts ----------------------------------------------------------------------------
    def coreml(self, name: str, fmt: str, dialect: str | None) -> Verdict | None:
        if fmt == "torchscript":
            key = ct_torchscript_key(name)
            if key in _CT_TS_REMOVED or key in self.coreml_registry:
                return None
            return Verdict("unsupported", f"coremltools {self.coreml_version} has no converter "
                                          f"for {key!r}")  # fmt: skip
        alternatives = (
            self._after_run_decompositions(name)
            if (dialect or "TRAINING").upper() == "TRAINING"
            else [[name]]
        )
        if alternatives is None:
            return Verdict("unknown", "run_decompositions({}) rewrites it into ops modelgate "
                                      "has no record of")  # fmt: skip
        return self._judge(
            name, alternatives, lambda p: ct_exported_key(p) in self.coreml_registry,
            lambda bad: f"coremltools {self.coreml_version} has no converter for "
            + ", ".join(repr(ct_exported_key(b)) for b in bad),
        )  # fmt: skip

    def onnx(self, name: str, fmt: str) -> Verdict | None:
        if fmt == "torchscript":  # ScriptModules only export through the legacy exporter
            key = name[:-1] if name.endswith("_") else name  # utils.py:1731-1736
            if name in _ONNX_TS_REMOVED or key.startswith("onnx::"):
                return None
            low, high = self._symbolics.get(key, (1, 0))
            if low <= self.onnx_opset <= high:
                return None
            return Verdict("unsupported", f"torch.onnx (TorchScript exporter) has no symbolic "
                                          f"for {key!r} at opset {self.onnx_opset}")  # fmt: skip
        alternatives = self._after_onnx_decomposition(name)
        if alternatives is None:
            return Verdict("unknown", "torch.onnx decomposes it into ops modelgate has no "
                                      "record of")  # fmt: skip
        return self._judge(
            name, alternatives, self._onnx_ok,
            lambda bad: f"torch.onnx {self.torch_version} has no ONNX function for "
            + ", ".join(bad),
        )  # fmt: skip

    @staticmethod
    def _judge(name: str, alternatives: list[list[str]], ok: Any, say: Any) -> Verdict | None:
        """Unsupported only when every alternative fails. Ops that fail for some argument
        values only (batch_norm or dropout in training mode) are MG004's business."""
        if not alternatives:
            return None
        failing = [[p for p in alt if not ok(p)] for alt in alternatives]
        if not all(failing):
            return None
        bad = sorted({p for alt in failing for p in alt})
        via = "" if bad == [name] else " (what the converter decomposes it into)"
        return Verdict("unsupported", say(bad) + via)


def _installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def load() -> OpSupport:
    """The shipped snapshot, with the live coremltools registry when versions differ."""
    text = resources.files("modelgate").joinpath("data/opsupport.json").read_text("utf-8")
    snapshot = json.loads(text)
    shipped = (snapshot.get("coreml") or {}).get("version")
    installed = _installed("coremltools")
    if installed and installed != shipped:
        try:
            from coremltools.converters.mil.frontend.torch.torch_op_registry import (
                _TORCH_OPS_REGISTRY,
            )

            live = set(_TORCH_OPS_REGISTRY.name_to_func_mapping)
            return OpSupport(snapshot, live, installed)
        except Exception:  # a broken coremltools install: the snapshot still answers
            pass
    return OpSupport(snapshot)


# ----------------------------------------------------------------------------------------------
# observed tables: toolchains with no registry to read (tools/gen_target_ops.py)
# ----------------------------------------------------------------------------------------------


# How the toolchains say that an op itself has no support (the rest of their errors may be
# about a sample's arguments: LiteRT fails rfft for norm="ortho", not for the default):
# ExecuTorch's edge verifier (exir/verification/verifier.py) and out-variant pass,
# litert-torch's lowering registry (odml_torch/export.py), and a missing kernel (loading).
_NO_SUPPORT = re.compile(
    r"is not in Core ATen opset|Missing out variants|Lowering not found|Didn't find op for"
)


def _no_support(name: str, entry: dict[str, Any]) -> bool:
    """The toolchain said that this op itself has no support: the op its error names is this
    one ("aten.kthvalue.default is not in Core ATen opset" for aten::kthvalue). An error that
    names another op is about what the op became for the samples' arguments (batch_norm in
    training mode becomes _native_batch_norm_legit_functional; in eval mode it lowers)."""
    error = str(entry.get("error") or "")
    if not _NO_SUPPORT.search(error):
        return False
    named = set(re.findall(r"(?:aten\.|::)(\w+)", error))
    base = name.split("::")[-1].split(".")[0]
    return bool({base, base.rstrip("_")} & named)


class Observed:
    """What a target's real toolchain did with each op on torch's OpInfo samples, read from
    the table its module ships (``targets/<name>_ops.json``). Verdicts: "unsupported" (it
    failed on every sample it was the cause of), "depends" (it failed on some of its samples
    and not on others: its arguments decide), "unknown" (never observed), None (it went
    through)."""

    def __init__(self, table: dict[str, Any], label: str) -> None:  # label: "LiteRT interpreter"
        self.ops: dict[str, dict[str, Any]] = table.get("ops") or {}
        self.generated: dict[str, Any] = table.get("generated") or {}
        self.label = label

    @property
    def versions(self) -> str:
        """ "executorch 1.5.1, torch 2.13.0": what the table was generated with."""
        skip = {"at", "source", "opinfos", "samples", "timeouts", "crashed", "seconds", "backend"}
        return ", ".join(f"{k} {v}" for k, v in self.generated.items() if k not in skip)

    def _how(self, entry: dict[str, Any]) -> str:
        if entry.get("missing"):
            kernels = ", ".join(entry["missing"])
            return f"the program then needs {kernels}, which the {self.label} has no kernel for"
        return f"{entry.get('stage', 'conversion')} failed: {entry.get('error', '?')}"

    def verdict(self, name: str) -> Verdict | None:
        if name.startswith(("_operator.", "operator.", "builtins.", "math.")):
            return None  # python arithmetic on sizes: traced away, never an op
        entry = self.ops.get(name) or self.ops.get(_functional(name))
        if entry is None:
            return Verdict("unknown", "are not among the ops observed on torch's OpInfo samples")
        if entry["verdict"] == "fails" and (entry.get("missing") or _no_support(name, entry)):
            return Verdict("unsupported", f"{self._how(entry)} (observed with {self.versions} "
                                          "on torch's OpInfo samples)",
                           stage=entry.get("stage"))  # fmt: skip
        if entry["verdict"] == "fails":  # for a reason that may be the samples' arguments
            count = entry.get("samples", "?")
            return Verdict("depends", f"{count} of its {count} OpInfo samples failed, maybe "
                                      f"for their arguments: {self._how(entry)}")  # fmt: skip
        if entry["verdict"] == "mixed":
            return Verdict("depends", f"{entry['failed']} of its {entry['samples']} OpInfo "
                                      f"samples failed: {self._how(entry)}")  # fmt: skip
        return None

    def outside(self, op: Op, graph: Any) -> str | None:
        """Why the table does not speak for this use of ``op``: an input of a floating or
        complex dtype other than the one its samples had (``abs`` of an FFT's complex64
        output, a float16 model). OpInfo samples are made per input dtype."""
        sampled = str(self.generated.get("dtype") or "float32")
        dtypes = {v.dtype for n in op.inputs if (v := graph.value(n)) is not None}  # as sampled
        odd = sorted(d for d in dtypes if d and d.startswith(("float", "bfloat", "complex"))
                     and d != sampled)  # fmt: skip
        if not odd:
            return None
        return (
            f"take {', '.join(odd)} tensors, outside the {sampled} samples the table was "
            "observed on"
        )

    def producing(self, kernel: str) -> list[str]:
        """The ops whose samples needed ``kernel`` that the runtime lacks ("STABLEHLO_SORT"
        -> ["aten::sort", "aten::topk"]): where a missing-kernel failure comes from."""
        return sorted(n for n, e in self.ops.items() if kernel in (e.get("missing") or ()))


@cache
def observed(package: str, filename: str, label: str) -> Observed:
    """The observed table ``filename`` that a target module of ``package`` ships."""
    try:
        table = json.loads(resources.files(package).joinpath(filename).read_text("utf-8"))
    except (OSError, ValueError):  # a broken install: every op is unknown, and MG003 says so
        table = {}
    return Observed(table if isinstance(table, dict) else {}, label)
