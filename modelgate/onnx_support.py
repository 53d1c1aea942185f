"""What an ONNX file needs from the runtime that loads it: opsets, op schemas, CPU kernels.

With onnxruntime installed the answers are the installed ONNX Runtime's own: its operator
schemas (which ops and opsets it knows) and its CPU execution provider's kernel registry
(each kernel's domain, version range and type constraints), as
``onnxruntime.capi.onnxruntime_pybind11_state`` exposes them. ONNX Runtime looks a node's
kernel up by the op's version at the model's opset and by the types of its inputs and
outputs; where none matches and the op is defined as an ONNX function, it expands the
function and looks up its ops instead. This module does the same over the graph view (value
types come from the loader's shape inference). Without onnxruntime it checks the ONNX
standard of the installed ``onnx`` package and says that kernels were not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from modelgate.graph import ModelGraph, Op

# Attributes that ONNX Runtime's CPU kernels refuse when they are created, although a
# kernel is registered (onnxruntime/core/providers/cpu/rnn/*.h: ORT_ENFORCE(layout == 0)).
_KERNEL_REFUSES = {
    ("", "RNN"): ("layout", 0, "batchwise (layout=1) RNNs"),
    ("", "GRU"): ("layout", 0, "batchwise (layout=1) GRUs"),
    ("", "LSTM"): ("layout", 0, "batchwise (layout=1) LSTMs"),
}
_OPEN = 2**31 - 1  # a kernel registered "from version N on"
_OFFICIAL = ("", "ai.onnx.ml")  # domains whose opset ONNX Runtime checks against its release


@dataclass(frozen=True)
class Issue:
    """Something the runtime will refuse, at an op (or the model, where ``op`` is None)."""

    op: Op | None
    message: str
    key: str
    fix: str


@dataclass(frozen=True)
class _Schema:
    since: int
    inputs: tuple[tuple[str, bool, bool], ...]  # (type or constraint, variadic, homogeneous)
    outputs: tuple[tuple[str, bool, bool], ...]
    constraints: frozenset[str]


class _Runtime:
    """ONNX Runtime's schemas and CPU kernels, or the ONNX standard when ``ort`` is False."""

    def __init__(self, ort: bool) -> None:
        self.schemas: dict[tuple[str, str], list[_Schema]] = {}
        self.kernels: dict[tuple[str, str], list[tuple[int, int, dict[str, list[str]]]]] = {}
        if ort:
            import onnxruntime
            from onnxruntime.capi import onnxruntime_pybind11_state as state

            self.name = f"ONNX Runtime {onnxruntime.__version__}"
            schemas: Any = state.get_all_operator_schema()
            for k in state.get_all_opkernel_def():
                if k.provider == "CPUExecutionProvider":
                    start, end = k.version_range
                    entry = (int(start), int(end), dict(k.type_constraints))
                    self.kernels.setdefault((k.domain, k.op_name), []).append(entry)
        else:
            import onnx

            self.name = f"the ONNX standard (onnx {onnx.__version__})"
            schemas = onnx.defs.get_all_schemas_with_history()
        self.kernels_known = ort
        for s in schemas:
            params = []
            for group in (s.inputs, s.outputs):
                params.append(tuple((_type_param(p), _variadic(p), _homogeneous(p)) for p in group))
            names = frozenset(t.type_param_str for t in s.type_constraints)
            schema = _Schema(int(s.since_version), params[0], params[1], names)
            self.schemas.setdefault((s.domain, s.name), []).append(schema)
        self.max_opsets: dict[str, int] = {}
        for (domain, _), found in self.schemas.items():
            top = max(s.since for s in found)
            self.max_opsets[domain] = max(self.max_opsets.get(domain, 0), top)
        if not ort:
            import onnx

            self.max_opsets[""] = max(self.max_opsets.get("", 0), onnx.defs.onnx_opset_version())

    def reason(self, op: Op, domain: str, version: int, types: tuple[Any, Any] | None,
               depth: int = 0) -> str | None:  # fmt: skip
        """Why the runtime cannot run ``op`` at opset ``version``, or None if it can."""
        name = op.opname
        found = self.schemas.get((domain, name))
        if not found:
            if domain in _OFFICIAL:
                return f"is not an op {self.name} knows"
            return f"is custom domain {domain!r}: runtimes need its custom-op library"
        usable = [s for s in found if s.since <= version]
        if not usable:
            first = min(s.since for s in found)
            return f"is not in the ONNX standard at opset {version} (added in opset {first})"
        schema = max(usable, key=lambda s: s.since)
        clash = _binding(schema, types)
        if clash:
            return f"{clash}: a type error {self.name} refuses at load"
        if not self.kernels_known or (domain, name) == ("", "Constant"):
            return None  # ONNX Runtime turns Constant nodes into initializers
        refused = _KERNEL_REFUSES.get((domain, name))
        if refused and op.args.get(refused[0], refused[1]) != refused[1]:
            return f"is refused by {self.name}'s CPU kernel: no {refused[2]}"
        kernels = [k for k in self.kernels.get((domain, name), ()) if _fits(k, schema.since)]
        if kernels:
            mismatch = ""
            for _, _, constraints in kernels:
                mismatch = _mismatch(constraints, schema, types)
                if not mismatch or not _mismatch(constraints, schema, _as_float(types)):
                    return None  # (ONNX Runtime casts float16 to float where only that runs)
            why = f"has no CPU kernel in {self.name} for version {schema.since} with {mismatch}"
        else:
            ranges = sorted({(k[0], k[1]) for k in self.kernels.get((domain, name), ())})
            have = ", ".join(_range(a, b) for a, b in ranges) or "none"
            why = (f"has no CPU kernel in {self.name} for version {schema.since} (opset "
                   f"{version}); its kernels cover versions {have}")  # fmt: skip
        body = _function_body(op, domain, schema.since, types) if depth < 4 else None
        if body is None:
            return why
        if body == "unknown":
            return None  # a function modelgate cannot expand: ONNX Runtime will
        for inner, inner_types in body:
            inner_domain = "" if inner.namespace == "onnx" else inner.namespace
            inner_reason = self.reason(inner, inner_domain, version, inner_types, depth + 1)
            if inner_reason:
                return f"{why}, and its ONNX function's {inner.opname} {inner_reason}"
        return None


