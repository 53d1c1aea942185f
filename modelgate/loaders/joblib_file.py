"""joblib files (``joblib.dump``), raw or compressed, read the way ``joblib.load`` reads them.

A joblib file is a pickle that is not one: each numpy array is pickled as a wrapper object
(``joblib.numpy_pickle.NumpyArrayWrapper``: shape, dtype, order) and, right after the
``BUILD`` that fills the wrapper, the array's bytes are written into the stream (after a
padding byte and padding), or, for an array of Python objects, a whole pickle of its own.
``joblib.load`` runs pickle's pure-Python unpickler with a ``BUILD`` handler that reads those
bytes. A scanner that reads the stream as one pickle reads array bytes as opcodes; where the
next opcode starts depends on values (shape and dtype) only an unpickler computes.

So the file is followed here by the same machinery, pickle's pure-Python unpickler with the
same ``BUILD`` handler, but inert (:class:`~modelgate.loaders.inert.PyInertUnpickler`: every
global is a stand-in, nothing is imported), recording the opcode bytes it executes, frames
removed. That record is the pickle ``joblib.load`` runs, and it is what the scanner
(:func:`modelgate.loaders.pickle_scan.scan`) checks, with each object array's pickle checked
on its own. Array bytes are skipped, never read into memory.

joblib's compressed files (zlib, gzip, bz2, lzma, xz) are decompressed as a stream, bounded
(:data:`MAX_EXPANDED`); lz4 (an optional joblib dependency) is read where that package is
installed, as joblib reads it. The pre-0.10 ``ZF`` format is not read. joblib < 0.10 wrote
arrays to companion ``.npy`` files (``NDArrayWrapper``), which ``joblib.load`` reads with
``np.load(allow_pickle=True)``: they are read here as NumPy files, and one outside the
model's folder is a finding.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import re
import struct
import tempfile
import zlib
from typing import Any, BinaryIO, ClassVar

from modelgate.graph import ModelGraph, PickleIssue, TensorInfo
from modelgate.loaders.allowlist import JOBLIB_WRAPPERS, Policy, qualified
from modelgate.loaders.archive import MAX_SMALL_MEMBER
from modelgate.loaders.bounds import MAX_DIM, MAX_RANK, brief
from modelgate.loaders.errors import Unreadable
from modelgate.loaders.inert import (
    NUMPY_CODES,
    NDArrayStub,
    PyInertUnpickler,
    Stub,
    _Record,
)
from modelgate.loaders.pickle_scan import scan
from modelgate.loaders.pickle_stream import LEGACY_MAGIC
from modelgate.loaders.torch_pickle import infer_layers

MAX_EXPANDED = 8 * 1024**3  # bytes a compressed joblib file may expand to
_SPOOL = 64 * 1024 * 1024  # decompressed bytes kept in memory for the plain-pickle reading
LINEAR = "pickle (read as one pickle, as pickle.load reads it)"
_MAX_OBJECTS = 2_000_000
_CHUNK = 1 << 20
_PROBE = 16 * 1024 * 1024  # bytes searched for a wrapper's name when sniffing
_COMPAT = ("joblib.numpy_pickle.NDArrayWrapper", "joblib.numpy_pickle_compat.NDArrayWrapper")
_ZCOMPAT = ("joblib.numpy_pickle.ZNDArrayWrapper", "joblib.numpy_pickle_compat.ZNDArrayWrapper")
_CODE = re.compile(r"^([biufcOSUVMm])(\d*)$")


def names_wrapper(path: str) -> bool:
    """A pickle that names joblib's array wrappers in its first 16 MB. (One named later is
    still an unallowed class to the plain pickle reader: MG901, never a miss.)"""
    with open(path, "rb") as fh:
        head = fh.read(_PROBE)
    return b"ArrayWrapper" in head and b"joblib" in head


def compression(head: bytes) -> str | None:
    """The compressor joblib would pick for a file starting with ``head`` (its magic numbers,
    joblib.compressor), or None."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x5d\x00\x00"):
        return "lzma"
    if head.startswith(b"\x04\x22\x4d\x18"):  # an LZ4 frame (joblib's compress="lz4")
        return "lz4"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:
        return "zlib"
    return None


