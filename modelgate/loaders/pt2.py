"""torch.export ``.pt2`` archives, read from their JSON graph without torch.

The archive stores the exported graph as JSON (torch's ``_export/serde/schema.py``): every
node with its target, arguments, the source traceback and the module it came from, and every
value's shape, symbolic where the export declared dynamic dimensions. Weights are separate
members; their sizes are checked against the graph, their bytes are not read.

``torch.export.load`` unpickles some members with ``torch.load(weights_only=False)``: sample
inputs (after a ``weights_only=True`` attempt), weights and constants saved with
``use_pickle``, custom and opaque objects. Those are scanned whatever their bytes look like;
the raw weights the configs name are skipped as data.
"""

from __future__ import annotations

import json
import re
from typing import Any

from modelgate.graph import Layer, ModelGraph, Op, TensorInfo, ValueInfo
from modelgate.loaders import pickles
from modelgate.loaders.archive import Archive, scan_archive
from modelgate.loaders.errors import Unreadable
from modelgate.sources import parse_stack_trace

# torch/_export/serde/schema.py ScalarType
DTYPES = {
    1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float16", 7: "float32",
    8: "float64", 9: "complex32", 10: "complex64", 11: "complex128", 12: "bool",
    13: "bfloat16", 28: "uint16", 29: "float8_e4m3fn", 30: "float8_e5m2",
    31: "float8_e4m3fnuz", 32: "float8_e5m2fnuz", 33: "float8_e8m0fnu", 34: "uint32",
    35: "uint64",
}  # fmt: skip

_SYMBOL = re.compile(r"Symbol\('(\w+)'[^)]*\)")
_MAX_JSON = 256 * 1024 * 1024  # parsed, JSON takes ~10x its size in memory
_JSON_ERRORS = (UnicodeDecodeError, ValueError, RecursionError)  # ValueError: JSON, big ints
_PICKLED_PREFIXES = ("custom_obj", "opaque_obj")
_MAX_NODES = 5_000_000


def is_pt2(archive: Archive) -> bool:
    return (
        archive.has("archive_format")
        or any(n.startswith("models/") and n.endswith(".json") for n in archive.names("models/"))
        or archive.has("serialized_exported_program.json")
    )


def load(archive: Archive, graph: ModelGraph, policy: pickles.Policy) -> None:
    graph.format = "torch_export"
    raw, loaded = _payloads(archive)
    report = scan_archive(archive, policy, main=(), raw=raw, loaded=loaded)
    graph.pickle_issues.extend(report.issues)
    graph.native_code.extend(report.native)
    name = _model_json(archive)
    if name is None:
        if report.native:
            graph.format = "aoti_package"
            graph.notes.append("AOTInductor package: compiled code only, no graph to read")
            return
        raise Unreadable(".pt2 archive without an exported program (models/*.json)")
    try:
        doc = json.loads(archive.read(name, _MAX_JSON))
    except _JSON_ERRORS as exc:
        raise Unreadable(
            f"{name} is not valid JSON ({str(exc)[:80]})",
            member=archive.where(archive.prefix + name),
        ) from None
    try:
        _read_program(doc, graph)
        _check_weights(archive, graph)
    except Unreadable:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, StopIteration) as exc:
        raise Unreadable(
            f"{name} does not follow the torch.export schema ({type(exc).__name__}: "
            f"{str(exc)[:80]})",
            member=archive.where(archive.prefix + name),
        ) from None


def _payloads(archive: Archive) -> tuple[set[str], set[str]]:
    """Members the configs name as raw tensor bytes, and members torch.load reads."""
    raw: set[str] = set()
    loaded = set(archive.names("data/sample_inputs/"))
    for folder in ("data/weights/", "data/constants/"):
        for rel in archive.names(folder):
            if rel.endswith(".pt"):  # the legacy layout: one torch.save file per model
                loaded.add(rel)
            if not rel.endswith("_config.json"):
                continue
            try:
                config = json.loads(archive.read(rel, _MAX_JSON)).get("config")
            except (*_JSON_ERRORS, AttributeError):
                continue  # reported by _check_weights, or the pickles are scanned anyway
            for entry in config.values() if isinstance(config, dict) else ():
                path = entry.get("path_name") if isinstance(entry, dict) else None
                if not isinstance(path, str):
                    continue
                pickled = entry.get("use_pickle") or path.startswith(_PICKLED_PREFIXES)
                (loaded if pickled else raw).add(folder + path)
    return raw - loaded, loaded


def _model_json(archive: Archive) -> str | None:
    if archive.has("models/model.json"):
        return "models/model.json"
    names = sorted(n for n in archive.names("models/") if n.endswith(".json"))
    if names:
        return names[0]
    if archive.has("serialized_exported_program.json"):
        return "serialized_exported_program.json"
    return None


