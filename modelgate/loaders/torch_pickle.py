"""torch.save files (zip and legacy layouts) and plain pickles, read as metadata.

A torch.save file holds a bare state dict, a training checkpoint that holds one (Lightning,
Hugging Face, timm and hand-rolled loops all nest it differently), or a whole pickled
``nn.Module``. All three become a :class:`ModelGraph` with tensors and layers; none of it runs
the file's code, and no tensor bytes are read.
"""

from __future__ import annotations

import io
import math
import pickletools
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from modelgate.graph import ITEMSIZE, Layer, ModelGraph, PickleIssue, TensorInfo
from modelgate.loaders.allowlist import Policy
from modelgate.loaders.archive import Archive, scan_archive
from modelgate.loaders.bounds import brief
from modelgate.loaders.errors import Unreadable
from modelgate.loaders.inert import NDArrayStub, StorageRef, Stub, TensorStub, load_inert
from modelgate.loaders.pickle_scan import ScanResult, scan
from modelgate.loaders.pickle_stream import LEGACY_MAGIC, scan_sequence
from modelgate.loaders.weights_only import (
    WEIGHTS_ONLY_OPCODES,
    numpy_dtype_classes,
    torch_default_allows,
)

_MAX_OBJECTS = 2_000_000
_STATE_DICT_KEYS = (
    "state_dict",
    "model_state_dict",
    "model",
    "module",
    "net",
    "network",
    "model_ema",
    "ema",
    "ema_model",
    "params",
    "weights",
    "generator",
)
_NOT_MODEL = re.compile(r"optim|sched|scaler|lr_|loss|callbacks|loops", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# zip layout
# ---------------------------------------------------------------------------------------------


def load_zip(archive: Archive, graph: ModelGraph, policy: Policy) -> None:
    """Read a torch.save zip archive into ``graph``."""
    graph.format = "torch_save"
    graph.metadata["layout"] = "zip"
    if not archive.has("data.pkl"):
        raise Unreadable("zip archive without data.pkl: not a torch.save file")
    report = scan_archive(archive, policy, main=("data.pkl",))
    graph.pickle_issues.extend(report.issues)
    graph.native_code.extend(report.native)
    obj = report.objects.get(archive.prefix + "data.pkl")
    scanned = report.scans.get(archive.prefix + "data.pkl")
    results = [scanned] if scanned is not None else []
    if obj is None:  # unsafe (not read), or the scan could not read it: say why
        obj = _unpickle_member(archive, "data.pkl", graph, policy)
        if obj is None:
            _training_arguments(results, graph)
            return
    _check_storages(obj, archive, graph)
    streams = [archive.read("data.pkl")] if (archive.size("data.pkl") or 0) <= _OPCODE_PROBE else []
    _weights_only(results, obj, archive.where(archive.prefix + "data.pkl"), graph, streams)
    interpret(obj, graph)


def _unpickle_member(archive: Archive, rel: str, graph: ModelGraph, policy: Policy) -> Any:
    """Unpickle a member into stubs, unless its scan found a global that is called."""
    where = archive.where(archive.prefix + rel)
    blocking = [i for i in graph.pickle_issues if i.member == where and i.usage != "class"]
    if blocking:
        graph.notes.append(f"{rel} was not read: its pickle is unsafe")
        return None
    class_stubs = any(i.member == where for i in graph.pickle_issues)
    data = archive.read(rel)
    try:
        return load_inert(data, policy, class_stubs)
    except RecursionError:
        raise Unreadable(f"{rel}: pickle nests too deeply", member=where) from None
    except Exception as exc:  # any failure of a hostile stream is "unreadable", never a crash
        raise Unreadable(f"{rel}: cannot unpickle ({_short(exc)})", member=where) from None


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def _check_storages(obj: Any, archive: Archive, graph: ModelGraph) -> None:
    """Every tensor must fit in a storage member of the declared size (a truncated or edited
    archive fails here, as torch.load would, without reading any tensor bytes)."""
    seen: dict[str, int] = {}
    for name, t in stored_tensors(obj):
        ref = t.storage
        if ref is None:
            continue
        need_storage = int(ref.numel * ITEMSIZE.get(ref.dtype, 1))
        if ref.key not in seen:
            size = archive.size(f"data/{ref.key}")
            if size is None:
                raise Unreadable(
                    f"tensor {name!r} refers to storage {ref.key!r}, which the archive lacks",
                    member=archive.where(archive.prefix + f"data/{ref.key}"),
                )
            if size < need_storage:
                raise Unreadable(
                    f"storage {ref.key!r} of tensor {name!r} holds {size:,} bytes, "
                    f"needs {need_storage:,} (truncated or edited archive)",
                    member=archive.where(archive.prefix + f"data/{ref.key}"),
                )
            seen[ref.key] = size
        _check_extent(name, t)


def _check_extent(name: str, t: TensorStub) -> None:
    ref = t.storage
    if ref is None or not t.shape or 0 in t.shape:
        return
    stride = t.stride or tuple(math.prod(t.shape[i + 1 :]) for i in range(len(t.shape)))
    if len(stride) != len(t.shape) or any(not isinstance(s, int) or s < 0 for s in stride):
        raise Unreadable(f"tensor {name!r} has an invalid stride {brief(stride)}")
    extent = t.offset + 1 + sum((d - 1) * s for d, s in zip(t.shape, stride, strict=True))
    # storage numel counts elements of the storage dtype; the tensor dtype may differ (v3)
    tensor_items = ITEMSIZE.get(t.dtype, 1)
    storage_bytes = ref.numel * ITEMSIZE.get(ref.dtype, 1)
    if extent * tensor_items > storage_bytes:
        raise Unreadable(
            f"tensor {name!r} of shape {t.shape} reaches past the end of its storage "
            f"({extent * tensor_items:,} > {storage_bytes:,} bytes)"
        )


# ---------------------------------------------------------------------------------------------
# legacy layout and plain pickles
# ---------------------------------------------------------------------------------------------


def load_pickle_stream(fh: BinaryIO, size: int, graph: ModelGraph, policy: Policy) -> None:
    """A legacy (pre-1.6) torch.save file or a plain pickle.

    Legacy files are five pickles back to back (magic, protocol, sys info, the object, storage
    keys) followed by raw storages; each pickle is scanned before any is unpickled, reading
    the file only as far as the pickles go.
    """
    graph.format = "torch_save"
    graph.metadata["layout"] = "pickle"
    results: list[ScanResult] = []
    starts, ends, issues, incomplete = scan_sequence(fh, "pickle", policy, results)
    if len(ends) == 1 and not incomplete and not any(i.usage == "stream" for i in issues):
        issues = issues + _trailing(fh, size, ends[0], policy)
    graph.pickle_issues.extend(issues)
    if incomplete:
        raise Unreadable("pickle stream ends early (truncated file?)")
    if any(i.usage != "class" for i in issues):
        graph.notes.append("the pickle was not read: it is unsafe")
        _training_arguments(results, graph)
        return
    class_stubs = bool(issues)
    try:
        first = load_inert(fh, policy, class_stubs, starts[0])
        legacy = type(first) is int and first == LEGACY_MAGIC
        if legacy:
            graph.metadata["layout"] = "legacy"
            obj = load_inert(fh, policy, class_stubs, starts[3])
            keys = load_inert(fh, policy, class_stubs, starts[4])
    except RecursionError:
        raise Unreadable("pickle nests too deeply") from None
    except Exception as exc:
        raise Unreadable(f"cannot unpickle ({_short(exc)})") from None
    streams = []
    if ends[-1] <= _OPCODE_PROBE:
        fh.seek(0)
        whole = fh.read(ends[-1])
        streams = [whole[a:b] for a, b in zip(starts, ends, strict=True)]
    if legacy:
        _check_legacy_storages(fh, size, ends[4], obj, keys)
        _weights_only(results, obj, "pickle", graph, streams)
        interpret(obj, graph)
    else:
        _weights_only(results, first, "pickle", graph, streams)
        interpret(first, graph)


_MAX_TRAILING = 1000


def _trailing(fh: BinaryIO, size: int, end: int, policy: Policy) -> list[PickleIssue]:
    """Pickles after the first: ``pickle.load`` in a loop reads them (``torch.load`` does not).
    Bytes that are no pickle end the loop; globals met before that count, as the unpickler
    imports them before it fails."""
    found: list[PickleIssue] = []
    for index in range(2, _MAX_TRAILING + 2):
        if end >= size:
            break
        result = scan(fh, f"pickle {index} (after the first)", policy, end)
        found.extend(i for i in result.issues if i.usage != "stream")
        if result.issues and any(i.usage == "stream" for i in result.issues):
            break
        if result.end <= end:
            break
        end = result.end
    return found


# ---------------------------------------------------------------------------------------------
# What torch.load(weights_only=True) will need (rule MG904)
# ---------------------------------------------------------------------------------------------

_FILLABLE = {"items": ("collections.OrderedDict", "collections.Counter"), "appends": ()}
_FILL_OPCODES = {"items": "SETITEM(S), which it allows only on dict, OrderedDict and Counter",
                 "appends": "APPEND(S), which it allows only on list"}  # fmt: skip


def _weights_only(
    results: list[ScanResult],
    obj: Any,
    member: str,
    graph: ModelGraph,
    streams: list[bytes] = (),  # type: ignore[assignment]
) -> None:
    """Globals a clean pickle uses that ``torch.load(weights_only=True)`` rejects by default,
    and what it cannot load even when they are allowed: containers it cannot fill, opcodes
    its unpickler does not read (``streams`` are the pickles' bytes)."""
    unsafe = {i.global_name for i in graph.pickle_issues}
    names: set[str] = set()
    blocked: dict[str, str] = {}
    for data in streams:
        opcode = unsupported_opcode(data)
        if opcode is not None:
            blocked.setdefault(
                f"opcode {opcode}",
                "is not one its unpickler reads (it reads the opcodes of pickle protocol 2 "
                "that torch.save writes by default)",
            )
    for result in results:
        names.update(result.globals)
        for name, kinds in result.filled.items():
            for kind in sorted(kinds):
                if name not in _FILLABLE[kind]:
                    blocked.setdefault(name, f"is filled item by item with {_FILL_OPCODES[kind]}")
    needs = {n for n in names if not torch_default_allows(n) and n not in unsafe}
    if any(n.endswith(".dtype") and n.startswith("numpy.") for n in needs):
        needs |= numpy_dtype_classes(obj)
    if needs or blocked:
        graph.metadata["weights_only"] = {
            "member": member,
            "needs": sorted(needs),
            "blocked": dict(sorted(blocked.items())),
        }


_OPCODE_PROBE = 64 * 1024 * 1024  # pickles larger than this are not walked for opcodes


def unsupported_opcode(data: bytes) -> str | None:
    """The first opcode of ``data`` that torch's weights_only unpickler refuses ("Unsupported
    operand"), or None."""
    try:
        for opcode, _arg, _pos in pickletools.genops(io.BytesIO(data)):
            if opcode.name not in WEIGHTS_ONLY_OPCODES:
                return opcode.name
            if opcode.name == "STOP":
                return None
    except Exception:  # the scanner reports streams it cannot follow
        return None
    return None


# ---------------------------------------------------------------------------------------------
# Training state: optimizer, scheduler, RNG, grad scaler, Trainer arguments
# ---------------------------------------------------------------------------------------------

_RNG_KEYS = frozenset({"python", "numpy", "cpu", "cuda", "mps", "xpu", "npu", "hpu", "mlu",
                       "musa", "generator"})  # fmt: skip
_TRAINING_ARGS = re.compile(r"^transformers\.[\w.]*\.\w*TrainingArguments$")
# Lightning checkpoint entries that are training state, not the model
_LIGHTNING_STATE = ("optimizer_states", "lr_schedulers", "loops", "callbacks", "MixedPrecision")


def training_state(obj: Any) -> str | None:
    """What training state ``obj`` is (optimizer, scheduler, RNG, grad scaler), or None."""
    if isinstance(obj, Stub) and _TRAINING_ARGS.match(obj.qualname):
        return f"Trainer arguments ({obj.qualname})"
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        return None
    keys = set(obj)
    if {"state", "param_groups"} <= keys and isinstance(obj["param_groups"], list):
        states = obj["state"]
        count = len(states) if isinstance(states, dict) else 0
        groups = len(obj["param_groups"])
        return (f"optimizer state: {count} parameter state{'s' if count != 1 else ''}, "
                f"{groups} param group{'s' if groups != 1 else ''}")  # fmt: skip
    if "last_epoch" in keys and keys & {"base_lrs", "_last_lr", "_step_count"}:
        return f"LR scheduler state (last_epoch {obj['last_epoch']!r})"
    if keys <= _RNG_KEYS and keys & {"python", "numpy", "cpu"}:
        return f"RNG state ({', '.join(sorted(keys))})"
    if {"scale", "growth_factor", "backoff_factor"} <= keys:
        return "grad scaler state"
    return None


def _training_arguments(results: list[ScanResult], graph: ModelGraph) -> None:
    """An unsafe pickle that rebuilds transformers' TrainingArguments (``training_args.bin``)
    is still training state, not a failed model: say so (MG901 reports the globals)."""
    for result in results:
        for name in result.globals:
            if _TRAINING_ARGS.match(name):
                graph.format = "training_state"
                graph.metadata["training_state"] = f"Trainer arguments ({name})"
                graph.notes.append(
                    f"training state, not a model: Trainer arguments ({name}); deployment never "
                    "loads it, so it can be left out of the gate"
                )
                return


def _state_summary(obj: Any) -> tuple[int, int]:
    tensors = list(iter_tensors(obj))
    return len(tensors), sum(_nbytes(t) for _, t in tensors)


def _read_training_state(obj: Any, kind: str, graph: ModelGraph) -> None:
    graph.format = "training_state"
    graph.metadata["training_state"] = kind
    count, nbytes = _state_summary(obj)
    graph.notes.append(
        f"training state, not a model: {kind}; {count} tensor{'s' if count != 1 else ''} "
        f"({nbytes / 1e6:.1f} MB), scanned for unsafe pickles; model rules do not apply"
    )


def _check_legacy_storages(fh: BinaryIO, size: int, end: int, obj: Any, keys: Any) -> None:
    """The raw storages after the pickles: each an 8-byte element count, then the bytes."""
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise Unreadable("legacy torch.save file: storage key list is malformed")
    refs: dict[str, StorageRef] = {}
    for _, t in stored_tensors(obj):
        if t.storage is not None:
            refs.setdefault(t.storage.key, t.storage)
    pos = end
    for key in keys:
        ref = refs.get(key)
        fh.seek(pos)
        raw = fh.read(8)
        if len(raw) < 8:
            raise Unreadable(f"legacy torch.save file ends inside storage {key!r} (truncated)")
        numel = int.from_bytes(raw, "little", signed=True)
        itemsize = ITEMSIZE.get(ref.dtype, 1) if ref else 1
        if numel < 0 or (ref is not None and numel != ref.numel):
            raise Unreadable(
                f"legacy storage {key!r} declares {numel} elements, expected "
                f"{ref.numel if ref else '?'}"
            )
        pos += 8 + int(numel * itemsize)
        if pos > size:
            raise Unreadable(f"legacy torch.save file ends inside storage {key!r} (truncated)")


# ---------------------------------------------------------------------------------------------
# What the object is: a state dict, a checkpoint holding one, or a module
# ---------------------------------------------------------------------------------------------


def iter_tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, TensorStub]]:
    """Every tensor reachable from ``obj``, with a dotted path; each object visited once."""
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [(prefix, obj)]
    count = 0
    while stack:
        path, item = stack.pop()
        count += 1
        if count > _MAX_OBJECTS:
            raise Unreadable(f"pickle holds more than {_MAX_OBJECTS:,} objects")
        if isinstance(item, TensorStub):
            yield path, item
            continue
        if isinstance(item, (str, bytes, int, float, bool)) or item is None:
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        for key, child in _children(item):
            stack.append((f"{path}.{key}" if path else str(key), child))