class _Bounded(io.RawIOBase):
    """A decompressed stream that refuses to expand past :data:`MAX_EXPANDED`; what it
    yields is copied to ``sink`` (for the plain-pickle reading of the same bytes)."""

    def __init__(self, source: Any, method: str, sink: BinaryIO) -> None:
        self._source = source
        self._method = method
        self._sink = sink
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        self.count += len(data)
        if self.count > MAX_EXPANDED:
            raise Unreadable(
                f"{self._method}-compressed joblib file expands past {MAX_EXPANDED:,} bytes "
                "(a decompression bomb?)"
            )
        buffer[: len(data)] = data
        room = MAX_SMALL_MEMBER - self._sink.tell()
        if room > 0:
            self._sink.write(data[:room])
        return len(data)


class _Zlib(io.RawIOBase):
    """joblib's zlib files: one zlib stream (joblib.compressor.BinaryZlibFile)."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._inflate = zlib.decompressobj()
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._buffer and not self._inflate.eof:
            data = self._inflate.unconsumed_tail or self._fh.read(_CHUNK)
            if not data:
                raise EOFError("zlib stream ends early (truncated)")
            self._buffer = self._inflate.decompress(data, _CHUNK)
        n = min(len(buffer), len(self._buffer))
        buffer[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def _open(fh: BinaryIO, method: str, sink: BinaryIO) -> Any:
    if method == "zlib":
        source: Any = _Zlib(fh)
    elif method == "gzip":
        source = gzip.GzipFile(fileobj=fh, mode="rb")
    elif method == "bz2":
        source = bz2.BZ2File(fh, "rb")
    elif method == "lz4":  # as joblib: only with the optional lz4 package, which reads it
        try:
            import lz4.frame
        except ImportError:
            raise Unreadable(
                "an LZ4-compressed file: reading it needs the lz4 package (pip install lz4), "
                "as joblib.load does"
            ) from None
        source = lz4.frame.LZ4FrameFile(fh, "rb")
    else:  # the decompressors wrap the caller's file, which the caller closes
        kind = lzma.FORMAT_XZ if method == "xz" else lzma.FORMAT_ALONE
        source = lzma.LZMAFile(fh, "rb", format=kind)  # noqa: SIM115
    return io.BufferedReader(_Bounded(source, method, sink), buffer_size=_CHUNK)


class _Unframer(pickle._Unframer):  # type: ignore[name-defined,misc]
    """pickle's frame reader, recording every opcode byte the unpickler executes."""

    def __init__(self, file_read: Any, file_readline: Any, record: bytearray) -> None:
        super().__init__(file_read, file_readline)
        self.record = record

    def read(self, n: int) -> bytes:
        if n > MAX_SMALL_MEMBER:  # a BINBYTES8 of 4 GB, from a small compressed file
            raise Unreadable(f"joblib pickle reads a value of {n:,} bytes")
        data = super().read(n)
        self._keep(data)
        return data

    def readline(self) -> bytes:
        data = super().readline()
        self._keep(data)
        return data

    def readinto(self, buf: Any) -> int:
        n = super().readinto(buf)
        self._keep(bytes(buf[:n]))
        return n

    def _keep(self, data: bytes) -> None:
        self.record += data
        if len(self.record) > MAX_SMALL_MEMBER:
            raise Unreadable(f"joblib pickle larger than {MAX_SMALL_MEMBER:,} bytes to scan")


