"""What ``torch.load(weights_only=True)`` accepts, to predict where it refuses a checkpoint.

modelgate's own allow-list (:mod:`modelgate.loaders.allowlist`) decides what modelgate reads;
torch's safe unpickler decides what ``torch.load`` loads by default, and the two differ (inert
training values, numpy arrays). Rule MG904 names the globals a checkpoint needs added with
``torch.serialization.add_safe_globals``; this module says which those are.
"""

from __future__ import annotations

from typing import Any

from modelgate.loaders.allowlist import QSCHEMES, STORAGE_DTYPES, TENSOR_REBUILDERS, TORCH_DTYPES
from modelgate.loaders.inert import NUMPY_CODES, NDArrayStub, Stub, _Record

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
# The opcodes torch's weights_only unpickler reads (torch 2.13's _weights_only_unpickler.load;
# a test compares the two): protocol 2's, without the text opcodes of protocols 0 and 1 or
# FRAME, ADDITEMS, FROZENSET, MEMOIZE and STACK_GLOBAL of protocol 4. Anything else is
# "Unsupported operand", whatever add_safe_globals allows.
WEIGHTS_ONLY_OPCODES = frozenset(
    {
        "GLOBAL", "NEWOBJ", "REDUCE", "BUILD", "APPEND", "APPENDS", "SETITEM", "SETITEMS",
        "MARK", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "NONE", "NEWFALSE", "NEWTRUE",
        "EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "BININT", "BININT1", "BININT2",
        "BINFLOAT", "BINUNICODE", "SHORT_BINSTRING", "BINPERSID", "BINGET", "LONG_BINGET",
        "BINPUT", "LONG_BINPUT", "LONG1", "PROTO", "STOP",
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


NUMPY_DTYPE_CLASSES = {
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
            name = NUMPY_CODES.get(code.lstrip("<>|="), code)
            if name in NUMPY_DTYPE_CLASSES:
                found.add(f"numpy.dtypes.{NUMPY_DTYPE_CLASSES[name]}DType")
    return found