def _fits(kernel: tuple[int, int, Any], since: int) -> bool:
    """ONNX Runtime's version match (KernelRegistry::VerifyKernelDef): the kernel starts at
    the op's version, or covers it with a closed range; an open-ended kernel registered
    before the op's version does not match."""
    start, end, _ = kernel
    return start == since or (start < since and end != _OPEN and end >= since)


def _as_float(types: Any) -> Any:
    if not types:
        return types
    return tuple(
        tuple("tensor(float)" if t == "tensor(float16)" else t for t in ts) for ts in types
    )


def _binding(schema: _Schema, types: Any) -> str:
    """Two values that one type constraint of the schema binds to different types."""
    if not types:
        return ""
    bound: dict[str, tuple[str, str]] = {}
    for side, params, actual in (("input", schema.inputs, types[0]),
                                 ("output", schema.outputs, types[1])):  # fmt: skip
        for index, value in enumerate(actual):
            if index < len(params):
                param, variadic, homogeneous = params[index]
            elif params and params[-1][1]:
                param, variadic, homogeneous = params[-1]
            else:
                continue
            if not value or param not in schema.constraints or (variadic and not homogeneous):
                continue
            where = f"{side} {index}"
            if param in bound and bound[param][0] != value:
                first, at = bound[param]
                return f"binds {param} to {first} at {at} and to {value} at {where}"
            bound.setdefault(param, (value, where))
    return ""


def _homogeneous(p: Any) -> bool:
    flag = getattr(p, "isHomogeneous", None)
    return bool(getattr(p, "is_homogeneous", True) if flag is None else flag)


def _type_param(p: Any) -> str:
    return getattr(p, "typeStr", None) or getattr(p, "type_str", "")


def _variadic(p: Any) -> bool:
    return "Variadic" in str(p.option)


def _range(start: int, end: int) -> str:
    return f"{start}+" if end >= 2**30 else (str(start) if start == end else f"{start}-{end}")


def _mismatch(constraints: dict[str, list[str]], schema: _Schema, types: Any) -> str:
    """The first type constraint of a kernel the node's known types break, as text."""
    if not types:
        return ""
    for params, actual in ((schema.inputs, types[0]), (schema.outputs, types[1])):
        for index, value in enumerate(actual):
            if not value:
                continue
            if index < len(params):
                param = params[index][0]
            elif params and params[-1][1]:
                param = params[-1][0]
            else:
                continue
            allowed = constraints.get(param)
            if allowed is not None and value not in allowed:
                return f"{param}={value}"
    return ""


def _function_body(op: Op, domain: str, since: int, types: Any) -> Any:
    """The ops of the ONNX function that defines ``op`` as ONNX Runtime expands it, each with
    the types known from ``op``'s; None if the op is not a function, "unknown" if modelgate
    cannot expand it."""
    import onnx
    from onnx import helper

    try:
        schema = onnx.defs.get_schema(op.opname, since, domain)
    except onnx.defs.SchemaError:
        return None
    body = None
    if schema.has_function:
        body = schema.function_body
    elif schema.has_context_dependent_function:
        node = helper.make_node(op.opname, op.inputs, op.outputs, domain=domain, **op.args)
        typed = [_type_proto(t) for t in (types[0] if types else ())]
        if not types or any(t is None for t in typed):
            return "unknown"
        try:
            raw = schema.get_context_dependent_function(
                node.SerializeToString(), [t.SerializeToString() for t in typed]
            )
            body = onnx.FunctionProto()
            body.ParseFromString(raw)
        except Exception:  # the function builder wants more than the graph view holds
            return "unknown"
    if body is None:
        return None
    known: dict[str, Any] = {}
    if types:
        known.update(zip(body.input, types[0], strict=False))
        known.update(zip(body.output, types[1], strict=False))
    return [
        (
            Op(n.name or f"{n.op_type}_{i}", f"{_domain_name(n.domain)}::{n.op_type}",
               args={a.name: a.i for a in n.attribute if a.type == a.INT}),
            (tuple(known.get(x) for x in n.input), tuple(known.get(x) for x in n.output)),
        )
        for i, n in enumerate(body.node)
    ]  # fmt: skip


