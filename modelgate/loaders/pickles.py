"""Reading pickles without running them.

Two steps, both needed:

1. :func:`scan` walks the opcode stream statically (``pickletools.genops``), simulating the
   stack far enough to resolve every global, including ``STACK_GLOBAL`` fed through the memo,
   and records how each is used (called, instantiated as a class, or only referenced).
   Anything not on the allow-list is a :class:`PickleIssue`; an opcode stream it cannot follow
   is one too (fail closed).
2. :func:`load_inert` unpickles with a ``find_class`` that never imports anything: every global
   becomes an inert stub (:class:`Stub`, :class:`TensorStub`, ...). Even a global the scanner
   missed cannot run: there is nothing real to call. Persistent ids (torch storages) become
   :class:`StorageRef` records; no tensor bytes are read.

The allow-list is what tensors and plain containers need (it mirrors torch's own
``weights_only`` unpickler), plus PyTorch's own ``torch.nn`` module classes in class position,
so that a pickled ``nn.Module`` can be read as a module tree, plus values training frameworks
put into checkpoints that do nothing when rebuilt (``argparse.Namespace``, ``pathlib`` paths,
``datetime`` values, ``collections`` containers, Lightning's ``AttributeDict``; see
:data:`INERT`), each rebuilt as a stand-in of its shape. Users extend it in the config.
Everything else stays out: fail closed.
"""

from __future__ import annotations

import _compat_pickle
import fnmatch
import io
import pickle
import pickletools
import re
import reprlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from modelgate.graph import PickleIssue

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy torch.save file
# Sizes a tensor can have: torch indexes with int64; more dims than this is not a checkpoint.
MAX_DIM = 2**62
MAX_RANK = 256

# Storage classes as pickled by torch.save, by the dtype they hold.
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "QInt8Storage": "qint8",
    "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
    "UntypedStorage": "uint8",
}

TORCH_DTYPES = frozenset(
    {
        "float64", "float32", "float16", "bfloat16", "complex128", "complex64", "complex32",
        "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8", "bool",
        "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
        "float4_e2m1fn_x2", "qint8", "quint8", "qint32", "quint4x2", "quint2x4",
        "bits16", "bits1x8", "bits2x4", "bits4x2", "bits8",
        *(f"int{i}" for i in range(1, 8)), *(f"uint{i}" for i in range(1, 8)),
        # legacy aliases torch pickles under
        "float", "double", "half", "long", "int", "short", "cfloat", "cdouble",
    }
)  # fmt: skip

QSCHEMES = frozenset(
    {
        "per_tensor_affine",
        "per_tensor_symmetric",
        "per_channel_affine",
        "per_channel_symmetric",
        "per_channel_affine_float_qparams",
    }
)

TENSOR_REBUILDERS = frozenset(
    {
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_qtensor",
        "_rebuild_sparse_tensor",
        "_rebuild_nested_tensor",
        "_rebuild_meta_tensor_no_storage",
        "_rebuild_wrapper_subclass",
        "_rebuild_device_tensor_from_numpy",
        "_rebuild_device_tensor_from_cpu_tensor",
    }
)

# Globals a checkpoint of tensors and plain containers needs, by how they may be used.
_ALLOWED: dict[str, frozenset[str]] = {
    "collections.OrderedDict": frozenset({"call", "class", "ref"}),
    "builtins.set": frozenset({"call", "ref"}),
    "builtins.frozenset": frozenset({"call", "ref"}),
    "builtins.bytearray": frozenset({"call", "ref"}),
    "builtins.complex": frozenset({"call", "ref"}),
    "builtins.slice": frozenset({"call", "ref"}),
    "builtins.range": frozenset({"call", "ref"}),
    "builtins.list": frozenset({"ref"}),
    "builtins.dict": frozenset({"ref"}),
    "builtins.tuple": frozenset({"ref"}),
    "builtins.int": frozenset({"ref"}),
    "builtins.float": frozenset({"ref"}),
    "builtins.str": frozenset({"ref"}),
    "builtins.object": frozenset({"ref"}),
    "_codecs.encode": frozenset({"call"}),
    "torch.Size": frozenset({"call", "ref"}),
    "torch.device": frozenset({"call", "ref"}),
    "torch.Tensor": frozenset({"ref", "class"}),
    "torch.nn.parameter.Parameter": frozenset({"ref", "class"}),
    "torch.nn.parameter.Buffer": frozenset({"ref", "class"}),
    "torch.serialization._get_layout": frozenset({"call"}),
    "torch._tensor._rebuild_from_type_v2": frozenset({"call"}),
    "numpy.core.multiarray._reconstruct": frozenset({"call"}),
    "numpy._core.multiarray._reconstruct": frozenset({"call"}),
    "numpy.core.multiarray.scalar": frozenset({"call"}),
    "numpy._core.multiarray.scalar": frozenset({"call"}),
    "numpy.ndarray": frozenset({"ref", "class"}),
    "numpy.dtype": frozenset({"call", "ref"}),
}

