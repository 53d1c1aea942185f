"""Reading model files by their content into a :class:`~modelgate.graph.ModelGraph`.

:func:`load` never raises: a file that cannot be read comes back with ``unreadable`` set
(finding MG902), unsafe pickles with ``pickle_issues`` (MG901). Read: torch.save (zip, legacy
and ``.tar`` layouts), TorchScript, ``.pt2``, plain pickles, safetensors, ONNX, NumPy
``.npy`` / ``.npz`` and joblib (raw and compressed); every pickle any of them carries is
scanned. Other containers are named in the MG902 message.
"""

from __future__ import annotations

import os
import stat

from modelgate.graph import ModelGraph
from modelgate.loaders.allowlist import Policy
from modelgate.loaders.errors import NeedsExtra, Unreadable

__all__ = ["NeedsExtra", "Policy", "Unreadable", "load", "sniff"]

LFS_POINTER = b"version https://git-lfs.github.com/spec/"

# Formats modelgate recognises but does not read, so the message can name them.
_OTHER_MAGIC = (
    (0, b"GGUF", "a GGUF (llama.cpp) file"),
    (0, b"\x89HDF\r\n\x1a\n", "an HDF5 (Keras .h5) file"),
    (4, b"TFL3", "a TensorFlow Lite flatbuffer"),
    (0, b"\x1f\x8b", "a gzip file"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (0, b"\xfd7zXZ\x00", "an xz file"),
    (0, b"BZh", "a bzip2 file"),
    (0, b"\x04\x22\x4d\x18", "an LZ4 file"),
    (257, b"ustar", "a tar archive"),
)


def sniff(path: str) -> str:
    """The format a file's first bytes announce: zip, pickle, safetensors, onnx, lfs, ..."""
    from modelgate.loaders import (
        joblib_file,
        numpy_file,
        onnx_model,
        pickle_scan,
        safetensors,
        tar_legacy,
    )

    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(512)
    if size == 0:
        return "empty"
    if head.startswith(LFS_POINTER):
        return "lfs"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if pickle_scan.is_pickle(head):
        return "joblib" if joblib_file.names_wrapper(path) else "pickle"
    if numpy_file.sniff(head):
        return "numpy"
    if safetensors.sniff(head, size):
        return "safetensors"
    if onnx_model.sniff(head, size):
        return "onnx"
    if joblib_file.names_wrapper(path):  # protocols 0 and 1: no header
        return "joblib"
    if _text_pickle(path):
        return "pickle"
    if joblib_file.compression(head) is not None:
        return "compressed"
    if tar_legacy.sniff(head):
        return "tar"
    return "unknown"


def _text_pickle(path: str, probe: int = 1024 * 1024) -> bool:
    """A pickle without a protocol header (protocols 0 and 1, which ``torch.save`` writes
    when asked): the first MB parses as opcodes up to STOP, or up to the probe's end."""
    from modelgate.loaders import pickle_scan

    with open(path, "rb") as fh:
        data = fh.read(probe)
    result = pickle_scan.scan(data, "pickle", Policy())
    if result.truncated:
        return len(data) == probe  # followable all the way through the probe
    return not any(i.usage == "stream" for i in result.issues)


def load(path: str, policy: Policy | None = None) -> ModelGraph:
    """Read ``path`` into a graph view; problems are recorded on the graph, never raised."""
    graph = ModelGraph(path)
    try:
        _load(path, graph, policy or Policy())
    except Unreadable as exc:
        graph.unreadable = exc.reason
        graph.unreadable_member = exc.member
        if exc.hint:
            graph.metadata["unreadable_hint"] = exc.hint
    except MemoryError:
        graph.unreadable = "ran out of memory reading the file"
    except RecursionError:
        graph.unreadable = "the file nests structures too deeply to read"
    except Exception as exc:  # a reader bug must not become a traceback in someone's CI
        graph.unreadable = f"modelgate could not read it ({type(exc).__name__}: {str(exc)[:120]})"
    return graph


_SPECIAL = (
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISFIFO, "is a FIFO (named pipe)"),
    (stat.S_ISSOCK, "is a socket"),
    (stat.S_ISCHR, "is a character device"),
    (stat.S_ISBLK, "is a block device"),
)


