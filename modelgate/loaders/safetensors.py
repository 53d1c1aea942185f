"""safetensors: an 8-byte header length, a JSON header, then the tensor bytes.

Only the header is read. It is validated the way the reference implementation does (every
tensor's byte range matches its shape and dtype, ranges neither overlap nor leave holes, no key
repeats), since a header that lies about the data is how a reader gets tricked.
"""

from __future__ import annotations

import json
import math
from typing import Any, BinaryIO

from modelgate.graph import ModelGraph, TensorInfo
from modelgate.loaders.bounds import MAX_DIM, MAX_RANK, brief
from modelgate.loaders.errors import Unreadable
from modelgate.loaders.torch_pickle import infer_layers

MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit

DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F4": "float4_e2m1fn_x2",
    "C64": "complex64",
}
_BITS = {
    "F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "I16": 16, "I8": 8,
    "U64": 64, "U32": 32, "U16": 16, "U8": 8, "BOOL": 8, "F8_E4M3": 8, "F8_E5M2": 8,
    "F8_E8M0": 8, "F4": 4, "C64": 64,
}  # fmt: skip


def sniff(head: bytes, file_size: int) -> bool:
    """True when the first bytes look like a safetensors header."""
    if len(head) < 10 or file_size < 10:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= MAX_HEADER and head[8:9] == b"{"  # a header past the end: truncated


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise Unreadable(f"safetensors header repeats tensor {key!r}")
        out[key] = value
    return out


def load(fh: BinaryIO, file_size: int, graph: ModelGraph) -> None:
    fh.seek(0)
    raw = fh.read(8)
    n = int.from_bytes(raw, "little")
    if n > MAX_HEADER:
        raise Unreadable(f"safetensors header claims {n:,} bytes (limit {MAX_HEADER:,})")
    if 8 + n > file_size:
        raise Unreadable(f"safetensors header claims {n:,} bytes but the file is {file_size:,}")
    text = fh.read(n)
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: JSON, big ints
        raise Unreadable(f"safetensors header is not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(header, dict):
        raise Unreadable("safetensors header is not a JSON object")
    graph.format = "safetensors"
    data_size = file_size - 8 - n
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise Unreadable("safetensors __metadata__ is not a map of strings to strings")
    if isinstance(metadata, dict):
        graph.metadata["safetensors"] = {
            str(k): str(v)[:200] for k, v in list(metadata.items())[:50]
        }
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise Unreadable(f"safetensors entry {name!r} is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in DTYPES:
            raise Unreadable(f"safetensors tensor {name!r} has unknown dtype {brief(dtype)}")
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_RANK
            or not all(type(d) is int and 0 <= d < MAX_DIM for d in shape)
            or math.prod(shape) >= MAX_DIM
        ):
            raise Unreadable(f"safetensors tensor {name!r} has an invalid shape {brief(shape)}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int and 0 <= o < MAX_DIM for o in offsets)
        ):
            raise Unreadable(
                f"safetensors tensor {name!r} has invalid data_offsets {brief(offsets)}"
            )
        begin, end = offsets
        bits = math.prod(shape) * _BITS[dtype]
        need = (bits + 7) // 8
        if begin < 0 or end < begin or end - begin != need:
            raise Unreadable(
                f"safetensors tensor {name!r}: offsets {begin}..{end} do not hold "
                f"{dtype}{shape} ({need:,} bytes)"
            )
        if end > data_size:
            raise Unreadable(
                f"safetensors tensor {name!r} ends at byte {end:,} of a {data_size:,}-byte "
                "data section (truncated?)"
            )
        spans.append((begin, end, name))
        graph.tensors[name] = TensorInfo(name, tuple(shape), DTYPES[dtype])
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin < cursor:
            raise Unreadable(f"safetensors tensor {name!r} overlaps the tensor before it")
        if begin > cursor:
            raise Unreadable(f"safetensors data has a hole before tensor {name!r}")
        cursor = end
    if cursor != data_size:
        raise Unreadable(
            f"safetensors data section is {data_size:,} bytes but tensors cover {cursor:,}"
        )
    infer_layers(graph)
    for name, info in graph.tensors.items():
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            info.kind = "buffer"