# Values training frameworks put into checkpoints, which do nothing when rebuilt: a class here
# only stores what the pickle hands it (no __setstate__, __init__ or __reduce__ of its own that
# runs code). Each is rebuilt as an inert stand-in of the same shape (a record, a dict, a list or
# a str); torch's weights_only unpickler needs them added (rule MG904).
_INERT_RECORDS = frozenset(
    {
        "argparse.Namespace",  # Lightning hyper_parameters, scripts that save their args
        "types.SimpleNamespace",
        *(f"pathlib.{c}" for c in ("Path", "PosixPath", "WindowsPath", "PurePath",
                                   "PurePosixPath", "PureWindowsPath")),
        *(f"pathlib._local.{c}" for c in ("Path", "PosixPath", "WindowsPath", "PurePath",
                                          "PurePosixPath", "PureWindowsPath")),  # Python 3.13
        *(f"datetime.{c}" for c in ("datetime", "date", "time", "timedelta", "timezone")),
    }
)  # fmt: skip
_INERT_DICTS = frozenset(
    {
        "collections.Counter",
        "collections.defaultdict",  # its default_factory is a global of its own, checked alone
        # Lightning's dict with attribute access (no __setitem__ or __setstate__ of its own)
        "lightning.fabric.utilities.data.AttributeDict",
        "lightning_fabric.utilities.data.AttributeDict",
        "lightning.pytorch.utilities.parsing.AttributeDict",
        "pytorch_lightning.utilities.parsing.AttributeDict",
    }
)
_INERT_LISTS = frozenset({"collections.deque"})
_INERT_STRS = frozenset({"torch.torch_version.TorchVersion"})  # torch.__version__
INERT = _INERT_RECORDS | _INERT_DICTS | _INERT_LISTS | _INERT_STRS
_ALLOWED.update({name: frozenset({"call", "class", "ref"}) for name in INERT})

# What torch.load(weights_only=True) accepts without add_safe_globals (torch 2.13's
# _weights_only_unpickler._get_allowed_globals; a test compares the two).
_TORCH_DEFAULT = frozenset(
    {
        "_codecs.encode", "builtins.bytearray", "builtins.complex", "builtins.set",
        "collections.Counter", "collections.OrderedDict", "torch._tensor._rebuild_from_type_v2",
        "torch.nn.parameter.Parameter", "torch.serialization._get_layout", "torch.Size",
        "torch.Tensor", "torch.device", "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
    }
)  # fmt: skip
_TENSOR_TYPES = ("BFloat16", "Bool", "Byte", "Char", "Double", "Float", "Half", "Int", "Long",
                 "Short")  # fmt: skip
_DTYPE_ALIASES = frozenset({"float", "double", "half", "long", "int", "short", "cfloat", "cdouble"})


