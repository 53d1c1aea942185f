"""Synthetic values for an ONNX file's inputs, made from the file's own types.

An ONNX file says more about its inputs than a shape: string tensors, sequences of tensors,
optionals of either. ONNX Runtime's Python API takes a numpy array for a tensor (an object
array for strings), a list of arrays for a sequence, and the element (or nothing) for an
optional; this makes one such value per input, seeded, or says why it cannot. Runs in a
step's child process (numpy and onnx only).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_INT_HIGH = 10  # as modelgate.checks.measure: integers (indices, ids) are drawn from [0, 10)
_WORDS = ("monday", "model", "gate", "a", "b")

# TensorProto.DataType -> numpy dtype ONNX Runtime accepts; others cannot be fed from numpy
_NUMPY = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
}  # fmt: skip


class NoValue(Exception):
    """No synthetic value can be made for an input; the message says which and why."""


def describe(type_proto: Any) -> str:
    """ONNX Runtime's spelling of a type: tensor(float), seq(tensor(string)), ..."""
    import onnx

    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        name = onnx.helper.tensor_dtype_to_string(type_proto.tensor_type.elem_type)
        return f"tensor({name.removeprefix('TensorProto.').lower()})"
    if kind == "sequence_type":
        return f"seq({describe(type_proto.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({describe(type_proto.optional_type.elem_type)})"
    if kind == "map_type":
        key = onnx.helper.tensor_dtype_to_string(type_proto.map_type.key_type)
        value = describe(type_proto.map_type.value_type)
        return f"map({key.removeprefix('TensorProto.').lower()}, {value})"
    return kind or "no type"


# Integer inputs are often indices, axes, pads or divisors: random ones in [0, 10) first (as
# token ids are drawn for torch models), then all ones, then all zeros, until one set runs.
INTEGER_FILLS: tuple[int | None, ...] = (None, 1, 0)


def feed(
    path: str,
    names: list[str],
    given: dict[str, tuple[tuple[int, ...], str]],
    seed: int,
    integers: int | None = None,
) -> dict[str, Any]:
    """One value per input in ``names`` (what the session asks for), shapes from ``given``
    (the user's or the parent's) where known, else from the file; integer tensors random
    (``integers`` None) or filled with ``integers``. Raises :class:`NoValue`."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    types = {value.name: value.type for value in model.graph.input}
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        if name not in types:
            raise NoValue(f"input {name!r} has no type in the file")
        try:
            out[name] = _value(types[name], rng, given.get(name, (None, ""))[0], integers)
        except NoValue as exc:
            raise NoValue(f"input {name!r} ({describe(types[name])}): {exc}") from None
    return out


def has_integers(value: Any) -> bool:
    """Whether a fed value holds an integer tensor (so another fill may be tried)."""
    if isinstance(value, list):
        return any(has_integers(v) for v in value)
    if isinstance(value, dict):
        return False
    return value.dtype.kind in "iu"


def _value(
    type_proto: Any, rng: np.random.Generator, shape: tuple[int, ...] | None, fill: int | None
) -> Any:
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type":
        return _tensor(type_proto.tensor_type, rng, shape, fill)
    if kind == "sequence_type":
        return [_value(type_proto.sequence_type.elem_type, rng, shape, fill)]
    if kind == "optional_type":
        return _value(type_proto.optional_type.elem_type, rng, shape, fill)
    if kind == "map_type":  # ONNX Runtime takes a dict of Python scalars (ai.onnx.ml)
        key = {7: 0, 8: "a"}.get(type_proto.map_type.key_type)
        value = _value(type_proto.map_type.value_type, rng, (), fill)
        if key is None or isinstance(value, list) or getattr(value, "ndim", 1) != 0:
            raise NoValue("modelgate makes synthetic maps of int64 or string keys to scalars only")
        return {key: value.item()}
    what = (kind or "untyped").removesuffix("_type").replace("_", " ")
    raise NoValue(f"modelgate makes no synthetic {what} values")


def _tensor(
    tensor_type: Any, rng: np.random.Generator, shape: tuple[int, ...] | None, fill: int | None
) -> Any:
    elem = tensor_type.elem_type
    if shape is None:
        if not tensor_type.HasField("shape"):
            raise NoValue("its rank is unknown")
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else 1 for d in tensor_type.shape.dim
        )  # symbolic and unknown dimensions: 1
    if elem == 8:  # string
        return rng.choice(np.array(_WORDS, dtype=object), size=shape)
    dtype = _NUMPY.get(elem)
    if dtype is None:
        raise NoValue("ONNX Runtime's Python API takes no numpy array of this element type")
    if dtype.startswith("float"):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if fill is not None:
        return np.full(shape, fill, dtype=dtype)
    return rng.integers(0, _INT_HIGH, shape).astype(dtype)