def _dim(size: dict[str, Any]) -> int | str | None:
    if "as_int" in size:
        value = int(size["as_int"])
        if not 0 <= value < pickles.MAX_DIM:
            raise ValueError(f"dimension {pickles.brief(value)} out of range")
        return value
    expr = size.get("as_expr")
    if isinstance(expr, dict):
        text = str(expr.get("expr_str", ""))
        return _SYMBOL.sub(r"\1", text) or None
    return None


def _meta(tv: dict[str, Any]) -> tuple[tuple[int | str | None, ...], str]:
    shape = tuple(_dim(s) for s in tv.get("sizes", []))
    return shape, DTYPES.get(int(tv.get("dtype", 7)), "?")


def _read_program(doc: dict[str, Any], graph: ModelGraph) -> None:
    gm = doc["graph_module"]
    g = gm["graph"]
    verifiers = doc.get("verifiers") or ([doc["dialect"]] if doc.get("dialect") else [])
    dialect = verifiers[0] if isinstance(verifiers, list) and verifiers else "ATEN"
    if not isinstance(dialect, str):
        raise ValueError(f"dialect {pickles.brief(dialect)} is not a name")
    graph.metadata["dialect"] = dialect
    graph.metadata["torch_version"] = doc.get("torch_version")
    graph.metadata["schema_version"] = doc.get("schema_version")
    graph.has_graph = True
    tensor_values: dict[str, Any] = g.get("tensor_values", {})
    for vname, tv in tensor_values.items():
        shape, dtype = _meta(tv)
        graph.values[vname] = ValueInfo(vname, shape, dtype)
    for sym, rng in (doc.get("range_constraints") or {}).items():
        low, high = rng.get("min_val"), rng.get("max_val")
        graph.symbols[str(sym)] = {  # ints, or None for unknown / unbounded
            "min": low if type(low) is int else None,
            "max": high if type(high) is int else None,
        }

    sig = gm.get("signature", {})
    arg_names = _forward_arg_names(gm)
    user_index = 0
    for spec in sig.get("input_specs", []):
        kind, body = next(iter(spec.items()))
        if kind == "user_input":
            arg = body.get("arg", {})
            tname = (arg.get("as_tensor") or {}).get("name")
            if tname is None:
                user_index += 1
                continue
            value = graph.values.get(tname) or ValueInfo(tname)
            display = arg_names[user_index] if user_index < len(arg_names) else tname
            graph.inputs.append(ValueInfo(display, value.shape, value.dtype))
            user_index += 1
        elif kind in ("parameter", "buffer", "tensor_constant"):
            aname = body["arg"]["name"]
            target = body.get(f"{kind}_name") or body.get("tensor_constant_name") or aname
            shape, dtype = _meta(tensor_values.get(aname, {}))
            tkind = {"parameter": "parameter", "buffer": "buffer"}.get(kind, "constant")
            graph.tensors[target] = TensorInfo(
                target, tuple(d if isinstance(d, int) else 0 for d in shape), dtype, tkind
            )
            graph.metadata.setdefault("placeholders", {})[aname] = target
    if graph.inputs:
        graph.input_source = "model"
    for spec in sig.get("output_specs", []):
        kind, body = next(iter(spec.items()))
        if kind == "user_output":
            tname = (body.get("arg", {}).get("as_tensor") or {}).get("name")
            if tname:
                value = graph.values.get(tname) or ValueInfo(tname)
                graph.outputs.append(value)

    module_types: dict[str, str] = {}
    _read_nodes(g, graph, module_types, depth=0)
    _build_layers(graph, module_types)


def _forward_arg_names(gm: dict[str, Any]) -> list[str]:
    for entry in gm.get("module_call_graph", []):
        if entry.get("fqn") == "" and entry.get("signature"):
            names = entry["signature"].get("forward_arg_names")
            if isinstance(names, list):
                return [str(n) for n in names]
    return []


def _canonical(target: str) -> tuple[str, str | None]:
    """ "torch.ops.aten.linear.default" -> ("aten::linear", "default")."""
    text = target.removeprefix("torch.ops.")
    parts = text.split(".")
    if target.startswith("torch.ops.") and len(parts) >= 3:
        return f"{parts[0]}::{'.'.join(parts[1:-1])}", parts[-1]
    if target.startswith("torch.ops.") and len(parts) == 2:
        return f"{parts[0]}::{parts[1]}", None
    module, _, name = target.rpartition(".")
    return (f"{module}::{name}" if module else target), None


