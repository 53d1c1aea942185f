"""The legacy ``.tar`` torch.save format (torch < 0.4), read as ``torch.load`` reads it.

``torch.serialization._legacy_load`` opens the file as a tar and reads three members by name
(the last member of that name, as ``tarfile`` picks): ``storages`` (a pickled count, then per
storage a pickled ``(key, location, storage type)`` and the raw storage: an 8-byte element
count and the bytes; then a pickled list of storage views), ``tensors`` (a pickled count, then
per tensor a pickled ``(key, storage key, tensor type)`` and its sizes, strides and offset as
binary), and ``pickle``, the object, whose persistent ids name those tensors and storages.
Every pickle of the three is scanned, each on its own; the raw parts between them are skipped
by the sizes the pickles declare, exactly as torch skips them. ``sys_info`` is never loaded.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from typing import Any, BinaryIO

from modelgate.graph import ITEMSIZE, ModelGraph
from modelgate.loaders.allowlist import Policy
from modelgate.loaders.bounds import MAX_DIM, MAX_RANK, brief
from modelgate.loaders.errors import Unreadable
from modelgate.loaders.inert import PyInertUnpickler, StorageRef, TensorStub, _DType
from modelgate.loaders.pickle_scan import scan
from modelgate.loaders.torch_pickle import interpret

MEMBERS = ("storages", "tensors", "pickle")
MAX_TAR_MEMBERS = 10_000
MAX_ENTRIES = 1_000_000  # storages or tensors one file may declare
MAX_PICKLE = 256 * 1024 * 1024


def sniff(head: bytes) -> bool:
    return len(head) >= 262 and head[257:262] == b"ustar"


class _Reader(PyInertUnpickler):
    """The object pickle: persistent ids are tensor or storage keys, or a module class's
    ``(class, source file, source)``."""

    def __init__(self, stream: BinaryIO, policy: Policy, objects: dict[str, Any]) -> None:
        super().__init__(stream, policy, class_stubs=True)
        self._objects = objects

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and pid:
            return pid[0]
        if isinstance(pid, (str, int)) and not isinstance(pid, bool) and str(pid) in self._objects:
            return self._objects[str(pid)]
        raise pickle.UnpicklingError(f"persistent id {brief(pid)} names no tensor or storage")


class _Stream:
    """One member's pickles, each read inertly (to learn what comes next) and its bytes kept
    for the scanner."""

    def __init__(self, fh: BinaryIO, size: int, name: str, policy: Policy) -> None:
        self.fh, self.size, self.name, self.policy = fh, size, name, policy
        self.pickles: list[tuple[str, bytes]] = []

    def load(self, what: str, reader: Any = None) -> Any:
        start = self.fh.tell()
        # pure Python, before the scan: its memo is a dict, where the C unpickler allocates
        # whatever LONG_BINPUT names; it reads exactly up to STOP, as torch's does
        unpickler = reader(self.fh) if reader else PyInertUnpickler(self.fh, self.policy, True)
        try:
            value = unpickler.load()
        except Exception as exc:
            self._keep(what, start, self.size)
            raise _Broken(f"{self.name}: cannot unpickle the {what} ({str(exc)[:120]})") from None
        end = self.fh.tell()
        self._keep(what, start, end)
        self.fh.seek(end)
        return value

    def _keep(self, what: str, start: int, end: int) -> None:
        if end - start > MAX_PICKLE:
            raise Unreadable(f"{self.name}: a pickle of more than {MAX_PICKLE:,} bytes")
        self.fh.seek(start)
        self.pickles.append((f"{self.name} ({what})", self.fh.read(end - start)))

    def read(self, n: int, what: str) -> bytes:
        data = self.fh.read(n)
        if len(data) < n:
            raise _Broken(f"{self.name} ends inside {what} (truncated)")
        return data

    def skip(self, n: int, what: str) -> None:
        if self.fh.tell() + n > self.size:
            raise _Broken(f"{self.name} ends inside {what} (truncated)")
        self.fh.seek(n, io.SEEK_CUR)


class _Broken(Exception):
    pass


def _count(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_ENTRIES:
        raise _Broken(f"{what} count {brief(value)} is not a count")
    return value


def load(path: str, graph: ModelGraph, policy: Policy, not_torch: str) -> None:
    try:
        tar = tarfile.open(path, mode="r:", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (with below)
    except (tarfile.TarError, OSError, ValueError):
        raise Unreadable(not_torch) from None
    with tar:
        found: dict[str, tarfile.TarInfo] = {}
        for index, info in enumerate(tar):
            if index >= MAX_TAR_MEMBERS:
                raise Unreadable(f"tar archive with more than {MAX_TAR_MEMBERS:,} members")
            found[info.name] = info  # the last of a name, as tar.getmember picks
        if not all(name in found for name in MEMBERS):
            raise Unreadable(not_torch)
        for name in MEMBERS:
            if not found[name].isfile():
                raise Unreadable(
                    f"legacy torch.save tar: member {name!r} is a link, not a file: torch.load "
                    "would read whatever it points to",
                    member=name,
                )
        graph.format = "torch_save"
        graph.metadata["layout"] = "tar"
        streams: list[_Stream] = []
        failure = None
        obj = None
        try:
            objects = _storages(tar, found["storages"], policy, streams)
            _tensors(tar, found["tensors"], policy, streams, objects)
            main = _open(tar, found["pickle"], policy, streams)
            obj = main.load("object", lambda fh: _Reader(fh, policy, objects))
        except _Broken as exc:
            failure = str(exc)
    issues = []
    for stream in streams:
        for where, data in stream.pickles:
            result = scan(data, where, policy)
            # a stream the scanner cannot follow is MG901 even where Python's own reader
            # failed too: torch reads it with the C unpickler (fickling's frame trick); only
            # a pickle cut short is the failure's alone (MG902)
            issues.extend(
                i for i in result.issues if not (result.truncated and i.usage == "stream")
            )
    graph.pickle_issues.extend(issues)
    graph.metadata["weights_only"] = {
        "member": "pickle",
        "needs": [],
        "blocked": {"the legacy .tar layout": "is refused whatever is allowed"},
    }
    if failure is not None:
        if issues:  # what it would run is the verdict; that it breaks off is said beside it
            graph.notes.append(f"legacy torch.save tar: {failure}")
            return
        raise Unreadable(f"legacy torch.save tar: {failure}")
    if any(i.usage != "class" for i in issues):
        graph.notes.append("the pickle was not read: it is unsafe")
        return
    interpret(obj, graph)
    graph.metadata["layout"] = "tar"


def _open(tar: tarfile.TarFile, info: tarfile.TarInfo, policy: Policy, streams: list) -> _Stream:
    fh = tar.extractfile(info)
    if fh is None:
        raise Unreadable(f"legacy torch.save tar: member {info.name!r} cannot be read")
    stream = _Stream(fh, info.size, info.name, policy)  # type: ignore[arg-type]
    streams.append(stream)
    return stream


def _storages(
    tar: tarfile.TarFile, info: tarfile.TarInfo, policy: Policy, streams: list
) -> dict[str, Any]:
    stream = _open(tar, info, policy, streams)
    objects: dict[str, Any] = {}
    for index in range(_count(stream.load("storage count"), "storage")):
        args = stream.load(f"storage {index + 1}")
        if not (isinstance(args, tuple) and len(args) == 3 and isinstance(args[2], _DType)):
            raise _Broken(
                f"storages: storage {index + 1} is {brief(args)}, not (key, location, type)"
            )
        key, location, dtype = str(args[0]), args[1], args[2].name
        (numel,) = struct.unpack("<q", stream.read(8, f"storage {key!r}"))
        if not 0 <= numel < MAX_DIM:
            raise _Broken(f"storages: storage {key!r} declares {numel} elements")
        stream.skip(int(numel * ITEMSIZE.get(dtype, 1)), f"storage {key!r}")
        objects[key] = StorageRef(key, dtype, numel, str(location)[:40])
    views = stream.load("storage views")
    if not isinstance(views, list):
        raise _Broken("storages: the storage views are not a list")
    for view in views[:MAX_ENTRIES]:
        if not (isinstance(view, tuple) and len(view) == 4 and str(view[1]) in objects):
            raise _Broken(f"storages: storage view {brief(view)} names no storage")
        root = objects[str(view[1])]
        objects[str(view[0])] = StorageRef(str(view[0]), root.dtype, root.numel, root.location)
    return objects


def _tensors(
    tar: tarfile.TarFile,
    info: tarfile.TarInfo,
    policy: Policy,
    streams: list,
    objects: dict[str, Any],
) -> None:
    stream = _open(tar, info, policy, streams)
    for index in range(_count(stream.load("tensor count"), "tensor")):
        args = stream.load(f"tensor {index + 1}")
        if not (isinstance(args, tuple) and len(args) == 3):
            raise _Broken(f"tensors: tensor {index + 1} is {brief(args)}")
        key, storage_key = str(args[0]), str(args[1])
        storage = objects.get(storage_key)
        if not isinstance(storage, StorageRef):
            raise _Broken(
                f"tensors: tensor {key!r} names storage {storage_key!r}, which is missing"
            )
        (ndim,) = struct.unpack("<i", stream.read(4, f"tensor {key!r}"))
        if not 0 <= ndim <= MAX_RANK:
            raise _Broken(f"tensors: tensor {key!r} has {ndim} dimensions")
        stream.read(4, f"tensor {key!r}")
        sizes = struct.unpack(f"<{ndim}q", stream.read(8 * ndim, f"tensor {key!r}"))
        strides = struct.unpack(f"<{ndim}q", stream.read(8 * ndim, f"tensor {key!r}"))
        (offset,) = struct.unpack("<q", stream.read(8, f"tensor {key!r}"))
        if any(d < 0 for d in (*sizes, *strides, offset)):
            raise _Broken(f"tensors: tensor {key!r} has a negative size, stride or offset")
        objects[key] = TensorStub(tuple(sizes), storage.dtype, storage, offset, tuple(strides))