def torch_default_allows(name: str) -> bool:
    """True when ``torch.load(weights_only=True)`` accepts global ``name`` by default."""
    if name in _TORCH_DEFAULT:
        return True
    module, _, short = name.rpartition(".")
    if module == "torch._utils":
        return short in TENSOR_REBUILDERS
    if module in ("torch", "torch.cuda") and short in STORAGE_DTYPES:
        return short != "UntypedStorage" and not (module == "torch.cuda" and short[0] == "Q")
    if module in ("torch", "torch.cuda", "torch.sparse", "torch.cuda.sparse"):
        kind = short.removesuffix("Tensor")
        if short.endswith("Tensor") and kind in _TENSOR_TYPES:
            return not (module.endswith("sparse") and kind == "Bool")
    if module == "torch":
        return (short in TORCH_DTYPES and short not in _DTYPE_ALIASES) or short in QSCHEMES
    return False


# PyTorch's own layer classes: read as module structure when used as classes (NEWOBJ).
# Module path segments are lower case and the class is the last segment: an attribute path
# through a module (``torch.nn.modules.module.os.X``) never matches.
_TORCH_MODULE_CLASS = re.compile(
    r"^torch\.(ao\.)?nn\.(modules|quantized|qat|intrinsic)(\.[a-z_][a-z0-9_]*)*\.[A-Z]\w*$"
)
_NUMPY_DTYPE_CLASS = re.compile(r"^numpy\.dtypes\.\w+DType$")

# TorchScript archives: classes of the compilation unit, and TorchScript's own rebuilders.
_TORCHSCRIPT_CLASS = re.compile(r"^__torch__(\.\w+)+$")
_TORCHSCRIPT_PICKLE = re.compile(r"^torch\.jit\._pickle\.(restore_type_tag|build_\w+)$")
# C++ classes bound to TorchScript (``torch.classes.<ns>.<name>``): their ``__setstate__`` is
# native code that runs at load. Only PyTorch's own packed-weight namespaces are allowed.
_TORCH_CLASS = re.compile(r"^__torch__\.torch\.classes\.(\w+)\.\w+$")
TORCH_CLASS_NAMESPACES = frozenset({"quantized", "xnnpack", "mkldnn", "onednn", "sparse", "rnn"})


def qualified(module: str, name: str) -> str:
    """The dotted name of a global, with pickle's Python 2 module names mapped."""
    return _resolve(module, name, 2)


@dataclass
class Policy:
    """What a scan accepts. ``extra`` holds the user's glob patterns from the config."""

    extra: tuple[str, ...] = ()
    torchscript: bool = False  # allow TorchScript's own class and rebuild names

    def allows(self, name: str, usage: str) -> bool:
        if _extra_allows(self, name):
            return True
        if usage == "build":  # BUILD on a global patches a class or function at load
            return False
        allowed = _ALLOWED.get(name)
        if allowed is not None:
            return usage in allowed
        module, _, short = name.rpartition(".")
        if module == "torch":
            if short in STORAGE_DTYPES or short in TORCH_DTYPES or short in QSCHEMES:
                return usage == "ref" or (usage == "call" and short in STORAGE_DTYPES)
            if short.endswith("Tensor") and short[:-6] + "Storage" in STORAGE_DTYPES:
                return usage in ("ref", "class")
            return False
        if module in ("torch.cuda", "torch.storage"):
            return short in STORAGE_DTYPES and usage in ("ref", "call")
        if module == "torch._utils":
            return short in TENSOR_REBUILDERS and usage == "call"
        if _TORCH_MODULE_CLASS.match(name):
            return usage == "class"
        if _NUMPY_DTYPE_CLASS.match(name):
            return usage in ("ref", "call")
        if self.torchscript:
            custom = _TORCH_CLASS.match(name)
            if custom is not None:
                return usage == "class" and custom.group(1) in TORCH_CLASS_NAMESPACES
            if _TORCHSCRIPT_CLASS.match(name):
                return usage in ("class", "ref")
            if _TORCHSCRIPT_PICKLE.match(name):
                return usage == "call"
        return False


# ---------------------------------------------------------------------------------------------
# Static scan
# ---------------------------------------------------------------------------------------------