def stored_tensors(obj: Any) -> Iterator[tuple[str, TensorStub]]:
    """:func:`iter_tensors` and the tensors a sparse, quantized or nested tensor is built from
    (indices, values, scales): every tensor whose storage the file must hold."""
    for name, tensor in iter_tensors(obj):
        stack = [(name, tensor)]
        while stack:
            path, t = stack.pop()
            yield path, t
            stack.extend((f"{path}.<part {i}>", p) for i, p in enumerate(t.parts))


def _children(item: Any) -> list[tuple[Any, Any]]:
    if isinstance(item, dict):
        return list(item.items())
    if isinstance(item, (list, tuple)):
        return list(enumerate(item))
    if isinstance(item, Stub):
        out: list[tuple[Any, Any]] = list(item.attributes.items())
        out.extend((i, v) for i, v in enumerate(item.args))
        out.extend(
            (k, v) if isinstance(k, str) else (i, v)
            for i, entry in enumerate(item.items)
            for k, v in ([entry] if isinstance(entry, tuple) and len(entry) == 2 else [(i, entry)])
        )
        return out
    return []


def _is_module(obj: Any) -> bool:
    return isinstance(obj, Stub) and (
        "_modules" in obj.attributes or obj.qualname.startswith("__torch__.")
    )


def _tensor_dict(obj: Any) -> dict[str, TensorStub | NDArrayStub] | None:
    """``obj`` as a state dict: string keys to tensors (a few non-tensor entries allowed)."""
    if not isinstance(obj, dict) or not obj:
        return None
    tensors = {
        k: v
        for k, v in obj.items()
        if isinstance(k, str) and isinstance(v, (TensorStub, NDArrayStub))
    }
    if not tensors or len(tensors) < 0.5 * len(obj):
        return None
    return tensors


