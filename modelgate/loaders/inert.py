"""The inert unpickler: a pickle rebuilt as stand-ins that run nothing.

:func:`load_inert` unpickles with a ``find_class`` that never imports anything: every global
becomes an inert stand-in. Even a global the scanner (:mod:`modelgate.loaders.pickle_scan`)
missed cannot run: there is nothing real to call. Every stand-in is a type, as pickle wants
of what ``NEWOBJ`` gets: a class the pickle names becomes a :class:`Stub` subclass, a function
a :class:`_Callable` subclass whose calling (``REDUCE``) and instantiating (``NEWOBJ``) both
build the same value (a :class:`TensorStub` for torch's rebuild functions, including sparse,
quantized and nested tensors, else a :class:`_Record`). Stand-ins survive what pickle does to
the values they stand for (``BUILD``, ``SETITEM(S)``, ``APPEND(S)``, ``ADDITEMS``), and the
ones whose originals are hashable are hashable (a tensor or a device as a dict key).
Persistent ids (torch storages) become :class:`StorageRef` records; no tensor bytes are read.
Values the allow-list calls inert (:data:`~modelgate.loaders.allowlist.INERT`) are rebuilt as
a dict, a list or a str of their shape, so that loaders can read what they hold.

:class:`InertUnpickler` is CPython's C unpickler (what ``torch.load`` and ``pickle.load``
run); :class:`PyInertUnpickler` is pickle's pure-Python one, which joblib extends.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
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

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("BUILD on a storage")


@dataclass(eq=False)  # hashed by identity, as torch tensors are (a set of tensors)
class TensorStub:
    """A tensor's metadata as the pickle describes it. A sparse, quantized or nested tensor
    has the component tensors it is built from in ``parts`` (their storages are checked too)."""

    shape: tuple[int, ...]
    dtype: str
    storage: StorageRef | None = None
    offset: int = 0
    stride: tuple[int, ...] | None = None
    parameter: bool = False
    requires_grad: bool = False
    layout: str = "strided"  # sparse_coo, sparse_csr, ..., nested
    parts: tuple[TensorStub, ...] = ()

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state  # BUILD never rewrites shape or storage


NUMPY_CODES = {
    "f8": "float64", "f4": "float32", "f2": "float16", "i8": "int64", "i4": "int32",
    "i2": "int16", "i1": "int8", "u8": "uint64", "u4": "uint32", "u2": "uint16", "u1": "uint8",
    "b1": "bool", "c8": "complex64", "c16": "complex128",
}  # fmt: skip


@dataclass(eq=False)
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


class _Fillable:
    """What pickle does to the object it builds, recorded: BUILD (``__setstate__``),
    SETITEM(S), APPEND(S) and ADDITEMS. A stand-in survives every opcode its original does."""

    state: Any
    items: list[Any]

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Iterable[Any]) -> None:
        self.items.extend(values)

    def add(self, value: Any) -> None:  # ADDITEMS on something that is not a set
        self.items.append(value)


class Stub(_Fillable):
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
    """A dict-like value (Counter, defaultdict, Lightning's AttributeDict), rebuilt as a dict.
    A defaultdict's factory is kept as ``default_factory`` (a stand-in: never called)."""

    _qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        first = args[0] if args else None
        if isinstance(first, dict):  # Counter({...}), dict-like(mapping)
            self.update(first)
        elif first is not None:  # defaultdict(factory[, mapping])
            self.__dict__["default_factory"] = first
            if len(args) > 1 and isinstance(args[1], dict):
                self.update(args[1])

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def add(self, value: Any) -> None:
        raise pickle.UnpicklingError(f"ADDITEMS on {self._qualname}")

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


class _Callable:
    """A named function stand-in. It is a type, as pickle wants of what NEWOBJ gets: calling
    it (REDUCE, INST, OBJ) and instantiating it (NEWOBJ, ``cls.__new__``) both build the same
    inert value, a tensor stub for torch's rebuild functions, else a :class:`_Record`."""

    _qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return _call(cls._qualname, args, kwargs)


def _is_callable(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, _Callable)


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


def _tensors(values: Iterable[Any]) -> tuple[TensorStub, ...]:
    return tuple(v for v in values if isinstance(v, TensorStub))


def _dtype_of(value: Any, default: str) -> str:
    return value.name if isinstance(value, _DType) else default


def _sparse(args: tuple[Any, ...]) -> TensorStub:
    """``_rebuild_sparse_tensor(layout, data)``: COO data is (indices, values, size[,
    coalesced]); CSR, CSC, BSR and BSC data is (compressed, plain, values, size)."""
    layout, data = (*args, None, None)[:2]
    name = "sparse"
    if isinstance(layout, _Record) and layout.args and isinstance(layout.args[0], str):
        name = layout.args[0].removeprefix("torch.")  # _get_layout("torch.sparse_coo")
    if not isinstance(data, tuple) or len(data) not in (3, 4):
        raise pickle.UnpicklingError("_rebuild_sparse_tensor without its tensors")
    coo = name == "sparse_coo"
    values, size = (data[1], data[2]) if coo else (data[2], data[3])
    if not isinstance(values, TensorStub):
        raise pickle.UnpicklingError("_rebuild_sparse_tensor without a values tensor")
    return TensorStub(_shape(size), values.dtype, layout=name, parts=_tensors(data))


def _rebuild(short: str, args: tuple[Any, ...]) -> Any:
    """torch._utils' rebuild functions, as tensor stubs (no bytes are read)."""
    if short in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_qtensor"):
        if len(args) < 4 or not isinstance(args[0], StorageRef):
            raise pickle.UnpicklingError(f"{short} without a storage")
        storage = args[0]
        dtype = storage.dtype
        if short == "_rebuild_tensor_v3" and len(args) > 6:
            dtype = _dtype_of(args[6], dtype)
        offset = args[1] if _count(args[1]) else 0
        shape = _shape(args[2])
        made = TensorStub(shape, dtype, storage, offset, _stride(args[3], len(shape)))
        if short == "_rebuild_qtensor" and len(args) > 4 and isinstance(args[4], tuple):
            made.parts = _tensors(args[4])  # per-channel scales and zero points
        return made
    if short in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
        data = args[0] if args else None
        if isinstance(data, TensorStub):
            data.parameter = True
            data.requires_grad = bool(args[1]) if len(args) > 1 else False
        return data
    if short == "_rebuild_meta_tensor_no_storage":
        dtype = _dtype_of(args[0] if args else None, "float32")
        return TensorStub(_shape(args[1]) if len(args) > 1 else (), dtype)
    if short == "_rebuild_sparse_tensor":
        return _sparse(args)
    if short == "_rebuild_nested_tensor":  # (buffer, sizes, strides, storage offsets)
        buffer = args[0] if args else None
        if not isinstance(buffer, TensorStub):
            raise pickle.UnpicklingError("_rebuild_nested_tensor without a buffer")
        return TensorStub(buffer.shape, buffer.dtype, layout="nested", parts=_tensors(args))
    if short == "_rebuild_wrapper_subclass":  # (cls, dtype, size, stride, offset, ...)
        dtype = _dtype_of(args[1] if len(args) > 1 else None, "float32")
        return TensorStub(_shape(args[2]) if len(args) > 2 else (), dtype)
    if short in ("_rebuild_device_tensor_from_cpu_tensor", "_rebuild_device_tensor_from_numpy"):
        data = args[0] if args else None  # (data, dtype, device, requires_grad)
        if not isinstance(data, (TensorStub, NDArrayStub)):
            raise pickle.UnpicklingError(f"{short} without a tensor")
        dtype = _dtype_of(args[1] if len(args) > 1 else None, data.dtype)
        return TensorStub(tuple(data.shape), dtype, parts=_tensors([data]))
    return None


def _reconstructor(args: tuple[Any, ...]) -> Any:
    """``copyreg._reconstructor(cls, base, state)``: how protocols 0 and 1 pickle an instance
    (``base.__new__(cls, state)``); the stand-in class is instantiated, nothing is called."""
    cls, base, state = (*args, None, None, None)[:3]
    if not (isinstance(cls, type) and issubclass(cls, (Stub, InertDict, InertList, InertStr))):
        raise pickle.UnpicklingError(f"copyreg._reconstructor of {brief(cls)}")
    base_name = getattr(base, "_qualname", "")
    if base_name in ("builtins.dict", "builtins.list", "builtins.str"):
        return cls(state) if state is not None else cls()
    return cls.__new__(cls)


def _call(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    module, _, short = name.rpartition(".")
    if module.startswith("torch"):
        made = _rebuild(short, args)
        if made is not None:
            return made
    if short == "_rebuild_from_type_v2":
        func, _new_type, fargs = (*args, None, None, ())[:3]
        if _is_callable(func) and isinstance(fargs, tuple):
            return func(*fargs)
        raise pickle.UnpicklingError("_rebuild_from_type_v2 with an unexpected function")
    if short in ("_reconstruct",):
        return NDArrayStub()
    if name == "copyreg._reconstructor":
        return _reconstructor(args)
    if short == "encode":  # _codecs.encode(str, "latin1"): bytes in protocol 2
        text = args[0] if args else ""
        return text.encode("latin-1", "replace") if isinstance(text, str) else b""
    if short == "OrderedDict":
        return OrderedDict()
    if short in ("set", "frozenset"):
        items = args[0] if args else ()
        items = list(items) if isinstance(items, (list, tuple)) else []
        try:
            return set(items) if short == "set" else frozenset(items)
        except TypeError:  # a stand-in of something unhashable: keep the values
            return items
    if short in ("Size",):
        return tuple(args[0]) if args and isinstance(args[0], (list, tuple)) else ()
    return _Record(name, args, kwargs)


@dataclass(eq=False)  # hashed by identity: a record may be a dict key or a set member
class _Record(_Fillable):
    """What calling a function stand-in returned: its name and arguments."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: Any = None
    items: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class _DType:
    name: str


class _InertFinder:
    """``find_class`` and ``persistent_load`` of both inert unpicklers: nothing is imported,
    storages are never read."""

    def _setup(self, policy: Policy, class_stubs: bool) -> None:
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
            return self._class(full, _Callable)
        if self._policy.allows(full, "class") or self._class_stubs:
            return self._class(full)
        if self._policy.allows(full, "ref"):
            return self._class(full, _Callable)
        raise pickle.UnpicklingError(f"global {full} is not allowed")

    def _class(self, full: str, base: type = Stub) -> type:
        cls = self._classes.get(full)
        if cls is None:
            if len(self._classes) > MAX_GLOBALS:
                raise pickle.UnpicklingError("too many classes")
            name = full.rpartition(".")[2][:60] or base.__name__
            cls = type(name if name.isidentifier() else base.__name__, (base,), {"_qualname": full})
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


class InertUnpickler(_InertFinder, pickle.Unpickler):
    """Unpickles into stubs with CPython's C unpickler (what ``torch.load`` and ``pickle.load``
    run). ``find_class`` never imports; storages are never read."""

    def __init__(self, stream: BinaryIO, policy: Policy, class_stubs: bool) -> None:
        pickle.Unpickler.__init__(self, stream)
        self._setup(policy, class_stubs)


class PyInertUnpickler(_InertFinder, pickle._Unpickler):  # type: ignore[name-defined]
    """The same with pickle's pure-Python unpickler, which joblib subclasses: its opcode
    handlers (``dispatch``) can be extended the way joblib extends them."""

    def __init__(self, stream: BinaryIO, policy: Policy, class_stubs: bool) -> None:
        pickle._Unpickler.__init__(self, stream)  # type: ignore[attr-defined]
        self._setup(policy, class_stubs)


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