_STRING_OPS = frozenset(
    {
        "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
        "SHORT_BINUNICODE", "BINUNICODE8",
    }
)  # fmt: skip
_EXT_OPS = frozenset({"EXT1", "EXT2", "EXT4"})
_MAX_GLOBALS = 100_000
MAX_OPCODES = 50_000_000  # a 256 MB pickle of tensors has far fewer
_MEMO_SLACK = 1024  # memo indices beyond (opcodes so far + this) are a memory bomb
# Integers below 2**61 - 1 hash to themselves; above, distinct ones can share a hash, and a
# dict keyed by thousands of them takes minutes to build. Checkpoints hold almost none.
_HASH_MODULUS = 2**61 - 1
_MAX_BIG_INTS = 10_000
_INT_OPS = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"})
# How a global is used, most dangerous first; a report names the first one not allowed.
USAGES = ("call", "build", "ref", "class")


class _Global:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _Mark:
    pass


class _Built:
    """What calling or instantiating a global left on the stack (to see what fills it)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _built(value: object) -> object:
    return _Built(value.name) if isinstance(value, _Global) else _ANY


_FILL_OPS = {"SETITEM": "items", "SETITEMS": "items", "APPEND": "appends", "APPENDS": "appends"}


_MARK = _Mark()
_ANY = object()


@dataclass
class ScanResult:
    globals: dict[str, set[str]] = field(default_factory=dict)  # name -> usages
    issues: list[PickleIssue] = field(default_factory=list)
    end: int = 0  # offset just past STOP
    persistent_ids: int = 0
    truncated: bool = False  # the data ended before STOP
    # globals whose instances the pickle fills: "items" (SETITEM/S) or "appends" (APPEND/S)
    filled: dict[str, set[str]] = field(default_factory=dict)

    @property
    def class_only(self) -> bool:
        """True when every disallowed global is only instantiated as a class (NEWOBJ)."""
        return all(i.usage == "class" for i in self.issues)

    @property
    def blocking(self) -> bool:
        """Unpickling is off: a disallowed global is called or used, or the stream is odd."""
        return not self.class_only


def _use(result: ScanResult, value: object, usage: str) -> None:
    if isinstance(value, _Global):
        result.globals.setdefault(value.name, set()).add(usage)


def _resolve(module: str, name: str, proto: int) -> str:
    """The global the unpickler would import: Python 2 names are mapped below protocol 3."""
    if proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _line_pair(stream: BinaryIO, pos: int) -> tuple[str, str]:
    """GLOBAL / INST arguments exactly as the unpickler reads them (two UTF-8 lines)."""
    here = stream.tell()
    stream.seek(pos + 1)
    module = stream.readline()
    name = stream.readline()
    stream.seek(here)
    if not module.endswith(b"\n") or not name.endswith(b"\n"):
        raise _Unfollowable(f"global at byte {pos} without its two lines")
    return module[:-1].decode("utf-8"), name[:-1].decode("utf-8")


def _size_of(stream: BinaryIO) -> int:
    here = stream.tell()
    end = stream.seek(0, 2)
    stream.seek(here)
    return end


def scan(
    data: bytes | memoryview | BinaryIO, member: str, policy: Policy, start: int = 0
) -> ScanResult:
    """Statically list a pickle's globals and check them against ``policy``.

    ``data`` is the pickle's bytes or a seekable binary file (read as far as the pickle goes,
    so a multi-GB legacy checkpoint is not read whole). ``start`` lets a caller scan one of
    several pickles written back to back (the legacy ``torch.save`` layout);
    ``ScanResult.end`` tells where the next one begins.
    """
    result = ScanResult()
    stream: BinaryIO = io.BytesIO(data) if isinstance(data, (bytes, memoryview)) else data
    size = _size_of(stream)
    stream.seek(start)
    stack: list[object] = []
    memo: dict[int, object] = {}
    dotted: set[str] = set()
    proto = 0
    count = 0
    big_ints = 0
    try:
        for opcode, arg, pos in pickletools.genops(stream):
            count += 1
            if count > MAX_OPCODES:
                raise _Unfollowable(f"more than {MAX_OPCODES:,} opcodes")
            name = opcode.name
            if name in _STRING_OPS:
                stack.append(arg)
            elif name in _INT_OPS:
                if type(arg) is int and abs(arg) >= _HASH_MODULUS:
                    big_ints += 1
                    if big_ints > _MAX_BIG_INTS:
                        raise _Unfollowable(f"more than {_MAX_BIG_INTS:,} integers over 2**61")
                stack.append(_ANY)
            elif name == "PROTO":
                proto = int(arg)
            elif name in ("GLOBAL", "INST"):
                module, attr = _line_pair(stream, pos)
                found = _Global(_resolve(module, attr, proto))
                if "." in attr:
                    dotted.add(found.name)
                if name == "GLOBAL":
                    stack.append(found)
                else:
                    for item in _pop_mark(stack, name, pos):
                        _use(result, item, "ref")
                    _use(result, found, "call")
                    stack.append(_built(found))
            elif name == "STACK_GLOBAL":
                if len(stack) < 2 or not all(type(v) is str for v in stack[-2:]):
                    raise _Unfollowable(f"STACK_GLOBAL at byte {pos} on values it cannot resolve")
                attr = stack.pop()
                module = stack.pop()
                found = _Global(_resolve(module, attr, proto))  # type: ignore[arg-type]
                if "." in attr:  # type: ignore[operator]
                    dotted.add(found.name)
                stack.append(found)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                if not stack or stack[-1] is _MARK:
                    raise _Unfollowable(f"{name} with nothing to store at byte {pos}")
                index = len(memo) if name == "MEMOIZE" else int(arg)
                if index > count + _MEMO_SLACK:
                    raise _Unfollowable(f"{name} to memo slot {index:,} at byte {pos}")
                memo[index] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if int(arg) not in memo:
                    raise _Unfollowable(f"{name} of memo slot {arg} never stored, byte {pos}")
                stack.append(memo[int(arg)])
            elif name == "DUP":
                _need(stack, 1, name, pos)
                stack.append(stack[-1])
            elif name == "POP":
                if not stack:
                    raise _Unfollowable(f"POP on an empty stack at byte {pos}")
                _use(result, stack.pop(), "ref")
            elif name in _EXT_OPS:
                raise _Unfollowable(f"{name} (copyreg extension registry) at byte {pos}")
            elif name == "REDUCE":
                _need(stack, 2, name, pos)
                _use(result, stack[-2], "call")
                _use(result, stack[-1], "ref")
                made = _built(stack[-2])
                del stack[-2:]
                stack.append(made)
            elif name in ("NEWOBJ", "NEWOBJ_EX"):
                n = 2 if name == "NEWOBJ" else 3
                _need(stack, n, name, pos)
                _use(result, stack[-n], "class")
                for item in stack[-n + 1 :]:
                    _use(result, item, "ref")
                made = _built(stack[-n])
                del stack[-n:]
                stack.append(made)
            elif name == "OBJ":
                items = _pop_mark(stack, name, pos)
                if not items:
                    raise _Unfollowable(f"OBJ without a class at byte {pos}")
                _use(result, items[0], "call")
                for item in items[1:]:
                    _use(result, item, "ref")
                stack.append(_built(items[0]))
            elif name == "BUILD":
                _need(stack, 2, name, pos)
                _use(result, stack[-2], "build")  # setting state on a class or function
                _use(result, stack[-1], "ref")
                stack.pop()
            elif name in ("PERSID", "BINPERSID"):
                result.persistent_ids += 1
                if name == "BINPERSID":
                    _need(stack, 1, name, pos)
                    _use(result, stack.pop(), "ref")
                stack.append(_ANY)
            elif name in _FILL_OPS:
                target = _fill_target(stack, name)
                _generic(stack, opcode, result, pos)
                if isinstance(target, _Built):
                    result.filled.setdefault(target.name, set()).add(_FILL_OPS[name])
                    stack[-1] = target  # the container stays what it was
            elif name == "STOP":
                _need(stack, 1, name, pos)
                _use(result, stack[-1], "ref")
                result.end = stream.tell()
                break
            else:
                _generic(stack, opcode, result, pos)
            if len(result.globals) > _MAX_GLOBALS:
                raise _Unfollowable(f"more than {_MAX_GLOBALS:,} distinct globals")
        else:
            raise _Unfollowable("the stream ends without STOP")
    except (_Unfollowable, ValueError, EOFError, KeyError, IndexError, TypeError,
            OverflowError, UnicodeDecodeError, MemoryError) as exc:  # fmt: skip
        result.truncated = stream.tell() >= size
        reason = "it ends before STOP (truncated)" if result.truncated else _brief_error(exc)
        result.issues.append(
            PickleIssue(member, None, f"cannot follow the pickle: {reason}", "stream")
        )
    # globals met before a stream breaks off count too: the unpickler runs them as it goes
    for gname, usages in sorted(result.globals.items()):
        shown = gname if len(gname) <= 200 else gname[:199] + "…"
        if gname in dotted and not _extra_allows(policy, gname, dotted=True):
            result.issues.append(
                PickleIssue(member, shown, f"looks up the attribute path {shown}", "call")
            )
            continue
        for usage in USAGES:
            if usage in usages and not policy.allows(gname, usage):
                result.issues.append(PickleIssue(member, shown, _describe(shown, usage), usage))
                break
    return result


def _extra_allows(policy: Policy, name: str, dotted: bool = False) -> bool:
    """Dotted lookups (``module`` + ``a.b.c``) can walk from a trusted module anywhere, so
    only an exact entry in the user's allow-list admits one, never a glob."""
    if dotted:
        return name in policy.extra
    return any(fnmatch.fnmatchcase(name, pat) for pat in policy.extra)


