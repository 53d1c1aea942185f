"""NumPy ``.npy`` and ``.npz`` files: numeric arrays are weights, object arrays are pickles.

A ``.npy`` file is ``\\x93NUMPY``, a version (1.0, 2.0 or 3.0), the header's length (2 bytes
in 1.0, 4 after) and the header: a Python literal dict with exactly ``descr``,
``fortran_order`` and ``shape``, read here with :func:`ast.literal_eval` under a size bound
(numpy's own reader does the same). The array's bytes follow; for an array whose dtype holds
Python objects they are a pickle instead, which ``np.load(allow_pickle=True)`` runs: it is
scanned like every other pickle, never unpickled. A ``.npz`` file is a zip of ``.npy`` members
(``np.savez`` / ``np.savez_compressed``): each member's header is read, and object members
are decompressed (bounded) and scanned. No array bytes are read.

The dtype is worked out with numpy's own ``descr_to_dtype`` when numpy is importable (it is
not needed: the descriptors numpy writes are parsed here too).
"""

from __future__ import annotations

import ast
import math
import re
import struct
import zipfile
from dataclasses import dataclass
from typing import Any, BinaryIO

from modelgate.graph import ModelGraph, PickleIssue, TensorInfo
from modelgate.loaders.allowlist import Policy
from modelgate.loaders.archive import (
    MAX_MEMBERS,
    MAX_SMALL_MEMBER,
    Archive,
    head,
    read_member,
)
from modelgate.loaders.bounds import MAX_DIM, MAX_RANK, brief
from modelgate.loaders.errors import Unreadable
from modelgate.loaders.pickle_scan import scan
from modelgate.loaders.torch_pickle import infer_layers

MAGIC = b"\x93NUMPY"
MAX_HEADER = 1024 * 1024  # numpy's default is 10,000 characters, lifted for trusted files
_VERSIONS = {1: ("<H", "latin1"), 2: ("<I", "latin1"), 3: ("<I", "utf8")}
_KEYS = {"descr", "fortran_order", "shape"}
# the type strings numpy writes in a descr: byte order, kind, size, datetime unit
_TYPESTR = re.compile(r"^[<>|=]?([biufcOSUVMm?])(\d*)(\[\w+\])?$")
_NUMERIC = {"i": "int", "u": "uint", "f": "float", "c": "complex"}  # and "b", bool


@dataclass
class Header:
    """What a ``.npy`` header declares, and where its data starts."""

    descr: Any
    shape: tuple[int, ...]
    fortran: bool
    data_offset: int
    hasobject: bool
    dtype: str  # torch-style name ("float32") for numeric arrays, else numpy's ("<U10")
    itemsize: int | None  # None: not a fixed-size number (string, structured, object)


def sniff(head: bytes) -> bool:
    return head.startswith(MAGIC)


def read_header(fh: BinaryIO, where: str) -> Header:
    """Parse the header at the stream's position (read forward only: a zip member works)."""
    start = fh.read(8)
    if len(start) < 8 or not start.startswith(MAGIC):
        raise Unreadable(f"{where}: not a .npy array (no \\x93NUMPY magic)", member=where)
    major, minor = start[6], start[7]
    if major not in _VERSIONS or minor != 0:
        raise Unreadable(f"{where}: .npy format version {major}.{minor}, which numpy cannot read")
    length_format, encoding = _VERSIONS[major]
    raw = fh.read(struct.calcsize(length_format))
    if len(raw) < struct.calcsize(length_format):
        raise Unreadable(f"{where}: .npy file ends inside its header (truncated)", member=where)
    (length,) = struct.unpack(length_format, raw)
    if length > MAX_HEADER:
        raise Unreadable(f"{where}: .npy header of {length:,} bytes (limit {MAX_HEADER:,})")
    text = fh.read(length)
    if len(text) < length:
        raise Unreadable(f"{where}: .npy file ends inside its header (truncated)", member=where)
    fields = _literal(text.decode(encoding, "replace"), major, where)
    shape, fortran, descr = fields["shape"], fields["fortran_order"], fields["descr"]
    if not isinstance(shape, tuple) or not all(isinstance(d, int) for d in shape):
        raise Unreadable(f"{where}: .npy shape {brief(shape)} is not a tuple of ints")
    if not isinstance(fortran, bool):
        raise Unreadable(f"{where}: .npy fortran_order {brief(fortran)} is not a bool")
    hasobject, dtype, itemsize = _dtype(descr, where)
    return Header(descr, shape, fortran, len(start) + len(raw) + length, hasobject, dtype, itemsize)


