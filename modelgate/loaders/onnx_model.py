"""ONNX models, read with the ``onnx`` package without loading external data.

External data is checked by its references only (the file exists inside the model's folder
and is long enough); tensor bytes stay on disk.
"""

from __future__ import annotations

import ast
import os
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
    23: "float4_e2m1fn_x2",
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
# ModelProto's fields by number, with their wire type (0 varint, 2 length-delimited).
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}


def sniff(head: bytes, file_size: int | None = None) -> bool:
    """The first bytes parse as ModelProto fields (numbers and wire types it declares, lengths
    that fit in the file). Random bytes rarely get past two fields."""
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
                return False
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


def load(path: str, graph: ModelGraph) -> None:
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a core dependency
        raise Unreadable("reading ONNX needs the onnx package: pip install onnx") from None
    size = os.path.getsize(path)
    if size > MAX_PROTOBUF:
        raise Unreadable(f"ONNX protobuf of {size:,} bytes: more than protobuf's 2 GB limit")
    try:
        model = onnx.load_model(path, load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise Unreadable(
            f"not a valid ONNX protobuf ({str(exc)[:120] or type(exc).__name__})"
        ) from None
    if not model.HasField("graph") or model.ir_version <= 0:
        raise Unreadable("protobuf without an ONNX graph: not an ONNX model")
    try:
        _read_model(model, graph, os.path.dirname(os.path.abspath(path)))
    except (TypeError, AttributeError, ValueError, KeyError, UnicodeError) as exc:
        # protobuf hands back bytes for text that is not UTF-8, and the like
        raise Unreadable(
            f"ONNX model with malformed fields ({type(exc).__name__}: {str(exc)[:100]})"
        ) from None


def _read_model(model: Any, graph: ModelGraph, folder: str) -> None:
    import onnx

    _require_text(model)
    graph.format = "onnx"
    graph.has_graph = True
    graph.metadata.update(
        {
            "ir_version": int(model.ir_version),
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "opsets": {o.domain or "ai.onnx": int(o.version) for o in model.opset_import},
        }
    )
    g = model.graph
    initializers: dict[str, TensorInfo] = {}
    for tensor in g.initializer:
        dims = tuple(int(d) for d in tensor.dims)
        if any(d < 0 for d in dims):
            raise Unreadable(f"initializer {tensor.name!r} has a negative dimension {dims}")
        info = TensorInfo(tensor.name, dims, DTYPES.get(tensor.data_type, "?"), kind="initializer")
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info.external = _check_external(tensor, info, folder)
        initializers[tensor.name] = info
        graph.values[tensor.name] = ValueInfo(tensor.name, info.shape, info.dtype)
    graph.tensors.update(initializers)
    for value in g.input:
        if value.name not in initializers:
            graph.inputs.append(_value(value))
    graph.outputs.extend(_value(v) for v in g.output)
    for value in g.value_info:
        graph.values[value.name] = _value(value)
    for v in (*graph.inputs, *graph.outputs):
        graph.values[v.name] = v
    if graph.inputs:
        graph.input_source = "model"
    for index, node in enumerate(g.node):
        _add_node(graph, node, index, initializers)


def _require_text(model: Any) -> None:
    """Names must be text. Depending on protobuf's backend, a string field that is not UTF-8
    fails to parse or comes back as bytes; the second must not reach the rules."""
    g = model.graph
    names: list[Any] = [model.producer_name, model.producer_version]
    names += [o.domain for o in model.opset_import]
    names += [t.name for t in g.initializer]
    names += [v.name for v in (*g.input, *g.output, *g.value_info)]
    for node in g.node:
        names += [node.name, node.op_type, node.domain, *node.input, *node.output]
        names += [a.name for a in node.attribute]
        names += [p.key for p in node.metadata_props] + [p.value for p in node.metadata_props]
    for tensor in g.initializer:
        names += [e.key for e in tensor.external_data] + [e.value for e in tensor.external_data]
    if not all(type(n) is str for n in names):
        raise Unreadable("ONNX model with names that are not UTF-8 text")


def _check_external(tensor: Any, info: TensorInfo, folder: str) -> str:
    entries = {e.key: e.value for e in tensor.external_data}
    location = entries.get("location", "")
    if not location:
        raise Unreadable(f"initializer {tensor.name!r} has external data without a location")
    if "\x00" in location:
        raise Unreadable(f"initializer {tensor.name!r} external data location holds a NUL byte")
    location = location.replace("\\", "/")  # what a Windows reader would make of it
    if os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location[:3]:
        raise Unreadable(
            f"initializer {tensor.name!r} points at absolute path {location!r}: "
            "external data must stay beside the model"
        )
    target = os.path.realpath(os.path.join(folder, location))
    if os.path.commonpath([target, os.path.realpath(folder)]) != os.path.realpath(folder):
        raise Unreadable(
            f"initializer {tensor.name!r} external data {location!r} escapes the model's folder"
        )
    if not os.path.isfile(target):
        raise Unreadable(
            f"external data file {location!r} of initializer {tensor.name!r} is missing"
        )
    try:
        offset = int(entries.get("offset", "0") or 0)
        length = int(entries["length"]) if entries.get("length") else info.nbytes
    except ValueError:
        raise Unreadable(f"initializer {tensor.name!r} has a non-numeric external offset") from None
    size = os.path.getsize(target)
    if offset < 0 or length < 0 or offset + length > size:
        raise Unreadable(
            f"initializer {tensor.name!r} reads bytes {offset:,}..{offset + length:,} of "
            f"{location!r}, which has {size:,} (truncated?)"
        )
    return location


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


def _add_node(graph: ModelGraph, node: Any, index: int, inits: dict[str, TensorInfo]) -> None:
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
    name = node.name or f"{node.op_type}_{index}"
    domain = node.domain if node.domain not in ("", "ai.onnx") else "onnx"
    graph.ops.append(
        Op(name, f"{domain}::{node.op_type}", None, list(node.input), list(node.output), args,
           module, module_type, source)
    )  # fmt: skip
    weights = [(i, n) for i, n in enumerate(node.input) if n in inits]
    if not weights:
        return
    names = _PARAM_NAMES.get(node.op_type, ())
    layer = Layer(name, node.op_type, attrs=dict(args), source=source)
    if module:
        layer.attrs["module"] = module
    for position, tensor_name in weights:
        local = names[position] if position < len(names) else f"input{position}"
        layer.tensors[local] = inits[tensor_name]
    graph.layers[name] = layer