def regular_file(path: str) -> int:
    """The size of ``path``, a regular file (after symlinks). A FIFO, device or socket is
    refused before anything opens it: reading one blocks or never ends."""
    try:
        mode = os.stat(path)
    except OSError as exc:
        raise Unreadable(f"cannot open: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode.st_mode):
        what = next((text for test, text in _SPECIAL if test(mode.st_mode)), "is no regular file")
        if what == "is a directory":
            raise Unreadable(what)
        raise Unreadable(f"{what}, not a model file: refused without opening it")
    return mode.st_size


def _load(path: str, graph: ModelGraph, policy: Policy) -> None:
    graph.file_size = regular_file(path)
    from modelgate.loaders import sharded

    if sharded.is_index(path):
        sharded.load(path, graph, lambda shard, sub: _load(shard, sub, policy))
        return
    try:
        kind = sniff(path)
    except IsADirectoryError:
        raise Unreadable("is a directory") from None
    except OSError as exc:
        raise Unreadable(f"cannot open: {exc.strerror or exc}") from None
    if kind == "empty":
        raise Unreadable("empty file (0 bytes)")
    if kind == "lfs":
        graph.format = "lfs-pointer"
        raise Unreadable(
            "git-lfs pointer, not the model: run git lfs pull "
            "(in GitHub Actions: actions/checkout with lfs: true)"
        )
    if kind == "zip":
        _load_zip(path, graph, policy)
    elif kind == "pickle":
        from modelgate.loaders import torch_pickle

        with open(path, "rb") as fh:  # read as far as the pickles go, not the storages
            torch_pickle.load_pickle_stream(fh, graph.file_size, graph, policy)
    elif kind in ("joblib", "compressed"):
        from modelgate.loaders import joblib_file, torch_pickle

        refusal = _unknown(path) if kind == "compressed" else None
        with open(path, "rb") as fh:
            if not joblib_file.load(fh, graph, policy, refusal):  # legacy torch.save after all
                torch_pickle.load_pickle_stream(fh, graph.file_size, graph, policy)
    elif kind == "numpy":
        from modelgate.loaders import numpy_file

        with open(path, "rb") as fh:
            numpy_file.load(fh, graph.file_size, graph, policy)
    elif kind == "tar":
        from modelgate.loaders import tar_legacy

        tar_legacy.load(path, graph, policy, _unknown(path))
    elif kind == "safetensors":
        from modelgate.loaders import safetensors

        with open(path, "rb") as fh:
            safetensors.load(fh, graph.file_size, graph)
    elif kind == "onnx":
        from modelgate.loaders import onnx_model

        try:
            onnx_model.load(path, graph)
        except Unreadable as exc:
            if not path.lower().endswith(".onnx") and _text_pickle(path):
                _reset(graph)  # a protocol 0 pickle whose first bytes read as protobuf
                from modelgate.loaders import torch_pickle

                with open(path, "rb") as fh:
                    torch_pickle.load_pickle_stream(fh, graph.file_size, graph, policy)
                return
            if path.lower().endswith(".onnx") or exc.reason.startswith("truncated ONNX protobuf"):
                raise
            raise Unreadable(_unknown(path)) from None
    else:
        raise Unreadable(_unknown(path))


def _reset(graph: ModelGraph) -> None:
    """Forget what a reader that gave up recorded, keeping the file's identity."""
    fresh = ModelGraph(graph.path)
    fresh.file_size = graph.file_size
    graph.__dict__.update(fresh.__dict__)


def _unknown(path: str) -> str:
    with open(path, "rb") as fh:
        head = fh.read(512)
    for offset, magic, what in _OTHER_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return f"{what}, not a format modelgate reads ({_READS})"
    if head[:1] in (b"{", b"[") or head[:5].lower() in (b"<?xml", b"<html"):
        return "a text file, not a model"
    return "not a model file: no PyTorch, safetensors, ONNX, NumPy or joblib signature"


_READS = "PyTorch, safetensors, ONNX, NumPy, joblib"


def _load_zip(path: str, graph: ModelGraph, policy: Policy) -> None:
    """A zip by what it holds. One refused as malformed is scanned entry by entry first
    (:mod:`modelgate.loaders.zip_salvage`): what a reader may still execute is MG901."""
    try:
        _read_zip(path, graph, policy)
    except Unreadable as exc:
        if not exc.structural:
            raise
        from modelgate.loaders import zip_salvage

        try:
            found = zip_salvage.scan_entries(path, policy, os.path.basename(path))
        except (OSError, ValueError):
            found = []
        if not found:
            raise
        graph.pickle_issues.extend(found)
        graph.notes.append(
            f"{exc.reason}: every entry of the archive was scanned as a reader might take it"
        )


def _read_zip(path: str, graph: ModelGraph, policy: Policy) -> None:
    from modelgate.loaders import numpy_file, pt2, torch_pickle, torchscript
    from modelgate.loaders.archive import open_archive

    try:
        archive = open_archive(path)
    except Unreadable as exc:
        # refusals that guard torch's reader (miniz): a zip of .npy members only is no torch
        # model to any reader, and numpy reads it with Python's zipfile, as modelgate does
        if not exc.reason.startswith(("zip bomb", "zip archive names member")):
            raise
        npz = numpy_file.open_npz(path)
        if npz is None:
            raise
        with npz.zf:
            numpy_file.load_npz(npz, graph, policy)
        return
    with archive.zf:
        if pt2.is_pt2(archive):
            pt2.load(archive, graph, policy)
        elif torchscript.is_torchscript(archive):
            torchscript.load(archive, graph, policy)
        elif archive.has("data.pkl"):
            torch_pickle.load_zip(archive, graph, policy)
        elif numpy_file.is_npz(archive):
            numpy_file.load_npz(archive, graph, policy)
        else:
            names = ", ".join(list(archive.infos)[:3])
            raise Unreadable(
                f"a zip archive that is not a PyTorch model or a NumPy .npz (members: {names})"
            )
