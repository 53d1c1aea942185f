"""The inert unpickler: a pickle rebuilt as stand-ins that run nothing.

:func:`load_inert` unpickles with a ``find_class`` that never imports anything: every global
becomes an inert stub (:class:`Stub`, :class:`TensorStub`, ...). Even a global the scanner
(:mod:`modelgate.loaders.pickle_scan`) missed cannot run: there is nothing real to call.
Persistent ids (torch storages) become :class:`StorageRef` records; no tensor bytes are read.
Values the allow-list calls inert (:data:`~modelgate.loaders.allowlist.INERT`) are rebuilt as
a dict, a list or a str of their shape, so that loaders can read what they hold.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

from modelgate.loaders.allowlist import (
    INERT,
    INERT_DICTS,
    INERT_LISTS,
    INERT_STRS,
    QSCHEMES,
    STORAGE_DTYPES,
    TORCH_DTYPES,
    Policy,
    qualified,
)
from modelgate.loaders.bounds import MAX_DIM, MAX_GLOBALS, MAX_RANK, brief


@dataclass(frozen=True)
class StorageRef:
    """A torch storage named by a persistent id; its bytes live elsewhere (an archive member)."""

    key: str
    dtype: str
    numel: int
    location: str = "cpu"


@dataclass
class TensorStub:
    """A tensor's metadata as the pickle describes it."""

    shape: tuple[int, ...]
    dtype: str
    storage: StorageRef | None = None
    offset: int = 0
    stride: tuple[int, ...] | None = None
    parameter: bool = False
    requires_grad: bool = False


NUMPY_CODES = {
    "f8": "float64", "f4": "float32", "f2": "float16", "i8": "int64", "i4": "int32",
    "i2": "int16", "i1": "int8", "u8": "uint64", "u4": "uint32", "u2": "uint16", "u1": "uint8",
    "b1": "bool", "c8": "complex64", "c16": "complex128",
}  # fmt: skip


@dataclass
class NDArrayStub:
    """A numpy array's shape and dtype (its bytes are ignored)."""

    shape: tuple[int, ...] = ()
    dtype: str = "float32"

    def __setstate__(self, state: Any) -> None:
        # (version, shape, dtype, is_fortran, rawdata)
        if isinstance(state, tuple) and len(state) >= 3:
            try:
                self.shape = _shape(state[1])
            except pickle.UnpicklingError:
                self.shape = ()
            dtype = state[2]
            code = dtype.args[0] if isinstance(dtype, _Record) and dtype.args else None
            if isinstance(code, str):
                self.dtype = NUMPY_CODES.get(code.lstrip("<>|="), code)