def _brief_error(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def _describe(name: str, usage: str) -> str:
    if usage == "class":
        return f"instantiates class {name}, which loading would import and run"
    if usage == "call":
        return f"calls {name} while loading"
    if usage == "build":
        return f"sets attributes on {name} while loading"
    return f"references {name}"


class _Unfollowable(Exception):
    pass


def _fill_target(stack: list[object], name: str) -> object:
    """The container SETITEM(S) / APPEND(S) fill (None when the stack is malformed)."""
    if name in ("SETITEM", "APPEND"):
        n = 3 if name == "SETITEM" else 2
        return stack[-n] if len(stack) >= n else None
    for i in range(len(stack) - 1, 0, -1):
        if stack[i] is _MARK:
            return stack[i - 1]
    return None


def _need(stack: list[object], n: int, name: str, pos: int) -> None:
    if len(stack) < n or any(v is _MARK for v in stack[-n:]):
        raise _Unfollowable(f"{name} at byte {pos} needs {n} stack values")


def _pop_mark(stack: list[object], name: str, pos: int) -> list[object]:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1 :]
            del stack[i:]
            return items
    raise _Unfollowable(f"{name} at byte {pos} without a MARK")


def _generic(
    stack: list[object], opcode: pickletools.OpcodeInfo, result: ScanResult, pos: int
) -> None:
    """Apply an opcode's declared stack effect; globals consumed here count as references."""
    before = opcode.stack_before
    if pickletools.markobject in before:
        # everything down to the mark is consumed (plus what sits below it, e.g. the list)
        items = _pop_mark(stack, opcode.name, pos)
        for item in items:
            _use(result, item, "ref")
        below = before.index(pickletools.markobject)
        if below:
            _need(stack, below, opcode.name, pos)
        for _ in range(below):
            _use(result, stack.pop(), "ref")
    else:
        n = len(before)
        if n:
            _need(stack, n, opcode.name, pos)
            for item in stack[-n:]:
                _use(result, item, "ref")
            del stack[-n:]
    for produced in opcode.stack_after:
        stack.append(_MARK if produced is pickletools.markobject else _ANY)
    # containers that are appended to / set on stay on the stack (they are in stack_after)