def interpret(obj: Any, graph: ModelGraph) -> None:
    """Fill ``graph`` from an unpickled object, choosing the model inside a checkpoint."""
    if _is_module(obj):
        graph.format = "pickled_module"
        _read_module(obj, graph)
        return
    state = training_state(obj)
    if state is not None:
        _read_training_state(obj, state, graph)
        return
    direct = _tensor_dict(obj)
    if direct is not None:
        graph.format = "state_dict"
        _read_state_dict(direct, graph)
        return
    if isinstance(obj, TensorStub):
        graph.format = "tensor"
        graph.tensors["tensor"] = _info("tensor", obj)
        return
    found = _find_model(obj)
    if found is None:
        nested = _nested_training_state(obj)
        if nested:
            _read_training_state(obj, "; ".join(nested), graph)
            return
        kind = type(obj).__name__ if not isinstance(obj, Stub) else obj.qualname
        tensors = dict(iter_tensors(obj))
        if not tensors:
            raise Unreadable(f"not a model: the pickle holds a {kind} with no tensors")
        # tensors in a list, a tuple or any other container: weights without a state dict
        graph.format = "tensor_container"
        graph.metadata["container"] = kind
        _read_state_dict({name or "tensor": t for name, t in sorted(tensors.items())}, graph)
        return
    where, model = found
    graph.format = "checkpoint"
    graph.metadata["state_dict_key"] = where
    nested = _nested_training_state(obj)
    if nested:
        graph.metadata["training_state"] = nested
        graph.notes.append(f"also holds training state: {'; '.join(nested)}")
    if _is_module(model):
        _read_module(model, graph)
    else:
        _read_state_dict(model, graph)