class Stub:
    """An instance of a class the pickle names; records its state, runs nothing."""

    _qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Stub:
        # NEWOBJ calls __new__ without __init__: set everything here
        self = super().__new__(cls)
        self.args = args
        self.kwargs = kwargs
        self.state = None
        self.items = []
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Iterable[Any]) -> None:
        self.items.extend(values)

    def __repr__(self) -> str:
        return f"<{self._qualname}>"

    @property
    def qualname(self) -> str:
        return type(self)._qualname

    @property
    def attributes(self) -> dict[str, Any]:
        """The instance's pickled ``__dict__`` (state may be ``(dict, slots)``)."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2:
            merged: dict[str, Any] = {}
            for part in state:
                if isinstance(part, dict):
                    merged.update(part)
            return merged
        return state if isinstance(state, dict) else {}


class InertDict(dict):
    """A dict-like value (Counter, defaultdict, Lightning's AttributeDict), rebuilt as a dict."""

    _qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args and isinstance(args[0], dict):  # Counter({...}); defaultdict(factory) is not
            self.update(args[0])

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    @property
    def qualname(self) -> str:
        return type(self)._qualname


class InertList(list):
    """A list-like value (deque), rebuilt as a list."""

    _qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args and isinstance(args[0], (list, tuple)):
            self.extend(args[0])

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state


class InertStr(str):
    """A str subclass (torch's TorchVersion), rebuilt as its text."""

    _qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> InertStr:
        return super().__new__(cls, args[0] if args and isinstance(args[0], str) else "")

    def __setstate__(self, state: Any) -> None:
        pass


def _inert_base(name: str) -> type:
    if name in INERT_DICTS:
        return InertDict
    if name in INERT_LISTS:
        return InertList
    if name in INERT_STRS:
        return InertStr
    return Stub


class _StubCallable:
    """A named function stand-in; calling it builds an inert record."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _call(self.name, args, kwargs)

    def __repr__(self) -> str:
        return f"<{self.name}>"


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value < MAX_DIM


def _shape(value: Any) -> tuple[int, ...]:
    if isinstance(value, Stub):  # torch.Size(...)
        value = value.args[0] if value.args else ()
    if (
        not isinstance(value, (tuple, list))
        or len(value) > MAX_RANK
        or not all(_count(d) for d in value)
    ):
        raise pickle.UnpicklingError(f"tensor size is not a tuple of counts: {brief(value)}")
    numel = 1
    for d in value:
        numel *= d
    if numel >= MAX_DIM:
        raise pickle.UnpicklingError(f"tensor size {brief(value)} holds more than 2**62 elements")
    return tuple(value)


def _stride(value: Any, rank: int) -> tuple[int, ...] | None:
    if not isinstance(value, (tuple, list)):
        return None
    if len(value) != rank or not all(_count(s) for s in value):
        raise pickle.UnpicklingError(f"tensor stride is not a tuple of counts: {brief(value)}")
    return tuple(value)


def _call(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    short = name.rpartition(".")[2]
    if short in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_qtensor"):
        if len(args) < 4 or not isinstance(args[0], StorageRef):
            raise pickle.UnpicklingError(f"{short} without a storage")
        storage = args[0]
        dtype = storage.dtype
        if short == "_rebuild_tensor_v3" and len(args) > 6 and isinstance(args[6], _DType):
            dtype = args[6].name
        offset = args[1] if _count(args[1]) else 0
        shape = _shape(args[2])
        return TensorStub(shape, dtype, storage, offset, _stride(args[3], len(shape)))
    if short in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
        data = args[0] if args else None
        if isinstance(data, TensorStub):
            data.parameter = True
            data.requires_grad = bool(args[1]) if len(args) > 1 else False
        return data
    if short == "_rebuild_meta_tensor_no_storage":
        dtype = args[0].name if args and isinstance(args[0], _DType) else "float32"
        return TensorStub(_shape(args[1]) if len(args) > 1 else (), dtype)
    if short == "_rebuild_from_type_v2":
        func, _new_type, fargs = (*args, None, None, ())[:3]
        if isinstance(func, _StubCallable) and isinstance(fargs, tuple):
            return func(*fargs)
        raise pickle.UnpicklingError("_rebuild_from_type_v2 with an unexpected function")
    if short in ("_reconstruct",):
        return NDArrayStub()
    if short == "encode":  # _codecs.encode(str, "latin1"): bytes in protocol 2
        text = args[0] if args else ""
        return text.encode("latin-1", "replace") if isinstance(text, str) else b""
    if short == "OrderedDict":
        return OrderedDict()
    if short in ("set", "frozenset"):
        items = args[0] if args else ()
        return list(items) if isinstance(items, (list, tuple)) else []
    if short in ("Size",):
        return tuple(args[0]) if args and isinstance(args[0], (list, tuple)) else ()
    return _Record(name, args, kwargs)


@dataclass
class _Record:
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __setstate__(self, state: Any) -> None:
        self.state = state


@dataclass(frozen=True)
class _DType:
    name: str


class InertUnpickler(pickle.Unpickler):
    """Unpickles into stubs. ``find_class`` never imports; storages are never read."""

    def __init__(self, stream: BinaryIO, policy: Policy, class_stubs: bool) -> None:
        super().__init__(stream)
        self._policy = policy
        self._class_stubs = class_stubs
        self._classes: dict[str, type] = {}
        self.storage_keys: set[str] = set()  # persistent ids seen: the storages in use

    def find_class(self, module: str, name: str) -> Any:
        full = qualified(module, name)
        owner, _, short = full.rpartition(".")
        if owner == "torch" and short in TORCH_DTYPES:
            return _DType(short)
        if owner in ("torch", "torch.cuda", "torch.storage") and short in STORAGE_DTYPES:
            return _DType(STORAGE_DTYPES[short])
        if owner == "torch" and short in QSCHEMES:
            return _DType(short)
        if full in INERT:
            return self._class(full, _inert_base(full))
        if self._policy.extra_allows(full):
            return self._class(full)  # the user's own classes: inert, whatever their use
        if self._policy.allows(full, "call"):
            return _StubCallable(full)
        if self._policy.allows(full, "class") or self._class_stubs:
            return self._class(full)
        if self._policy.allows(full, "ref"):
            return _StubCallable(full)
        raise pickle.UnpicklingError(f"global {full} is not allowed")

    def _class(self, full: str, base: type = Stub) -> type:
        cls = self._classes.get(full)
        if cls is None:
            if len(self._classes) > MAX_GLOBALS:
                raise pickle.UnpicklingError("too many classes")
            cls = type(base.__name__, (base,), {"_qualname": full})
            self._classes[full] = cls
        return cls

    def persistent_load(self, pid: Any) -> Any:
        # torch zip layout: ("storage", storage_type, key, location, numel)
        # legacy layout:    ("storage", storage_type, root_key, location, numel, view_metadata)
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            stype, key, location, numel = pid[1], pid[2], pid[3], pid[4]
            dtype = stype.name if isinstance(stype, _DType) else "uint8"
            if not _count(numel):
                raise pickle.UnpicklingError(f"storage with an invalid size {brief(numel)}")
            if not isinstance(key, (str, int)) or not isinstance(location, str):
                raise pickle.UnpicklingError(f"storage with an invalid key {brief(key)}")
            self.storage_keys.add(str(key))
            return StorageRef(str(key), dtype, numel, location[:40])
        if isinstance(pid, (str, int)) and not isinstance(pid, bool):
            # TorchScript / other readers: ids name members
            self.storage_keys.add(str(pid))
            return StorageRef(str(pid), "uint8", 0)
        raise pickle.UnpicklingError(f"unknown persistent id {brief(pid)}")


def load_inert(
    data: bytes | memoryview | BinaryIO, policy: Policy, class_stubs: bool, start: int = 0
) -> Any:
    """Unpickle ``data`` into inert stubs. Raises ``pickle.UnpicklingError`` and friends."""
    return load_inert_keys(data, policy, class_stubs, start)[0]


def load_inert_keys(
    data: bytes | memoryview | BinaryIO, policy: Policy, class_stubs: bool, start: int = 0
) -> tuple[Any, set[str]]:
    """:func:`load_inert`, plus the storage keys (persistent ids) the pickle refers to."""
    stream: BinaryIO = io.BytesIO(data) if isinstance(data, (bytes, memoryview)) else data
    stream.seek(start)
    unpickler = InertUnpickler(stream, policy, class_stubs)
    return unpickler.load(), unpickler.storage_keys