_LEGACY_PARTS = ("magic number", "protocol", "sys info", "object", "storage keys")


def scan_sequence(
    data: bytes | memoryview | BinaryIO,
    label: str,
    policy: Policy,
    results: list[ScanResult] | None = None,
) -> tuple[list[int], list[int], list[PickleIssue], bool]:
    """Scan what ``torch.load`` unpickles from a non-zip stream, before anything runs.

    That is one pickle, or the legacy (pre-1.6) ``torch.save`` layout: five pickles back to
    back (magic number, protocol, sys info, the object, storage keys), raw storages after.
    The first pickle decides which: it is read inertly once scanned clean.
    Returns the pickles' start and end offsets, their issues, and whether the data ended early;
    each pickle's :class:`ScanResult` is appended to ``results`` when given.
    """
    stream: BinaryIO = io.BytesIO(data) if isinstance(data, (bytes, memoryview)) else data
    first = scan(stream, label, policy)
    if results is not None:
        results.append(first)
    if first.truncated:
        return [], [], _found(first), True
    count = 1
    if not first.issues:
        try:
            stream.seek(0)
            magic = InertUnpickler(stream, policy, class_stubs=False).load()
        except Exception:  # a pickle the scanner follows may still fail to unpickle
            magic = None
        count = 5 if type(magic) is int and magic == LEGACY_MAGIC else 1
    starts, ends, issues = [0], [first.end], list(first.issues)
    for index in range(1, count):
        part = f"legacy pickle {index + 1} of 5 ({_LEGACY_PARTS[index]})"
        result = scan(stream, f"{label} {part}" if label != "pickle" else part, policy, ends[-1])
        if results is not None:
            results.append(result)
        if result.truncated:
            return starts, ends, issues + _found(result), True
        issues.extend(result.issues)
        starts.append(ends[-1])
        ends.append(result.end)
        if any(i.usage == "stream" for i in result.issues):
            break
    return starts, ends, issues, False


