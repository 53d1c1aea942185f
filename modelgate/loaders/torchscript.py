"""TorchScript archives.

Without torch: the module tree, parameters, training flags and traced input shapes come from
the archive's pickles (read inertly, like any checkpoint). With torch: the graph's ops, their
constant arguments, owning modules and source lines come from ``torch.jit.load``, which runs
only after every pickle in the archive has been scanned clean and its code checked.

``torch.jit.load`` runs code from the archive: the ``__setstate__`` methods of its classes
(in ``code/``), which TorchScript lets call ops like ``aten::save`` or bound C++ classes that
open files and sockets. An archive that defines ``__setstate__`` is loaded only when every call
in its code is to PyTorch's own tensor ops; anything else is MG901 and torch never sees it.
"""

from __future__ import annotations

import ast
import re
import warnings
from typing import Any

from modelgate.graph import ModelGraph, Op, PickleIssue, ValueInfo
from modelgate.loaders import pickles
from modelgate.loaders.archive import Archive, scan_archive
from modelgate.loaders.errors import Unreadable
from modelgate.loaders.pickles import TensorStub
from modelgate.loaders.torch_pickle import _check_storages, _read_module
from modelgate.sources import parse_torchscript_range

_HIERARCHY = re.compile(r"([\w]+)\(([\w.]+)\)")
# Nodes that only move values around; kept out of the op list.
_PLUMBING = frozenset(
    {"prim::Constant", "prim::GetAttr", "prim::ListConstruct", "prim::TupleConstruct",
     "prim::ListUnpack", "prim::TupleUnpack", "prim::NumToTensor", "prim::device", "prim::dtype"}
)  # fmt: skip


MAIN_PICKLES = ("data.pkl", "constants.pkl", "traced_inputs.pkl")
MAX_CODE = 64 * 1024 * 1024  # TorchScript source, all files together

# What TorchScript code may call in an archive whose __setstate__ runs at load.
_SAFE_FUNCTIONS = frozenset(
    {
        "len", "int", "float", "bool", "str", "complex", "range", "isinstance", "annotate",
        "unchecked_cast", "uninitialized", "getattr", "hasattr", "min", "max", "abs", "list",
        "tuple", "dict", "enumerate", "zip", "round", "divmod", "ord", "chr", "hash", "sum",
        "any", "all", "sorted", "reversed", "print", "pow", "bin", "hex", "oct", "id",
    }
)  # fmt: skip
_SAFE_OP_NAMESPACES = frozenset({"aten", "prim", "quantized", "_quantized", "quantized_decomposed"})
_UNSAFE_TORCH = frozenset(
    {"classes", "distributed", "hub", "package", "multiprocessing", "utils", "_C", "ops"}
)
_IO_WORDS = re.compile(r"save|load|file|open|write|read|store|rpc|socket|system|exec|spawn|unlink")


def is_torchscript(archive: Archive) -> bool:
    return archive.has("data.pkl") and (
        bool(archive.names("code/")) or archive.has("constants.pkl")
    )


def load(archive: Archive, graph: ModelGraph, policy: pickles.Policy) -> None:
    ts_policy = pickles.Policy(extra=policy.extra, torchscript=True)
    report = scan_archive(archive, ts_policy, main=MAIN_PICKLES)
    graph.pickle_issues.extend(report.issues)
    graph.native_code.extend(report.native)
    graph.format = "torchscript"
    if report.issues:
        graph.notes.append("the archive's pickles were not read: they are unsafe")
        return
    root = report.objects.get(archive.prefix + "data.pkl")
    if root is None:
        try:
            root = pickles.load_inert(archive.read("data.pkl"), ts_policy, class_stubs=True)
        except Unreadable:
            raise
        except Exception as exc:
            raise Unreadable(f"data.pkl: cannot unpickle ({str(exc)[:120]})") from None
    _check_storages(root, archive, graph)
    if isinstance(root, pickles.Stub):
        _read_module(root, graph)
    graph.inputs = _traced_inputs(archive, report.objects.get(archive.prefix + "traced_inputs.pkl"))
    if graph.inputs:
        graph.input_source = "model"
    code_issues = load_time_code(archive)
    if code_issues:
        graph.pickle_issues.extend(code_issues)
        graph.notes.append("TorchScript ops were not read: loading the archive would run its code")
        return
    _check_debug_info(archive, ts_policy)
    _read_graph(archive, graph)