def _nested_training_state(obj: Any) -> list[str]:
    """Training state a checkpoint carries beside the model (Lightning's ``optimizer_states``
    and ``lr_schedulers``, a custom loop's ``optimizer`` entry)."""
    if not isinstance(obj, dict):
        return []
    found = []
    for key, value in obj.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, list) and value and key in _LIGHTNING_STATE:
            kinds = [training_state(v) for v in value]
            if all(kinds):
                found.append(f"{key}: {len(value)} × {_brief_kind(str(kinds[0]))}")
                continue
        kind = training_state(value)
        if kind is not None:
            found.append(f"{key}: {kind}")
    return found


def _brief_kind(kind: str) -> str:
    return re.split(r"[:(]", kind, maxsplit=1)[0].strip()


def _find_model(obj: Any) -> tuple[str, Any] | None:
    """Breadth-first through nested dicts for the model's state dict (or module)."""
    if not isinstance(obj, dict):
        return None
    candidates: list[tuple[int, int, str, Any]] = []
    queue: list[tuple[str, Any, int]] = [("", obj, 0)]
    seen: set[int] = set()
    while queue:
        path, item, depth = queue.pop(0)
        if id(item) in seen or depth > 4:
            continue
        seen.add(id(item))
        if not isinstance(item, dict):
            continue
        for key, value in item.items():
            if not isinstance(key, str) or _NOT_MODEL.search(key):
                continue
            sub = f"{path}.{key}" if path else key
            if _is_module(value):
                candidates.append((_preference(key), 0, sub, value))
                continue
            tensors = _tensor_dict(value)
            if tensors is not None:
                size = sum(_nbytes(t) for t in tensors.values())
                candidates.append((_preference(key), -size, sub, tensors))
            elif isinstance(value, dict):
                queue.append((sub, value, depth + 1))
    if not candidates:
        return None
    candidates.sort(key=lambda c: (c[0], c[1]))
    return candidates[0][2], candidates[0][3]