class _Recorder(PyInertUnpickler):
    """The pure-Python unpickler ``joblib.load`` subclasses, inert, recording its opcodes."""

    def __init__(self, stream: BinaryIO, policy: Policy) -> None:
        super().__init__(stream, policy, class_stubs=True)
        self.raw = stream
        self.record = bytearray()

    def find_class(self, module: str, name: str) -> Any:
        full = qualified(module, name)
        if full in JOBLIB_WRAPPERS:
            return self._class(full, _Wrapper)
        return super().find_class(module, name)

    def load(self) -> Any:  # pickle._Unpickler.load, with the recording frame reader
        self._unframer = _Unframer(self._file_read, self._file_readline, self.record)
        self.read = self._unframer.read
        self.readinto = self._unframer.readinto
        self.readline = self._unframer.readline
        self.metastack: list[Any] = []
        self.stack: list[Any] = []
        self.append = self.stack.append
        self.proto = 0
        read, dispatch = self.read, self.dispatch
        try:
            while True:
                key = read(1)
                if not key:
                    raise EOFError
                dispatch[key[0]](self)
        except pickle._Stop as stop:  # type: ignore[attr-defined]
            return stop.value

    def load_frame(self) -> None:
        (size,) = struct.unpack("<Q", self.read(8))
        del self.record[-9:]  # FRAME and its length: framing is not what runs
        self._unframer.load_frame(size)

    dispatch: ClassVar[dict[int, Any]] = dict(PyInertUnpickler.dispatch)
    dispatch[pickle.FRAME[0]] = load_frame


class _Wrapper(Stub):
    """A joblib array wrapper: its attributes set as ``BUILD`` sets a plain object's."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Wrapper:
        self = super().__new__(cls, *args, **kwargs)
        self.state = {}
        return self

    def __setstate__(self, state: Any) -> None:
        slots = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
        for part in (state, slots):
            if part is None:
                continue
            if not isinstance(part, dict):
                raise pickle.UnpicklingError("joblib wrapper state is not a dict")
            self.state.update(part)


class _JoblibRecorder(_Recorder):
    """``joblib.numpy_pickle.NumpyUnpickler``: a ``BUILD`` on an array wrapper is followed by
    the array (skipped here) or an object array's own pickle (recorded on its own)."""

    def __init__(self, stream: BinaryIO, policy: Policy, folder: str) -> None:
        super().__init__(stream, policy)
        self.nested: list[bytes] = []  # object arrays' pickles
        self.companions: list[str] = []  # joblib < 0.10: arrays in .npy files beside it
        self.folder = folder

    def load_build(self) -> None:
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
        top = self.stack[-1]
        if isinstance(top, _Wrapper):
            self.stack.pop()
            self.append(self._array(top))

    dispatch: ClassVar[dict[int, Any]] = dict(_Recorder.dispatch)
    dispatch[pickle.BUILD[0]] = load_build

    def _array(self, wrapper: _Wrapper) -> Any:
        attrs = wrapper.state
        if wrapper.qualname in _COMPAT or wrapper.qualname in _ZCOMPAT:
            filename = attrs.get("filename")
            if not isinstance(filename, str):
                raise pickle.UnpicklingError("NDArrayWrapper without a file name")
            self.companions.append(filename)
            return NDArrayStub()
        shape = attrs.get("shape")
        if not isinstance(shape, tuple) or len(shape) > MAX_RANK:
            raise pickle.UnpicklingError(f"array wrapper shape {brief(shape)}")
        count = 1
        for d in shape:
            if type(d) not in (int, bool) or not 0 <= d < MAX_DIM:
                raise pickle.UnpicklingError(f"array wrapper shape {brief(shape)}")
            count *= int(d)
        if count >= 2**63:
            raise pickle.UnpicklingError(f"array wrapper shape {brief(shape)} overflows")
        hasobject, itemsize, name = _dtype(attrs.get("dtype"))
        if hasobject:  # a fresh pickle._Unpickler on the raw file, as joblib does
            nested = _Recorder(self.raw, self._policy)
            nested._classes = self._classes
            nested.load()
            self.nested.append(bytes(nested.record))
            return NDArrayStub(tuple(int(d) for d in shape), "object")
        if attrs.get("numpy_array_alignment_bytes") is not None:
            pad = self.raw.read(1)
            if len(pad) < 1:
                raise EOFError("joblib array padding ends early")
            _skip(self.raw, pad[0])
        _skip(self.raw, count * itemsize)
        return NDArrayStub(tuple(int(d) for d in shape), name)


def _skip(fh: BinaryIO, n: int) -> None:
    """Pass over ``n`` bytes of array data (read and dropped: the stream may be compressed)."""
    while n > 0:
        chunk = fh.read(min(n, _CHUNK))
        if not chunk:
            raise EOFError("joblib array data ends early (truncated)")
        n -= len(chunk)