def _arg_value(arg: dict[str, Any]) -> tuple[Any, list[str]]:
    """A serialized argument as a Python value, and the value names it refers to."""
    if not isinstance(arg, dict) or not arg:
        return None, []
    kind, body = next(iter(arg.items()))
    if kind == "as_tensor":
        return {"tensor": body["name"]}, [body["name"]]
    if kind == "as_tensors":
        names = [b["name"] for b in body]
        return [{"tensor": n} for n in names], names
    if kind in ("as_int", "as_float", "as_bool", "as_string", "as_ints", "as_floats", "as_bools",
                "as_strings"):  # fmt: skip
        return body, []
    if kind == "as_none":
        return None, []
    if kind == "as_sym_int" or kind == "as_sym_bool" or kind == "as_sym_float":
        if isinstance(body, dict) and "as_name" in body:
            return {"symbol": body["as_name"]}, [body["as_name"]]
        return next(iter(body.values())) if isinstance(body, dict) and body else body, []
    if kind == "as_sym_ints":
        values = []
        for item in body:
            values.append(item.get("as_int", {"symbol": item.get("as_name")}))
        return values, []
    if kind == "as_optional_tensors":
        names = [b["as_tensor"]["name"] for b in body if "as_tensor" in b]
        return [{"tensor": n} for n in names], names
    return {kind: "…"}, []


def _read_nodes(
    g: dict[str, Any], graph: ModelGraph, module_types: dict[str, str], depth: int
) -> None:
    if depth > 8:
        raise Unreadable("exported program nests subgraphs more than 8 deep")
    for index, node in enumerate(g.get("nodes", [])):
        if len(graph.ops) > _MAX_NODES:
            raise Unreadable(f"exported program with more than {_MAX_NODES:,} nodes")
        target, overload = _canonical(str(node.get("target", "")))
        args: dict[str, Any] = {}
        inputs: list[str] = []
        for position, inp in enumerate(node.get("inputs", [])):
            arg = inp.get("arg", {})
            if isinstance(arg, dict) and "as_graph" in arg:
                sub = arg["as_graph"].get("graph")
                if isinstance(sub, dict):
                    _read_nodes(sub, graph, module_types, depth + 1)
                continue
            value, refs = _arg_value(arg)
            args[inp.get("name") or f"arg{position}"] = value
            inputs.extend(refs)
        outputs: list[str] = []
        for out in node.get("outputs", []):
            if "as_tensor" in out:
                outputs.append(out["as_tensor"]["name"])
            elif "as_tensors" in out:
                outputs.extend(t["name"] for t in out["as_tensors"])
            elif "as_sym_int" in out and isinstance(out["as_sym_int"], dict):
                outputs.append(str(out["as_sym_int"].get("as_name")))
        meta = node.get("metadata") or {}
        module, module_type = _module(meta.get("nn_module_stack", ""), module_types)
        graph.ops.append(
            Op(
                name=str(node.get("name") or (outputs[0] if outputs else f"node{index}")),
                target=target,
                overload=overload,
                inputs=inputs,
                outputs=outputs,
                args=args,
                module=module,
                module_type=module_type,
                source=parse_stack_trace(meta.get("stack_trace", "")),
            )
        )


def _module(stack: str, module_types: dict[str, str]) -> tuple[str | None, str | None]:
    """Innermost module of "key,path,type;key,path,type" (torch.export's nn_module_stack)."""
    last: tuple[str | None, str | None] = (None, None)
    if not isinstance(stack, str) or not stack:
        return last
    for entry in stack.split(";"):
        _head, sep, rest = entry.partition(",")
        if not sep or "," not in rest:
            continue
        path, mtype = rest.rsplit(",", 1)
        module_types.setdefault(path, mtype)
        last = (path, mtype)
    return last


def _build_layers(graph: ModelGraph, module_types: dict[str, str]) -> None:
    for name, info in graph.tensors.items():
        module, _, local = name.rpartition(".")
        layer = graph.layers.get(module)
        if layer is None:
            layer = Layer(module, module_types.get(module, ""))
            graph.layers[module] = layer
        layer.tensors[local] = info
    for path, mtype in module_types.items():
        graph.layers.setdefault(path, Layer(path, mtype))
    for op in graph.ops:
        if op.module is not None and op.source is not None:
            layer = graph.layers.get(op.module)
            if layer is not None and layer.source is None:
                layer.source = op.source


def _check_weights(archive: Archive, graph: ModelGraph) -> None:
    """Weight members must exist and be as large as the graph says."""
    config_name = "data/weights/model_weights_config.json"
    if not archive.has(config_name):
        return
    try:
        config = json.loads(archive.read(config_name, _MAX_JSON)).get("config", {})
    except (*_JSON_ERRORS, AttributeError):
        raise Unreadable(f"{config_name} is not valid JSON") from None
    if not isinstance(config, dict):
        raise Unreadable(f"{config_name} does not follow the torch.export schema")
    for fqn, entry in config.items():
        member = f"data/weights/{entry.get('path_name', '')}"
        size = archive.size(member)
        info = graph.tensors.get(fqn)
        if size is None:
            raise Unreadable(f"weight {fqn!r} is missing from the archive ({member})")
        if info is not None and not entry.get("use_pickle") and size < info.nbytes:
            raise Unreadable(
                f"weight {fqn!r} holds {size:,} bytes, needs {info.nbytes:,} (truncated?)",
                member=archive.where(archive.prefix + member),
            )