def load_time_code(archive: Archive) -> list[PickleIssue]:
    """Calls in the archive's code that could do harm when ``torch.jit.load`` runs
    ``__setstate__``; empty when no class defines one (then no archive code runs at load)."""
    sources: dict[str, bytes] = {}
    total = 0
    for rel in archive.names("code/"):
        if rel.endswith(".py"):
            total += archive.size(rel) or 0
            if total > MAX_CODE:
                where = archive.where(archive.prefix + "code/")
                return [PickleIssue(where, None, "TorchScript code too large to check", "stream")]
            sources[rel] = archive.read(rel)
    if not any(b"__setstate__" in text for text in sources.values()):
        return []
    issues: list[PickleIssue] = []
    for rel, text in sources.items():
        where = archive.where(archive.prefix + rel)
        try:
            tree = ast.parse(text.decode("utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError, MemoryError):
            issues.append(
                PickleIssue(where, None, "TorchScript code that cannot be parsed", "stream")
            )
            continue
        seen: set[str] = set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            callee = _dotted(node.func)
            if callee is None or callee in seen or _safe_call(callee):
                continue
            seen.add(callee)
            issues.append(
                PickleIssue(
                    where,
                    callee,
                    f"TorchScript code calls {callee}; the archive defines __setstate__, "
                    "which torch.jit.load runs",
                    "call",
                )
            )
    return issues


def _check_debug_info(archive: Archive, policy: pickles.Policy) -> None:
    """Source ranges in ``code/*.debug_pkl`` must point into their own text: torch indexes
    them unchecked (an index past the string table segfaults ``torch.jit.load``'s reader)."""
    for rel in archive.names("code/"):
        if not rel.endswith(".debug_pkl"):
            continue
        where = archive.where(archive.prefix + rel)
        try:
            debug = pickles.load_inert(archive.read(rel), policy, class_stubs=True)
            problem = _debug_problem(debug)
        except Unreadable:
            raise
        except Exception as exc:
            problem = f"{type(exc).__name__}: {str(exc)[:80]}"
        if problem:
            raise Unreadable(f"TorchScript debug info {rel} is malformed ({problem})", where)


def _debug_problem(debug: Any) -> str | None:
    table: tuple[str, ...] | None = None
    entries = debug
    if isinstance(debug, tuple) and len(debug) == 3 and debug[0] == "FORMAT_WITH_STRING_TABLE":
        table, entries = debug[1], debug[2]
        if not isinstance(table, tuple) or not all(isinstance(s, str) for s in table):
            return "string table"
    if not isinstance(entries, tuple):
        return "no list of source ranges"
    for entry in entries:
        if not isinstance(entry, tuple) or len(entry) not in (2, 3) or not _count(entry[0]):
            return "source range entry"
        span = entry[1]
        if not (isinstance(span, tuple) and len(span) == 3 and isinstance(span[0], tuple)):
            return "source range"
        source, start, end = span
        if len(source) != 3:
            return "source"
        text, filename, _line = source
        if table is not None:
            if isinstance(text, pickles._Record) and text.args:
                text = text.args[0]  # torch.jit._pickle.build_intlist([...])
            if not isinstance(text, list) or not all(
                _count(i) and i < len(table) for i in [*text, filename]
            ):
                return "string table index out of range"
        elif not isinstance(text, str):
            return "source text"
        if not (_count(start) and _count(end)):
            return f"range {pickles.brief(start)}..{pickles.brief(end)}"
    return None


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _dotted(func: ast.expr) -> str | None:
    """ "torch.ops.aten.save" for a call's target; None for a method of a computed value."""
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    parts.append(func.id)
    return ".".join(reversed(parts))


def _safe_call(callee: str) -> bool:
    parts = callee.split(".")
    root = parts[0]
    if len(parts) == 1:
        return root in _SAFE_FUNCTIONS
    if root in ("torch", "ops"):
        ops = parts[1:] if root == "ops" else parts[2:] if parts[1] == "ops" else None
        if ops is not None:  # torch.ops.<namespace>.<op>
            return (
                len(ops) >= 2
                and ops[0] in _SAFE_OP_NAMESPACES
                and not _IO_WORDS.search(".".join(ops[1:]))
            )
        return parts[1] not in _UNSAFE_TORCH and not _IO_WORDS.search(".".join(parts[1:]))
    if root in ("__torch__", "math", "CONSTANTS"):
        return True  # the archive's own classes (checked here too) and math functions
    # a method on a local value (self.x.f(), tensor.add_()); its receiver came from a call
    # or attribute this check already covers
    return not _IO_WORDS.search(parts[-1])


def _traced_inputs(archive: Archive, stored: Any) -> list[ValueInfo]:
    """``torch.jit.trace`` stores its example inputs' metadata in traced_inputs.pkl (read
    inertly by the scan; None when absent or unreadable: shapes are then reported missing
    where a rule needs them)."""
    forward = _unwrap(stored)
    if isinstance(forward, dict):
        forward = _unwrap(forward.get("forward"))
    if not isinstance(forward, (list, tuple)):
        return []
    out = []
    for i, item in enumerate(forward):
        if isinstance(item, TensorStub):
            out.append(ValueInfo(f"input_{i}", tuple(item.shape), item.dtype))
    return out


def _unwrap(value: Any) -> Any:
    """``restore_type_tag(value, "List[Any]")`` records come back as inert call records."""
    while isinstance(value, pickles._Record) and value.name.endswith("restore_type_tag"):
        value = value.args[0] if value.args else None
    return value


def _read_graph(archive: Archive, graph: ModelGraph) -> None:
    try:
        import torch
    except ImportError:
        graph.notes.append(
            "TorchScript ops need torch to read: install modelgate-lint[torch] "
            "(weights, training flags and traced input shapes were read without it)"
        )
        return
    try:  # only after the scans above: pickles clean, no code that runs at load
        module = torch.jit.load(graph.path, map_location="cpu")
        g = module.inlined_graph
    except Exception as exc:  # torch's own reader refused the archive
        raise Unreadable(f"torch.jit.load failed: {str(exc).splitlines()[0][:160]}") from None
    graph.has_graph = True
    try:  # source ranges come from code/*.debug_pkl, which torch reads only now
        for index, node in enumerate(_walk(g)):
            if node.kind() not in _PLUMBING:
                graph.ops.append(_op(node, index))
    except Exception as exc:
        raise Unreadable(
            f"TorchScript archive is damaged: {str(exc).splitlines()[0][:160]}"
        ) from None
    graph.infer_shapes = lambda: _once_inputs_are_known(module, g, graph)


def _once_inputs_are_known(module: Any, g: Any, graph: ModelGraph) -> None:
    """With the final input shapes (traced, configured or given): value shapes, then each
    converter's view of the graph (which changes the loaded module, so it comes last)."""
    _infer_shapes(module, g, graph)
    graph.metadata["converter_ops"] = converter_views(module, graph)


def _infer_shapes(module: Any, g: Any, graph: ModelGraph) -> None:
    """Shapes of every value, by running the graph's aten ops on meta tensors.

    TorchScript files keep no shapes; the traced (or configured) input shapes are pushed
    through each op on the ``meta`` device, which computes shapes without data or compute.
    Stops quietly at control flow or an op that cannot run on meta.
    """
    import torch

    inputs = list(g.inputs())
    if not graph.inputs or len(inputs) - 1 < len(graph.inputs):
        return
    values: dict[Any, Any] = {inputs[0]: module}
    for value, info in zip(inputs[1:], graph.inputs, strict=False):
        if info.shape is None or not all(isinstance(d, int) for d in info.shape):
            return
        dtype = getattr(torch, info.dtype or "float32", torch.float32)
        values[value] = torch.empty(info.shape, dtype=dtype, device="meta")

    def meta(item: Any) -> Any:
        if isinstance(item, torch.Tensor):
            return torch.empty_like(item, device="meta")
        if isinstance(item, (list, tuple)):
            return type(item)(meta(i) for i in item)
        return item

    with torch.no_grad():
        for node in g.nodes():
            kind = node.kind()
            try:
                if kind == "prim::Constant":
                    out = node.output()
                    values[out] = None if out.type().kind() == "NoneType" else out.toIValue()
                elif kind == "prim::GetAttr":
                    values[node.output()] = getattr(values[node.input()], node.s("name"))
                elif kind == "prim::ListConstruct":
                    values[node.output()] = [values[i] for i in node.inputs()]
                elif kind == "prim::TupleConstruct":
                    values[node.output()] = tuple(values[i] for i in node.inputs())
                elif kind in ("prim::ListUnpack", "prim::TupleUnpack"):
                    for out, item in zip(node.outputs(), values[node.input()], strict=True):
                        values[out] = item
                elif kind.startswith("aten::") and not _IO_WORDS.search(kind):
                    # (aten::save and aten::from_file would write files: never run those)
                    fn, positional, keywords = _bind(node, [meta(values[i]) for i in node.inputs()])
                    result = fn(*positional, **keywords)
                    outs = list(node.outputs())
                    for out, item in zip(outs, [result] if len(outs) == 1 else result, strict=True):
                        values[out] = item
                else:
                    return  # control flow or an op we cannot follow: keep what we have
            except Exception:  # an op without a meta kernel: shapes stop here
                return
            for out in node.outputs():
                item = values.get(out)
                if isinstance(item, torch.Tensor):
                    name = out.debugName()
                    dtype = str(item.dtype).removeprefix("torch.")
                    graph.values[name] = ValueInfo(name, tuple(item.shape), dtype)


def _bind(node: Any, inputs: list[Any]) -> tuple[Any, list[Any], dict[str, Any]]:
    """The op overload a node calls, and its inputs bound as the schema declares them.

    TorchScript passes every argument as a node input in schema order, keyword-only ones
    included (``aten::add_.Tensor(self, other, *, Scalar alpha=1)`` gets ``alpha`` as its
    third input), so calling the op with all inputs by position fails; keyword-only
    arguments are passed by name."""
    import torch

    schema = torch._C.parse_schema(node.schema())
    namespace, _, name = schema.name.partition("::")
    packet = getattr(getattr(torch.ops, namespace), name)
    fn = getattr(packet, schema.overload_name or "default")
    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    for argument, value in zip(schema.arguments, inputs, strict=True):
        if argument.kwarg_only:
            keywords[argument.name] = value
        else:
            positional.append(value)
    return fn, positional, keywords


# ----------------------------------------------------------------------------------------------
# each converter's view of the graph (rule MG003)
# ----------------------------------------------------------------------------------------------


def converter_views(module: Any, graph: ModelGraph) -> dict[str, list[Op]]:
    """The ops each converter looks up, after the graph passes it runs first.

    coremltools and torch.onnx do not convert the graph as saved: each runs TorchScript passes
    first (constant ``aten::chunk`` becomes ``prim::ConstantChunk``; torch.onnx erases
    ``aten::Bool`` and number casts, and deletes unused side-effect nodes such as an
    ``assert``'s ``prim::RaiseException``). The same passes run here on copies, so MG003
    judges the ops the converter would meet. A target whose passes fail here is left out
    (MG003 then reads the graph as saved) and said in a note."""
    views: dict[str, list[Op]] = {}
    builders = (("coreml", _coreml_graph), ("onnx", _onnx_graph))  # onnx changes the module
    for target, build in builders:
        try:
            with warnings.catch_warnings():  # the passes warn about what they rewrite
                warnings.simplefilter("ignore")
                nodes = build(module, graph)
            views[target] = [_op(node, index) for index, node in enumerate(nodes)]
        except Exception as exc:
            graph.notes.append(
                f"{target}: the converter's graph passes failed here "
                f"({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}); "
                "MG003 read the graph as saved"
            )
    return views


def _coreml_graph(module: Any, graph: ModelGraph) -> list[Any]:
    """coremltools 9.0 ``_expand_and_optimize_ir`` (frontend/torch/torchscript_utils.py:138-190,
    the torch >= 1.6 branch), called by ``InternalTorchIRGraph.from_torchscript``
    (internal_graph.py:503) before any op is looked up; it runs on ``forward.graph`` itself,
    here on a copy. Its ``remove_getattr_nodes`` (converter.py:608-617, torchir_passes.py:232)
    is applied by modelgate.opsupport."""
    from torch import _C

    g = module.forward.graph.copy()
    _C._jit_pass_inline(g)
    _C._jit_pass_inline_fork_wait(g)
    _C._jit_pass_dce(g)
    _C._jit_pass_canonicalize_graph_fuser_ops(g)  # constant chunk -> prim::ConstantChunk
    return _coreml_reached(_C._jit_pass_canonicalize(g))


def _coreml_reached(g: Any) -> list[Any]:
    """The nodes coremltools converts: a block's nodes in order, until every output of the
    block exists (``convert_nodes(early_exit=True)``, frontend/torch/ops.py:99-122, called with
    it from converter.py:1392 and for If / Loop bodies from ops.py:179-198). What comes after
    (an ``assert`` at the end of ``forward``) is never looked up."""
    nodes: list[Any] = []
    known = {value.debugName() for value in g.inputs()}

    def block(items: Any, outputs: list[str]) -> None:
        for node in items:
            nodes.append(node)
            for sub in node.blocks():
                known.update(value.debugName() for value in sub.inputs())
                block(sub.nodes(), [value.debugName() for value in sub.outputs()])
            known.update(value.debugName() for value in node.outputs())
            if all(name in known for name in outputs):
                return

    block(g.nodes(), [value.debugName() for value in g.outputs()])
    return nodes


def _onnx_graph(module: Any, graph: ModelGraph) -> list[Any]:
    """torch.onnx's TorchScript exporter up to its symbolic dispatch (torch 2.13,
    onnx/_internal/torchscript_exporter/utils.py): eval mode (``select_model_mode_for_export``,
    :133-134), ``_create_jit_graph`` for a ScriptModule (:963-980: function substitution,
    freezing, parameters as inputs, the example inputs' shapes when known), then
    ``_optimize_graph`` (:618-677) up to ``_jit_pass_onnx``, which looks each remaining node up
    in the symbolic registry (``_run_symbolic_function``, :1709-1797)."""
    import torch
    from torch import _C

    module.train(False)
    _C._jit_pass_onnx_function_substitution(module.forward.graph)
    frozen = _C._freeze_module(module._c, preserveParameters=True)
    listed, params = _C._jit_onnx_list_model_parameters(frozen)
    g = listed._get_method("forward").graph
    shapes = [v.shape for v in graph.inputs]
    if graph.inputs and all(s and all(isinstance(d, int) for d in s) for s in shapes):
        examples = [
            torch.empty(
                v.shape, dtype=getattr(torch, v.dtype or "float32", torch.float32), device="meta"
            )
            for v in graph.inputs
        ]
        args = [*examples, *params]
        counts = [  # _get_param_count_list, :918-927
            len(torch.jit._flatten(a)[0]) if "PackedParams" in str(i.type()) else a is not None
            for i, a in zip(g.inputs(), args, strict=False)
        ]
        flat = tuple(torch.jit._flatten(tuple(args))[0])
        g = _C._propagate_and_assign_input_shapes(g, flat, counts, False, False)
    _C._jit_pass_inline(g)
    _C._jit_pass_inline_fork_wait(g)
    _C._jit_pass_onnx_autograd_function_process(g)
    _C._jit_pass_lower_all_tuples(g)
    _C._jit_pass_constant_propagation(g)
    _C._jit_pass_dce(g)
    _C._jit_pass_cse(g)
    _C._jit_pass_canonicalize_graph_fuser_ops(g)
    _C._jit_pass_peephole(g, True)
    _C._jit_pass_fuse_addmm(g)
    _C._jit_pass_peephole(g, True)
    _C._jit_pass_lower_all_tuples(g)
    _C._jit_pass_onnx_remove_inplace_ops_for_onnx(g, listed)
    _C._jit_pass_onnx_preprocess(g)
    _C._jit_pass_prepare_division_for_onnx(g)
    _C._jit_pass_onnx_remove_print(g)
    # ends with EliminateDeadCode(ALLOW_DELETING_NODES_WITH_SIDE_EFFECTS) (torch/csrc/jit/passes/
    # onnx.cpp, preprocessCaffe2Ops): an unused assert / raise (prim::If, RaiseException) goes
    _C._jit_pass_onnx_preprocess_caffe2(g)
    _C._jit_pass_onnx_unpack_quantized_weights(g, {})
    _C._jit_pass_erase_number_types(g)  # aten::Bool / Int / Float, prim::NumToTensor
    return _walk(g)  # _jit_pass_onnx converts every node, in blocks too


def _walk(g: Any) -> list[Any]:
    """Every node, including those inside prim::If / prim::Loop blocks (scripted control flow)."""
    out: list[Any] = []
    stack = [iter(g.nodes())]
    while stack:
        node = next(stack[-1], None)
        if node is None:
            stack.pop()
            continue
        out.append(node)
        stack.extend(iter(block.nodes()) for block in reversed(list(node.blocks())))
    return out


def _op(node: Any, index: int) -> Op:
    schema = ""
    try:
        schema = node.schema()
    except Exception:  # nodes without a schema (prim ops) print "(no schema)" or raise
        schema = ""
    arg_names = _schema_args(schema)
    args: dict[str, Any] = {}
    inputs: list[str] = []
    for i, value in enumerate(node.inputs()):
        key = arg_names[i] if i < len(arg_names) else f"arg{i}"
        producer = value.node()
        if producer.kind() == "prim::Constant":
            try:
                constant = value.toIValue()
            except Exception:
                constant = None
            if isinstance(constant, (bool, int, float, str, list, tuple)) or constant is None:
                args[key] = constant
        elif producer.kind() == "prim::ListConstruct":
            items = []
            for item in producer.inputs():
                items.append(item.toIValue() if item.node().kind() == "prim::Constant" else None)
            args[key] = items
        elif producer.kind() == "prim::GetAttr" and producer.s("name") == "training":
            args[key] = {"attribute": "training"}
        inputs.append(value.debugName())
    module, module_type = _hierarchy(node)
    source = parse_torchscript_range(str(node.sourceRange()))
    return Op(
        name=f"{node.kind()}#{index}",
        target=node.kind(),
        inputs=inputs,
        outputs=[o.debugName() for o in node.outputs()],
        args=args,
        module=module,
        module_type=module_type,
        source=source,
    )


def _schema_args(schema: str) -> list[str]:
    """Argument names of "aten::dropout(Tensor input, float p, bool train) -> Tensor"."""
    if "(" not in schema:
        return []
    try:
        import torch

        return [a.name for a in torch._C.parse_schema(schema).arguments]
    except Exception:  # not a schema torch parses: split it by hand (no list defaults)
        pass
    inner = schema.split("(", 1)[1].rsplit(") ->", 1)[0]
    names = []
    for part in inner.split(","):
        part = part.strip().split("=")[0].strip()
        if part and part != "*":
            names.append(part.split()[-1])
    return names


def _hierarchy(node: Any) -> tuple[str | None, str | None]:
    """ "layer1(Sequential).0(BasicBlock).conv1(Conv2d)" -> ("layer1.0.conv1", "Conv2d")."""
    try:
        text = node.getModuleHierarchy()
    except Exception:
        return None, None
    pairs = _HIERARCHY.findall(text or "")
    if not pairs:
        return None, None
    return ".".join(p[0] for p in pairs), pairs[-1][1]