def _literal(text: str, major: int, where: str) -> dict[str, Any]:
    try:
        value = ast.literal_eval(text)
    except SyntaxError:
        if major > 2:
            raise Unreadable(f"{where}: .npy header is not a Python literal") from None
        try:  # written by Python 2: longs end in L (numpy filters them the same way)
            value = ast.literal_eval(re.sub(r"(?<=\d)L\b", "", text))
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            raise Unreadable(f"{where}: .npy header is not a Python literal") from None
    except (ValueError, MemoryError, RecursionError, TypeError):
        raise Unreadable(f"{where}: .npy header is not a Python literal") from None
    if not isinstance(value, dict) or set(value) != _KEYS:
        raise Unreadable(
            f"{where}: .npy header is not a dict of descr, fortran_order and shape", member=where
        )
    return value


def _dtype(descr: Any, where: str) -> tuple[bool, str, int | None]:
    """(holds Python objects, dtype name, item size) of a descr, by numpy when importable."""
    try:
        from numpy.lib.format import descr_to_dtype
    except ImportError:
        return _parse_descr(descr, where)
    try:
        dt = descr_to_dtype(descr)
    except Exception as exc:  # numpy refuses it too: np.load fails before any pickle
        raise Unreadable(f"{where}: .npy dtype {brief(descr)} is invalid ({exc})") from None
    if dt.hasobject:
        return True, "object", None
    if dt.names is not None or dt.subdtype is not None:
        return False, "structured", None
    if dt.kind == "b":
        return False, "bool", 1
    if dt.kind in _NUMERIC:
        return False, f"{_NUMERIC[dt.kind]}{dt.itemsize * 8}", dt.itemsize
    return False, dt.str, None


def _parse_descr(descr: Any, where: str) -> tuple[bool, str, int | None]:
    """The descriptors numpy writes, without numpy: a type string, or a list of fields."""
    if isinstance(descr, str):
        match = _TYPESTR.match(descr)
        if match is None:
            raise Unreadable(
                f"{where}: .npy dtype {brief(descr)}: modelgate reads it only with numpy "
                "installed (pip install numpy)"
            )
        kind, size = match.group(1), match.group(2)
        if kind == "O":
            return True, "object", None
        if kind == "?" or (kind == "b" and size == "1"):  # "|b1" is bool, "|i1" int8
            return False, "bool", 1
        if kind in _NUMERIC and size:
            return False, f"{_NUMERIC[kind]}{int(size) * 8}", int(size)
        return False, descr, None
    if isinstance(descr, list) and descr:  # structured: [(name, descr[, shape]), ...]
        hasobject = False
        for field in descr:
            if not isinstance(field, tuple) or len(field) not in (2, 3):
                raise Unreadable(f"{where}: .npy structured dtype field {brief(field)}")
            hasobject = _parse_descr(field[1], where)[0] or hasobject
        return hasobject, "structured", None
    raise Unreadable(
        f"{where}: .npy dtype {brief(descr)}: modelgate reads it only with numpy installed"
    )


def _numel(header: Header, where: str) -> int:
    shape = header.shape
    if len(shape) > MAX_RANK or any(d < 0 for d in shape) or math.prod(shape) >= MAX_DIM:
        raise Unreadable(f"{where}: .npy shape {brief(shape)} is not a valid array shape")
    return math.prod(shape)