def _found(result: ScanResult) -> list[PickleIssue]:
    """A truncated pickle's issues without "it ends early" (the caller reports truncation)."""
    return [i for i in result.issues if i.usage != "stream"]


# ---------------------------------------------------------------------------------------------
# Inert loading
# ---------------------------------------------------------------------------------------------


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


_NUMPY_CODES = {
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
                self.dtype = _NUMPY_CODES.get(code.lstrip("<>|="), code)


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
    if name in _INERT_DICTS:
        return InertDict
    if name in _INERT_LISTS:
        return InertList
    if name in _INERT_STRS:
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


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 40, 40, 40


def brief(value: Any) -> str:
    """A short repr that stays short (and fast) for hostile values: huge ints, shared or
    deeply nested containers."""
    return _REPR.repr(value)


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
        if _extra_allows(self._policy, full):
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
            if len(self._classes) > _MAX_GLOBALS:
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


_NUMPY_DTYPE_CLASSES = {
    "float64": "Float64", "float32": "Float32", "float16": "Float16", "int64": "Int64",
    "int32": "Int32", "int16": "Int16", "int8": "Int8", "uint64": "UInt64", "uint32": "UInt32",
    "uint16": "UInt16", "uint8": "UInt8", "bool": "Bool", "complex64": "Complex64",
    "complex128": "Complex128",
}  # fmt: skip


def numpy_dtype_classes(obj: Any, limit: int = 1_000_000) -> set[str]:
    """The ``numpy.dtypes`` classes of the numpy dtypes an inertly loaded object rebuilds:
    torch's weights_only unpickler needs them (it checks the type of what BUILD sets state on),
    although the pickle never names them."""
    found: set[str] = set()
    stack, seen = [obj], set()
    while stack and len(seen) < limit:
        item = stack.pop()
        if isinstance(item, (str, bytes, int, float)) or item is None or id(item) in seen:
            continue
        seen.add(id(item))
        code = None
        if isinstance(item, NDArrayStub):
            code = item.dtype
        elif isinstance(item, _Record):
            if item.name == "numpy.dtype" and item.args and isinstance(item.args[0], str):
                code = item.args[0]
            stack.extend(item.args)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, Stub):
            stack.extend([item.attributes, item.args, item.items])
        if code is not None:
            name = _NUMPY_CODES.get(code.lstrip("<>|="), code)
            if name in _NUMPY_DTYPE_CLASSES:
                found.add(f"numpy.dtypes.{_NUMPY_DTYPE_CLASSES[name]}DType")
    return found


def is_pickle(head: bytes) -> bool:
    """A pickle with a protocol header (every pickle torch writes starts with one)."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