def _dtype(value: Any) -> tuple[bool, int, str]:
    """(holds objects, item size, name) of a pickled ``numpy.dtype(code, align, copy)``: the
    size as numpy computes it (from the code for fixed-size kinds, from the pickled element
    size for strings and void). Anything else: the stream cannot be followed."""
    if not (isinstance(value, _Record) and value.name.endswith("numpy.dtype") and value.args):
        raise pickle.UnpicklingError(f"array wrapper dtype {brief(value)}")
    code = value.args[0]
    match = _CODE.match(code) if isinstance(code, str) else None
    if match is None:
        raise pickle.UnpicklingError(f"array wrapper dtype code {brief(code)}")
    kind, digits = match.group(1), match.group(2)
    state = value.state if isinstance(value.state, tuple) else ()
    if kind == "O":
        return True, 8, "object"
    if kind in "SUV":
        if len(state) > 4 and (state[3] is not None or state[4] is not None):
            raise pickle.UnpicklingError("array wrapper with a structured dtype")
        size = state[5] if len(state) > 5 else None
        if type(size) is not int or size < 0:
            size = int(digits) * (4 if kind == "U" else 1) if digits else None
        if size is None:
            raise pickle.UnpicklingError(f"array wrapper dtype {code!r} without a size")
        return False, size, "string"
    if kind in "Mm":
        return False, 8, "int64"
    if not digits:
        raise pickle.UnpicklingError(f"array wrapper dtype code {code!r}")
    size = int(digits)
    return False, size, NUMPY_CODES.get(code, code)


def load(fh: BinaryIO, graph: ModelGraph, policy: Policy, not_joblib: str | None = None) -> bool:
    """Read a joblib file; False when it is a legacy torch.save file after all (its first
    pickle is torch's magic number: the caller reads it as one). ``not_joblib`` is the
    refusal when a compressed file turns out not to hold a pickle (a gzip of something else
    stays unreadable)."""
    fh.seek(0)
    method = compression(fh.read(8))
    fh.seek(0)
    if method is None and _legacy_torch(fh, policy):
        return False
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL) as plain:
        stream: BinaryIO = _open(fh, method, plain) if method else fh
        if method:
            try:
                head = stream.peek(2)[:2]  # type: ignore[attr-defined]
            except Unreadable:
                raise
            except Exception:  # not what the magic number said: a broken or foreign stream
                head = b""
            if len(head) < 2 or head[0] != 0x80:
                raise Unreadable(not_joblib or f"{method} file that holds no pickle")
        _read(stream, plain if method else fh, method, graph, policy)
    return True


def _legacy_torch(fh: BinaryIO, policy: Policy) -> bool:
    try:  # pure Python: its memo is a dict (the C one allocates what LONG_BINPUT names)
        first = PyInertUnpickler(fh, policy, class_stubs=True).load()
    except Exception:
        return False
    finally:
        fh.seek(0)
    return type(first) is int and first == LEGACY_MAGIC


def _read(
    stream: BinaryIO, plain: BinaryIO, method: str | None, graph: ModelGraph, policy: Policy
) -> None:
    graph.format = "joblib"
    graph.metadata["compression"] = method or "none"
    jpolicy = Policy(extra=policy.extra, torchscript=False, joblib=True)
    folder = os.path.dirname(os.path.abspath(graph.path))
    reader = _JoblibRecorder(stream, jpolicy, folder)
    failure: str | None = None
    obj = None
    try:
        obj = reader.load()
    except Unreadable as exc:
        failure = exc.reason
    except RecursionError:
        failure = "the pickle nests too deeply"
    except Exception as exc:  # a hostile stream: whatever it raises, joblib.load fails too
        failure = f"{type(exc).__name__}: {str(exc)[:160]}"
    label = "pickle"
    result = scan(bytes(reader.record), label, jpolicy)
    issues = [i for i in result.issues if failure is None or i.usage != "stream"]
    for index, nested in enumerate(reader.nested):
        where = f"{label} (object array {index + 1})"
        issues.extend(scan(nested, where, jpolicy).issues)
    issues.extend(_as_one_pickle(plain, issues, jpolicy))
    graph.pickle_issues.extend(issues)
    for filename in reader.companions:
        _companion(filename, folder, graph, policy)
    if failure is not None:
        raise Unreadable(f"joblib stream cannot be read ({failure})", member=label)
    if any(i.usage != "class" for i in issues):
        graph.notes.append("the joblib pickle was not read: it is unsafe")
        return
    _arrays(obj, graph)
    if reader.nested:
        graph.notes.append(
            f"{len(reader.nested)} object array{'s' if len(reader.nested) != 1 else ''}, "
            "each a pickle of its own: scanned"
        )