def _preference(key: str) -> int:
    return _STATE_DICT_KEYS.index(key) if key in _STATE_DICT_KEYS else len(_STATE_DICT_KEYS)


def _nbytes(t: TensorStub | NDArrayStub) -> int:
    return int(math.prod(t.shape) * ITEMSIZE.get(t.dtype, 4))


def _info(name: str, t: TensorStub | NDArrayStub, kind: str = "parameter") -> TensorInfo:
    return TensorInfo(name, tuple(t.shape), t.dtype, kind)


_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _read_state_dict(tensors: dict[str, Any], graph: ModelGraph) -> None:
    for name, t in tensors.items():
        kind = "buffer" if name.endswith(_BUFFER_SUFFIXES) else "parameter"
        graph.tensors[name] = _info(name, t, kind)
        layout = getattr(t, "layout", "strided")
        if layout != "strided":
            graph.notes.append(
                f"{name}: a {layout.replace('_', ' ')} tensor, counted by its logical shape "
                f"{tuple(t.shape)}"
            )
    infer_layers(graph)


def infer_layers(graph: ModelGraph) -> None:
    """Group a bare state dict's tensors into layers and guess their types from names and
    shapes (marked ``inferred``; a message says "2-D weight" rather than claim a class)."""
    groups: dict[str, dict[str, TensorInfo]] = {}
    for name, info in graph.tensors.items():
        module, _, local = name.rpartition(".")
        groups.setdefault(module, {})[local] = info
    for module, tensors in groups.items():
        if module in graph.layers:
            graph.layers[module].tensors.update(tensors)
            continue
        graph.layers[module] = Layer(module, _guess_type(module, tensors), tensors, inferred=True)