def load(fh: BinaryIO, size: int, graph: ModelGraph, policy: Policy) -> None:
    """A ``.npy`` file: one array."""
    graph.format = "numpy"
    fh.seek(0)
    header = read_header(fh, "array")
    if header.hasobject:
        if size - header.data_offset > MAX_SMALL_MEMBER:
            graph.pickle_issues.append(
                PickleIssue("object array", None, "object array too large to scan", "stream")
            )
            return
        fh.seek(header.data_offset)
        _object_array(fh.read(), "object array", graph, policy)
        return
    _numeric(header, size - header.data_offset, "array", "array", graph)
    infer_layers(graph)


def is_npz(archive: Archive) -> bool:
    """``np.savez``'s layout: every member of the zip is a ``.npy`` array, by its name or by
    its magic number (``np.load`` reads a member as an array by its first bytes, whatever its
    name; a zip with any other member is no npz here)."""
    names = [n for n in archive.infos if not n.endswith("/")]
    return bool(names) and all(
        n.endswith(".npy") or head(archive, n, len(MAGIC)) == MAGIC for n in names
    )


def open_npz(path: str) -> Archive | None:
    """The file as ``np.load`` opens it (Python's zipfile, no check that guards torch's own
    zip reader), when every member is a ``.npy``; else None."""
    try:
        zf = zipfile.ZipFile(path)
        infos = zf.infolist()
    except Exception:
        return None
    if len(infos) > MAX_MEMBERS:
        zf.close()
        raise Unreadable(f"zip archive with {len(infos):,} members (more than {MAX_MEMBERS:,})")
    archive = Archive(zf, "", {i.filename: i for i in infos})  # the last of a name, as zipfile
    if not is_npz(archive):
        zf.close()
        return None
    return archive


def load_npz(archive: Archive, graph: ModelGraph, policy: Policy) -> None:
    """A ``.npz`` file: named arrays, compressed or not."""
    graph.format = "numpy"
    graph.metadata["layout"] = "npz"
    for name, info in archive.infos.items():
        if name.endswith("/"):
            continue
        where = archive.where(name)
        try:
            with archive.zf.open(info) as fh:
                header = read_header(fh, where)
        except Unreadable:
            raise
        except Exception as exc:  # zlib, bz2, lzma, CRC: each raises its own
            raise Unreadable(f"cannot read member {name!r}: {exc}", member=where) from None
        if header.hasobject:
            if info.file_size > MAX_SMALL_MEMBER:
                graph.pickle_issues.append(
                    PickleIssue(where, None, "object array too large to scan", "stream")
                )
                continue
            data = read_member(archive, name)
            _object_array(data[header.data_offset :], where, graph, policy)
            continue
        key = name.removesuffix(".npy")
        _numeric(header, info.file_size - header.data_offset, key, where, graph)
    infer_layers(graph)


def _numeric(header: Header, available: int, name: str, where: str, graph: ModelGraph) -> None:
    numel = _numel(header, where)
    if header.itemsize is None:  # strings, dates, records: data, not weights
        graph.notes.append(
            f"{where}: an array of dtype {header.dtype} {header.shape}, not numbers: "
            "not counted as weights"
        )
        return
    need = numel * header.itemsize
    if available < need:
        raise Unreadable(
            f"{where}: .npy array {header.dtype}{header.shape} needs {need:,} bytes of data, "
            f"the file holds {max(available, 0):,} (truncated)",
            member=where,
        )
    graph.tensors[name] = TensorInfo(name, tuple(header.shape), header.dtype)


def _object_array(data: bytes, where: str, graph: ModelGraph, policy: Policy) -> None:
    """An object array: the pickle ``np.load(allow_pickle=True)`` would run, scanned."""
    result = scan(data, where, policy)
    graph.pickle_issues.extend(result.issues)
    graph.notes.append(
        f"{where}: an object array, stored as a pickle: np.load needs allow_pickle=True, "
        "which runs it; modelgate scanned it"
        + ("" if result.issues else " and found nothing unsafe")
    )
