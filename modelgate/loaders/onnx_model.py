"""ONNX models, read with the ``onnx`` package without loading external data.

Everything ONNX Runtime would read is read: the main graph, the bodies of control-flow ops
(``If`` / ``Loop`` / ``Scan`` and any other graph attribute, recursively; their ops and
tensors are named by their path, ``If_0/then_branch/Add_3``), model-local functions and
weights held in ``Constant`` nodes. External data is checked by its references only (the
file exists inside the model's folder and holds the tensor's bytes); tensor bytes stay on
disk, but the external files count towards the model's size. What ONNX Runtime rejects when
it builds the graph (a node cycle, a value that nothing defines, a value defined twice, a
truncated protobuf) makes the file unreadable (MG902).
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from typing import Any

from modelgate.finding import SourceLocation
from modelgate.graph import Layer, ModelGraph, Op, TensorInfo, ValueInfo
from modelgate.loaders.errors import Unreadable
from modelgate.sources import parse_stack_trace

# TensorProto.DataType, by number (the ONNX spec's enum).
DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    8: "string", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
    14: "complex64", 15: "complex128", 16: "bfloat16", 17: "float8_e4m3fn",
    18: "float8_e4m3fnuz", 19: "float8_e5m2", 20: "float8_e5m2fnuz", 21: "uint4", 22: "int4",
    23: "float4_e2m1fn_x2", 24: "float8_e8m0fnu",
}  # fmt: skip
# The same enum as ONNX type strings spell it ("tensor(float)"), as ONNX Runtime's kernels do.
TYPE_NAMES = {
    1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    8: "string", 9: "bool", 10: "float16", 11: "double", 12: "uint32", 13: "uint64",
    14: "complex64", 15: "complex128", 16: "bfloat16", 17: "float8e4m3fn",
    18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz", 21: "uint4", 22: "int4",
    23: "float4e2m1", 24: "float8e8m0", 25: "uint2", 26: "int2", 27: "float6e2m3",
    28: "float6e3m2",
}  # fmt: skip

# Which input of a weight-carrying op is which parameter, by torch's names.
_PARAM_NAMES = {
    "Gemm": ("input", "weight", "bias"),
    "Conv": ("input", "weight", "bias"),
    "ConvTranspose": ("input", "weight", "bias"),
    "BatchNormalization": ("input", "weight", "bias", "running_mean", "running_var"),
    "LayerNormalization": ("input", "weight", "bias"),
    "MatMul": ("input", "weight"),
    "Gather": ("weight", "indices"),
}


MAX_PROTOBUF = 2 * 1024**3  # protobuf's own limit; larger models keep weights outside
MAX_INFER = 256 * 1024**2  # shape inference copies the model: skipped above this size
# ModelProto's fields by number, with their wire type (0 varint, 2 length-delimited).
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}
_FIELD_NAMES = {1: "ir_version", 2: "producer_name", 3: "producer_version", 4: "domain",
                5: "model_version", 6: "doc_string", 7: "graph", 8: "opset_import",
                14: "metadata_props", 20: "training_info", 25: "functions"}  # fmt: skip


def sniff(head: bytes, file_size: int | None = None) -> bool:
    """The first bytes parse as ModelProto fields (numbers and wire types it declares, lengths
    that fit in the file). Random bytes rarely get past two fields. A file cut short is ONNX
    too once one field is whole (:func:`load` names it truncated)."""
    size = len(head) if file_size is None else file_size
    pos, fields = 0, 0
    while pos < len(head):
        key, pos = _varint(head, pos)
        if key is None:
            break
        number, wire = key >> 3, key & 7
        if _MODEL_FIELDS.get(number) != wire:
            return False
        value, pos = _varint(head, pos)
        if value is None:
            break
        if wire == 2:
            if pos + value > size:
                return fields >= 1  # a whole field, then one cut short: truncated ONNX
            pos += value
        fields += 1
    return fields >= 1


def _varint(data: bytes, pos: int) -> tuple[int | None, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None, pos


def _check_complete(path: str, size: int) -> None:
    """Walk ModelProto's top-level fields: one that runs past the end means the file was cut."""
    with open(path, "rb") as fh:
        pos = 0
        while pos < size:
            fh.seek(pos)
            head = fh.read(20)
            key, at = _varint(head, 0)
            if key is None:
                raise Unreadable(
                    f"truncated ONNX protobuf: the file ends inside a field key at byte {size:,}"
                )
            number, wire = key >> 3, key & 7
            name = _FIELD_NAMES.get(number, f"field {number}")
            if wire == 0:
                value, at = _varint(head, at)
                if value is None:
                    raise Unreadable(f"truncated ONNX protobuf: the file ends inside {name}")
                pos += at
            elif wire == 2:
                length, at = _varint(head, at)
                if length is None:
                    raise Unreadable(f"truncated ONNX protobuf: the file ends inside {name}")
                end = pos + at + length
                if end > size:
                    raise Unreadable(
                        f"truncated ONNX protobuf: {name} needs bytes up to {end:,}, the file "
                        f"has {size:,} ({end - size:,} missing)",
                        hint="re-export or re-download the model; check that the copy finished",
                    )
                pos = end
            elif wire in (1, 5):
                pos += at + (8 if wire == 1 else 4)
            else:
                return  # not ours to judge: the protobuf parser will say what it is