def _guess_type(module: str, tensors: dict[str, TensorInfo]) -> str:
    if "running_mean" in tensors or "running_var" in tensors:
        return "BatchNorm"
    if any(k.startswith(("weight_ih_l", "weight_hh_l")) for k in tensors):
        return "LSTM" if "lstm" in module.lower() else "RNN"
    weight = tensors.get("weight")
    if weight is None:
        return ""
    rank = len(weight.shape)
    if rank == 2:
        lowered = module.lower()
        if re.search(r"emb|wte|wpe|tok|vocab|lookup", lowered) and "bias" not in tensors:
            return "Embedding"
        return "Linear"
    if rank in (3, 4, 5):
        return f"Conv{rank - 2}d"
    return ""


_MODULE_ATTRS = (
    "in_features", "out_features", "p", "inplace", "output_size", "eps", "momentum",
    "track_running_stats", "affine", "num_features", "kernel_size", "stride", "padding",
    "dilation", "groups", "in_channels", "out_channels", "num_embeddings", "embedding_dim",
    "hidden_size", "num_layers", "normalized_shape",
)  # fmt: skip


def _read_module(root: Stub, graph: ModelGraph) -> None:
    """Walk a pickled module tree (eager ``_modules`` or TorchScript attributes)."""
    graph.training = _training(root)
    stack: list[tuple[str, Stub]] = [("", root)]
    seen: set[int] = set()
    while stack:
        path, module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        if len(seen) > 1_000_000:
            raise Unreadable("module tree with more than a million modules")
        attrs = module.attributes
        qual = module.qualname.removeprefix("__torch__.")
        layer = Layer(path, qual, training=_training(module))
        for key in _MODULE_ATTRS:
            value = attrs.get(key)
            scalar = isinstance(value, (int, float, bool, tuple, list, str)) or value is None
            if scalar and key in attrs:
                layer.attrs[key] = value
        if "_modules" in attrs:
            params = attrs.get("_parameters") or {}
            buffers = attrs.get("_buffers") or {}
            children = attrs.get("_modules") or {}
        else:  # TorchScript: parameters, buffers and submodules are all attributes
            params = {k: v for k, v in attrs.items() if isinstance(v, TensorStub)}
            buffers = {}
            children = {k: v for k, v in attrs.items() if _is_module(v)}
        for name, t in _items(params):
            if isinstance(t, TensorStub):
                kind = "buffer" if name in _BUFFER_SUFFIXES else "parameter"
                layer.tensors[name] = _info(f"{path}.{name}" if path else name, t, kind)
        for name, t in _items(buffers):
            if isinstance(t, TensorStub):
                layer.tensors[name] = _info(f"{path}.{name}" if path else name, t, "buffer")
        for local, info in layer.tensors.items():
            graph.tensors[f"{path}.{local}" if path else local] = info
        graph.layers[path] = layer
        for name, child in reversed(_items(children)):
            if isinstance(child, Stub):
                stack.append((f"{path}.{name}" if path else str(name), child))


def _items(mapping: Any) -> list[tuple[str, Any]]:
    if isinstance(mapping, dict):
        return [(str(k), v) for k, v in mapping.items()]
    return []


def _training(module: Stub) -> bool | None:
    value = module.attributes.get("training")
    return value if isinstance(value, bool) else None
