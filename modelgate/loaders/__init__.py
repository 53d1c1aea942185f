"""Reading model files by their content into a :class:`~modelgate.graph.ModelGraph`.

:func:`load` never raises: a file that cannot be read comes back with ``unreadable`` set
(finding MG902), unsafe pickles with ``pickle_issues`` (MG901).
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
    (0, b"\x93NUMPY", "a NumPy .npy array"),
    (0, b"\x1f\x8b", "a gzip file"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (0, b"\xfd7zXZ\x00", "an xz file"),
    (257, b"ustar", "a tar archive"),
)


def sniff(path: str) -> str:
    """The format a file's first bytes announce: zip, pickle, safetensors, onnx, lfs, ..."""
    from modelgate.loaders import onnx_model, pickle_scan, safetensors

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
        return "pickle"
    if safetensors.sniff(head, size):
        return "safetensors"
    if onnx_model.sniff(head, size):
        return "onnx"
    if _text_pickle(path):
        return "pickle"
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
    elif kind == "safetensors":
        from modelgate.loaders import safetensors

        with open(path, "rb") as fh:
            safetensors.load(fh, graph.file_size, graph)
    elif kind == "onnx":
        from modelgate.loaders import onnx_model

        try:
            onnx_model.load(path, graph)
        except Unreadable as exc:
            if path.lower().endswith(".onnx") or exc.reason.startswith("truncated ONNX protobuf"):
                raise
            raise Unreadable(_unknown(path)) from None
    else:
        raise Unreadable(_unknown(path))


def _unknown(path: str) -> str:
    with open(path, "rb") as fh:
        head = fh.read(512)
    for offset, magic, what in _OTHER_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return f"{what}, not a format modelgate reads (PyTorch, safetensors, ONNX)"
    if head[:1] in (b"{", b"[") or head[:5].lower() in (b"<?xml", b"<html"):
        return "a text file, not a model"
    return "not a model file: no PyTorch, safetensors or ONNX signature"


def _load_zip(path: str, graph: ModelGraph, policy: Policy) -> None:
    from modelgate.loaders import pt2, torch_pickle, torchscript
    from modelgate.loaders.archive import open_archive

    archive = open_archive(path)
    with archive.zf:
        if pt2.is_pt2(archive):
            pt2.load(archive, graph, policy)
        elif torchscript.is_torchscript(archive):
            torchscript.load(archive, graph, policy)
        elif archive.has("data.pkl"):
            torch_pickle.load_zip(archive, graph, policy)
        else:
            names = ", ".join(list(archive.infos)[:3])
            raise Unreadable(f"a zip archive that is not a PyTorch model (members: {names})")