def _as_one_pickle(plain: BinaryIO, found: list[PickleIssue], policy: Policy) -> list[PickleIssue]:
    """The same bytes read as one pickle (``pickle.load``, or ``torch.load``'s first pickle,
    on a joblib file): array bytes become opcodes. For a real joblib file that reading breaks
    off at the first array; the globals it meets before, it would import. Only those count
    (the break itself is how every joblib file reads)."""
    size = plain.seek(0, io.SEEK_END)
    plain.seek(0)
    result = scan(plain, LINEAR, policy)
    seen = {(i.global_name, i.usage) for i in found}
    issues = [
        i for i in result.issues if i.usage != "stream" and (i.global_name, i.usage) not in seen
    ]
    if result.truncated and size >= MAX_SMALL_MEMBER:  # kept only so much of the stream
        issues.append(
            PickleIssue(
                LINEAR,
                None,
                f"cannot follow the pickle: it reads on past the {MAX_SMALL_MEMBER:,} bytes "
                "kept of the decompressed stream",
                "stream",
            )
        )
    return issues


def _companion(filename: str, folder: str, graph: ModelGraph, policy: Policy) -> None:
    """joblib < 0.10: ``np.load(<folder>/<filename>, allow_pickle=True)``."""
    from modelgate.loaders import numpy_file

    target = os.path.normpath(os.path.join(folder, filename))
    if os.path.isabs(filename) or not target.startswith(folder + os.sep):
        graph.pickle_issues.append(
            PickleIssue(
                "pickle",
                "joblib.numpy_pickle_compat.NDArrayWrapper",
                f"loads {brief(filename)}, a file outside the model's folder, with "
                "np.load(allow_pickle=True)",
                "call",
            )
        )
        return
    if not os.path.isfile(target):
        raise Unreadable(
            f"joblib file refers to companion array file {filename!r}, which is missing"
        )
    sub = ModelGraph(target)
    with open(target, "rb") as fh:
        if numpy_file.sniff(fh.read(8)):
            numpy_file.load(fh, os.path.getsize(target), sub, policy)
        else:
            raise Unreadable(f"joblib companion file {filename!r} is not a .npy array")
    for issue in sub.pickle_issues:
        graph.pickle_issues.append(
            PickleIssue(f"{filename}: {issue.member}", issue.global_name, issue.detail, issue.usage)
        )
    for name, info in sub.tensors.items():
        key = f"{filename}:{name}"
        graph.tensors[key] = TensorInfo(key, info.shape, info.dtype)


def _arrays(obj: Any, graph: ModelGraph) -> None:
    """The numeric arrays the object holds, named by where they sit."""
    stack: list[tuple[str, Any]] = [("", obj)]
    seen: set[int] = set()
    while stack:
        path, item = stack.pop()
        if len(seen) > _MAX_OBJECTS:
            raise Unreadable(f"joblib pickle holds more than {_MAX_OBJECTS:,} objects")
        if isinstance(item, NDArrayStub):
            if item.dtype not in ("object", "string"):
                name = path or "array"
                graph.tensors[name] = TensorInfo(name, tuple(item.shape), item.dtype)
            continue
        if isinstance(item, (str, bytes, int, float)) or item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            children = list(item.items())
        elif isinstance(item, (list, tuple)):
            children = list(enumerate(item))
        elif isinstance(item, Stub):
            children = list(item.attributes.items())
        else:
            children = []
        for key, child in reversed(children):
            stack.append((f"{path}.{key}" if path else str(key), child))
    graph.tensors = dict(sorted(graph.tensors.items()))
    infer_layers(graph)
    if not graph.tensors:
        graph.notes.append("the joblib file holds no numeric arrays: nothing for model rules")