def load(path: str, graph: ModelGraph) -> None:
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a core dependency
        raise Unreadable("reading ONNX needs the onnx package: pip install onnx") from None
    size = os.path.getsize(path)
    if size > MAX_PROTOBUF:
        raise Unreadable(f"ONNX protobuf of {size:,} bytes: more than protobuf's 2 GB limit")
    _check_complete(path, size)
    try:
        model = onnx.load_model(path, load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise Unreadable(
            f"not a valid ONNX protobuf ({str(exc)[:120] or type(exc).__name__})"
        ) from None
    if not model.HasField("graph") or model.ir_version <= 0:
        raise Unreadable("protobuf without an ONNX graph: not an ONNX model")
    try:
        _Reader(graph, os.path.dirname(os.path.abspath(path))).read(model, size)
    except RecursionError:
        raise Unreadable("ONNX subgraphs nest too deeply to read") from None
    except (TypeError, AttributeError, ValueError, KeyError, UnicodeError) as exc:
        # protobuf hands back bytes for text that is not UTF-8, and the like
        raise Unreadable(
            f"ONNX model with malformed fields ({type(exc).__name__}: {str(exc)[:100]})"
        ) from None


def _text(*names: Any) -> None:
    """Names must be text. Depending on protobuf's backend, a string field that is not UTF-8
    fails to parse or comes back as bytes; the second must not reach the rules."""
    if not all(type(n) is str for n in names):
        raise Unreadable("ONNX model with names that are not UTF-8 text")


def _domain(domain: str) -> str:
    return domain if domain not in ("", "ai.onnx") else "onnx"


def type_str(t: Any) -> str | None:
    """A TypeProto as ONNX spells it: ``tensor(float)``, ``seq(tensor(int64))``; None if
    unknown."""
    which = t.WhichOneof("value")
    if which in ("tensor_type", "sparse_tensor_type"):
        elem = TYPE_NAMES.get(getattr(t, which).elem_type)
        kind = "tensor" if which == "tensor_type" else "sparse_tensor"
        return f"{kind}({elem})" if elem else None
    if which == "sequence_type":
        inner = type_str(t.sequence_type.elem_type)
        return f"seq({inner})" if inner else None
    if which == "optional_type":
        inner = type_str(t.optional_type.elem_type)
        return f"optional({inner})" if inner else None
    if which == "map_type":
        key, value = TYPE_NAMES.get(t.map_type.key_type), type_str(t.map_type.value_type)
        return f"map({key},{value})" if key and value else None
    return None


@dataclass
class _Scope:
    """One graph: the model's, a control-flow body or a function, and what it can see."""

    prefix: str  # "" for the model's graph, "If_0/then_branch/" inside a body
    outer: _Scope | None = None
    inits: dict[str, TensorInfo] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    defined: set[str] = field(default_factory=set)

    def init(self, name: str) -> TensorInfo | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.inits:
                return scope.inits[name]
            scope = scope.outer
        return None

    def type_of(self, name: str) -> str | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.types:
                return scope.types[name]
            scope = scope.outer
        return None

    def visible(self, name: str) -> bool:
        scope: _Scope | None = self.outer
        while scope is not None:
            if name in scope.defined:
                return True
            scope = scope.outer
        return False


class _Reader:
    def __init__(self, graph: ModelGraph, folder: str) -> None:
        self.graph = graph
        self.folder = folder
        self.externals: dict[str, int] = {}  # external data file -> its size
        self.types: dict[str, tuple[tuple[str | None, ...], tuple[str | None, ...]]] = {}
        self.function_of: dict[str, str] = {}  # op name -> local function it belongs to

    def read(self, model: Any, size: int) -> None:
        graph = self.graph
        _text(model.producer_name, model.producer_version, *(o.domain for o in model.opset_import))
        graph.format = "onnx"
        graph.has_graph = True
        functions = {}
        for f in model.functions:
            _text(f.name, f.domain, *(o.domain for o in f.opset_import))
            key = f"{_domain(f.domain)}::{f.name}"
            functions[key] = {o.domain or "ai.onnx": int(o.version) for o in f.opset_import}
        graph.metadata.update(
            {
                "ir_version": int(model.ir_version),
                "producer": f"{model.producer_name} {model.producer_version}".strip(),
                "opsets": {o.domain or "ai.onnx": int(o.version) for o in model.opset_import},
                "onnx_functions": functions,
            }
        )
        self._read_graph(_inferred(model, size).graph, _Scope(""))
        for f in model.functions:
            scope = _Scope(f"{f.name}/")
            scope.defined.update(f.input)
            start = len(graph.ops)
            self._read_nodes(f.node, scope)
            key = f"{_domain(f.domain)}::{f.name}"
            for op in graph.ops[start:]:
                self.function_of[op.name] = key
        graph.metadata["onnx_types"] = self.types
        graph.metadata["onnx_function_of"] = self.function_of
        if self.externals:
            external = sum(self.externals.values())
            graph.metadata["external_bytes"] = external
            graph.metadata["external_files"] = sorted(self.externals)
            graph.file_size = size + external  # what ships: the protobuf and its data files

    def _read_graph(self, g: Any, scope: _Scope) -> None:
        graph, top = self.graph, not scope.prefix
        for tensor in g.initializer:
            info = self._tensor(tensor, f"{scope.prefix}{tensor.name}", "initializer")
            scope.inits[tensor.name] = info
            if tensor.data_type in TYPE_NAMES:
                scope.types[tensor.name] = f"tensor({TYPE_NAMES[tensor.data_type]})"
            if top:
                graph.values[tensor.name] = ValueInfo(tensor.name, info.shape, info.dtype)
        for sparse in g.sparse_initializer:
            name = sparse.values.name
            info = self._tensor(sparse.values, f"{scope.prefix}{name}", "initializer")
            scope.inits[name] = info
            if sparse.values.data_type in TYPE_NAMES:
                scope.types[name] = f"sparse_tensor({TYPE_NAMES[sparse.values.data_type]})"
        for value in (*g.input, *g.output, *g.value_info):
            _text(value.name)
            known = type_str(value.type)
            if known:
                scope.types[value.name] = known
        if top:
            for value in g.input:
                if value.name not in scope.inits:
                    graph.inputs.append(_value(value))
            graph.outputs.extend(_value(v) for v in g.output)
            for value in g.value_info:
                graph.values[value.name] = _value(value)
            for v in (*graph.inputs, *graph.outputs):
                graph.values[v.name] = v
            if graph.inputs:
                graph.input_source = "model"
        scope.defined.update(v.name for v in g.input)
        scope.defined.update(scope.inits)
        _check_order(g, scope)
        scope.defined.update(o for node in g.node for o in node.output)  # bodies may use any
        self._read_nodes(g.node, scope)

    def _read_nodes(self, nodes: Any, scope: _Scope) -> None:
        for index, node in enumerate(nodes):
            _text(node.name, node.op_type, node.domain, *node.input, *node.output)
            _text(*(a.name for a in node.attribute))
            _text(*(p.key for p in node.metadata_props), *(p.value for p in node.metadata_props))
            name = f"{scope.prefix}{node.name or f'{node.op_type}_{index}'}"
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                self._constant(node, name, scope)
            self.types[name] = (
                tuple(scope.type_of(i) if i else "" for i in node.input),
                tuple(scope.type_of(o) if o else "" for o in node.output),
            )
            _add_node(self.graph, node, name, scope)
            scope.defined.update(node.output)
            for attr in node.attribute:
                if attr.type == attr.GRAPH:
                    self._read_graph(attr.g, _Scope(f"{name}/{attr.name}/", scope))
                elif attr.type == attr.GRAPHS:
                    for i, body in enumerate(attr.graphs):
                        self._read_graph(body, _Scope(f"{name}/{attr.name}[{i}]/", scope))

    def _constant(self, node: Any, name: str, scope: _Scope) -> None:
        """A ``Constant`` node's value is a weight like an initializer."""
        if not node.output:
            return
        for attr in node.attribute:
            if attr.name == "value" and attr.type == attr.TENSOR:
                tensor = attr.t
            elif attr.name == "sparse_value" and attr.type == attr.SPARSE_TENSOR:
                tensor = attr.sparse_tensor.values
            else:
                continue
            out = node.output[0]
            info = self._tensor(tensor, f"{scope.prefix}{out}", "initializer", owner=name)
            scope.inits[out] = info

    def _tensor(self, tensor: Any, key: str, kind: str, owner: str | None = None) -> TensorInfo:
        _text(tensor.name, *(e.key for e in tensor.external_data))
        _text(*(e.value for e in tensor.external_data))
        dims = tuple(int(d) for d in tensor.dims)
        what = f"initializer {key!r}" if owner is None else f"Constant {owner!r}"
        if any(d < 0 for d in dims):
            raise Unreadable(f"{what} has a negative dimension {dims}")
        info = TensorInfo(key, dims, DTYPES.get(tensor.data_type, "?"), kind=kind)
        if tensor.data_location == tensor.EXTERNAL:
            info.external = self._check_external(tensor, info, what)
        self.graph.tensors[key] = info
        return info

    def _check_external(self, tensor: Any, info: TensorInfo, what: str) -> str:
        folder = self.folder
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        if not location:
            raise Unreadable(f"{what} has external data without a location")
        if "\x00" in location:
            raise Unreadable(f"{what} external data location holds a NUL byte")
        location = location.replace("\\", "/")  # what a Windows reader would make of it
        if os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location[:3]:
            raise Unreadable(
                f"{what} points at absolute path {location!r}: "
                "external data must stay beside the model"
            )
        target = os.path.realpath(os.path.join(folder, location))
        if os.path.commonpath([target, os.path.realpath(folder)]) != os.path.realpath(folder):
            raise Unreadable(f"{what} external data {location!r} escapes the model's folder")
        if not os.path.isfile(target):
            raise Unreadable(f"external data file {location!r} of {what} is missing")
        try:
            offset = int(entries.get("offset", "0") or 0)
            length = int(entries["length"]) if entries.get("length") else None
        except ValueError:
            raise Unreadable(f"{what} has a non-numeric external offset or length") from None
        size = os.path.getsize(target)
        need = info.nbytes if info.dtype != "string" else 0
        if length is not None and 0 <= length < need:
            raise Unreadable(
                f"{what} {_dims(info)} {info.dtype} needs {need:,} bytes but its external data "
                f"in {location!r} declares length {length:,}",
                hint="re-export the model with onnx.save(..., save_as_external_data=True)",
            )
        length = need if length is None else length
        if offset < 0 or length < 0 or offset + length > size:
            raise Unreadable(
                f"{what} reads bytes {offset:,}..{offset + length:,} of "
                f"{location!r}, which has {size:,} (truncated?)",
                hint="copy the complete external data file next to the model",
            )
        self.externals[location] = size
        return location


def _dims(info: TensorInfo) -> str:
    return "x".join(str(d) for d in info.shape) or "scalar"


def _inferred(model: Any, size: int) -> Any:
    """The model with value types filled in by ONNX shape inference, where it can run."""
    import onnx

    if size > MAX_INFER:
        return model
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference failures are for ONNX Runtime to report; keep what was declared
        return model


def _check_order(g: Any, scope: _Scope) -> None:
    """ONNX Runtime sorts a graph's nodes itself, but refuses a cycle, a value no node, input
    or initializer defines, and a value defined twice."""
    producer: dict[str, int] = {}
    for index, node in enumerate(g.node):
        for out in node.output:
            if not out:
                continue
            if out in producer or out in scope.defined:
                raise Unreadable(
                    f"{_node_name(g, index, scope)}: value {out!r} is defined twice "
                    "(ONNX values have one producer)"
                )
            producer[out] = index
    deps: list[set[int]] = []
    for index, node in enumerate(g.node):
        mine: set[int] = set()
        for name in node.input:
            if not name or name in scope.defined:
                continue
            if name in producer:
                mine.add(producer[name])
            elif not scope.visible(name):
                raise Unreadable(
                    f"{_node_name(g, index, scope)}: input {name!r} is not a graph input, "
                    "an initializer or the output of a node"
                )
        deps.append(mine)
    users: list[list[int]] = [[] for _ in deps]
    waiting = [len(d) for d in deps]
    for index, mine in enumerate(deps):
        for dep in mine:
            users[dep].append(index)
    ready = [i for i, n in enumerate(waiting) if n == 0]
    done = 0
    while ready:
        index = ready.pop()
        done += 1
        for user in users[index]:
            waiting[user] -= 1
            if not waiting[user]:
                ready.append(user)
    if done == len(deps):
        return
    # follow unfinished dependencies from any unfinished node until one repeats
    index = next(i for i, n in enumerate(waiting) if n)
    path: list[int] = []
    while index not in path:
        path.append(index)
        index = next(d for d in deps[index] if waiting[d])
    cycle = [*path[path.index(index) :], index]
    names = " -> ".join(_node_name(g, i, scope) for i in reversed(cycle))
    raise Unreadable(
        f"node cycle: {names} ({len(cycle) - 1} nodes feed each other; ONNX Runtime refuses "
        "a graph that is not acyclic)",
        hint="an ONNX graph must be a DAG: break the loop (use a Loop op for recurrence)",
    )


def _node_name(g: Any, index: int, scope: _Scope) -> str:
    node = g.node[index]
    return f"{scope.prefix}{node.name or f'{node.op_type}_{index}'}"


def _value(value: Any) -> ValueInfo:
    tt = value.type.tensor_type if value.type.HasField("tensor_type") else None
    if tt is None:
        return ValueInfo(value.name)
    shape: tuple[int | str | None, ...] | None = None
    if tt.HasField("shape"):
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        shape = tuple(dims)
    return ValueInfo(value.name, shape, DTYPES.get(tt.elem_type))


def _module_of(node: Any, meta: dict[str, str]) -> tuple[str | None, str | None]:
    scopes = meta.get("pkg.torch.onnx.name_scopes")
    classes = meta.get("pkg.torch.onnx.class_hierarchy")
    if scopes:
        try:
            names = ast.literal_eval(scopes)
            types = ast.literal_eval(classes) if classes else []
        except (ValueError, SyntaxError):
            names, types = [], []
        if isinstance(names, list) and len(names) >= 2:
            path = ".".join(str(n) for n in names[1:-1])
            mtype = str(types[-2]) if isinstance(types, list) and len(types) >= 2 else None
            return path, mtype
    if node.name.startswith("/") and node.name.count("/") >= 2:  # legacy exporter "/fc/Gemm"
        return ".".join(node.name.strip("/").split("/")[:-1]), None
    return None, None


def _add_node(graph: ModelGraph, node: Any, name: str, scope: _Scope) -> None:
    meta = {p.key: p.value for p in node.metadata_props}
    module, module_type = _module_of(node, meta)
    source: SourceLocation | None = None
    if meta.get("pkg.torch.onnx.stack_trace"):
        source = parse_stack_trace(meta["pkg.torch.onnx.stack_trace"])
    args: dict[str, Any] = {}
    for attr in node.attribute:
        if attr.type == attr.INT:
            args[attr.name] = int(attr.i)
        elif attr.type == attr.INTS:
            args[attr.name] = [int(v) for v in attr.ints]
        elif attr.type == attr.FLOAT:
            args[attr.name] = float(attr.f)
        elif attr.type == attr.STRING:
            args[attr.name] = attr.s.decode("utf-8", "replace")[:200]
    graph.ops.append(
        Op(name, f"{_domain(node.domain)}::{node.op_type}", None, list(node.input),
           list(node.output), args, module, module_type, source)
    )  # fmt: skip
    weights = [(i, n, t) for i, n in enumerate(node.input) if n and (t := scope.init(n))]
    if not weights:
        return
    names = _PARAM_NAMES.get(node.op_type, ())
    layer = Layer(name, node.op_type, attrs=dict(args), source=source)
    if module:
        layer.attrs["module"] = module
    for position, _, tensor in weights:
        local = names[position] if position < len(names) else f"input{position}"
        layer.tensors[local] = tensor
    graph.layers[name] = layer