def _domain_name(domain: str) -> str:
    return domain if domain not in ("", "ai.onnx") else "onnx"


def _type_proto(text: str | None) -> Any:
    from onnx import helper

    from modelgate.loaders.onnx_model import TYPE_NAMES

    if not text or not text.startswith("tensor(") or not text.endswith(")"):
        return None
    numbers = {v: k for k, v in TYPE_NAMES.items()}
    elem = numbers.get(text[7:-1])
    return None if elem is None else helper.make_tensor_type_proto(elem, None)


@lru_cache(maxsize=2)
def runtime(ort: bool | None = None) -> _Runtime:
    """The installed ONNX Runtime's view, or the ONNX standard's (``ort=False``, or when
    onnxruntime is not installed)."""
    if ort is None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            ort = False
        else:
            ort = True
    return _Runtime(ort)


def check(graph: ModelGraph, ort: bool | None = None) -> tuple[list[Issue], str | None]:
    """Everything in an ONNX file the runtime will refuse, and a note on what was not
    checked."""
    rt = runtime(ort)
    note = None if rt.kernels_known else (
        "ONNX kernel availability was not checked (onnxruntime is not installed: "
        "pip install onnxruntime); ops were checked against the ONNX standard only"
    )  # fmt: skip
    opsets: dict[str, int] = graph.metadata.get("opsets", {})
    functions: dict[str, dict[str, int]] = graph.metadata.get("onnx_functions", {})
    function_of: dict[str, str] = graph.metadata.get("onnx_function_of", {})
    types: dict[str, Any] = graph.metadata.get("onnx_types", {})
    issues = _opset_issues(rt, opsets, functions)
    if issues:
        return issues, note  # the runtime stops at the opset: the ops are not looked at
    found: dict[tuple[str, str, str], list[Op]] = {}
    for op in graph.ops:
        if op.target in functions:
            continue  # a call of a function the model defines; its own ops are checked
        domain = "" if op.namespace == "onnx" else op.namespace
        scope = functions.get(function_of.get(op.name, ""), opsets)
        version = scope.get(domain or "ai.onnx")
        if not rt.kernels_known and domain == "com.microsoft":
            continue  # ONNX Runtime's contrib ops: unknown without it
        if version is None and (domain, op.opname) in rt.schemas:
            why = f"is in domain {domain!r}, which the model's opset_import does not import"
        elif version is None:
            why = rt.reason(op, domain, 1, None)  # what it is matters more than the import
        else:
            why = rt.reason(op, domain, version, types.get(op.name))
        if why is not None:  # one finding per op, reason and module (or graph body)
            where = op.module or op.name.rpartition("/")[0]
            found.setdefault((op.target, why, where), []).append(op)
    for (target, why, _), ops in found.items():
        more = f" ({len(ops) - 1} more {ops[0].opname} node(s) alike)" if len(ops) > 1 else ""
        first = ops[0]
        where = first.module or first.name
        issues.append(Issue(first, f"{where}: {first.opname} {why}{more}",
                            f"onnx:{target}:{first.name}", _fix(why)))  # fmt: skip
    return issues, note


def _fix(why: str) -> str:
    if why.startswith("binds"):
        return "make the values one type (a Cast node before the op, or fix the exporter's dtype)"
    if why.startswith("is custom domain"):
        return "register the op's custom-op library with the runtime, or replace the op"
    if why.startswith("is refused"):
        return "export the recurrent layer with layout=0 (torch: batch_first=False)"
    if "kernel" in why:
        return ("cast the input to a type the CPU kernel takes, re-export at an opset it has "
                "a kernel for, or upgrade onnxruntime")  # fmt: skip
    return "export with an opset and ops the runtime has (or a newer ONNX Runtime)"


def _opset_issues(rt: _Runtime, opsets: dict[str, int], functions: dict) -> list[Issue]:
    issues = []
    scopes = [("the model", opsets)] + [(f"function {k}", v) for k, v in functions.items()]
    for where, imports in scopes:
        for domain, version in sorted(imports.items()):
            key = "" if domain == "ai.onnx" else domain
            known = rt.max_opsets.get(key)
            if key in _OFFICIAL and known is not None and version > known:
                issues.append(
                    Issue(
                        None,
                        f"{where} imports opset {version} of {domain}; {rt.name} supports up "
                        f"to opset {known}",
                        f"onnx:opset:{domain}:{version}",
                        f"export with opset {known} or lower, or upgrade onnxruntime",
                    )
                )
    return issues
