"""Which files a run checks: files as named, model files under folders, and what was skipped.

A folder holds more than models. A sharded checkpoint's index stands for its shards (checked
with it, not one by one); ONNX external-data files (``weights.bin`` named by a ``.onnx``
beside it) are part of their model. A shard named on its own is checked as the model its
index describes. Nothing here parses a model: an index is small JSON, and an ONNX file's
external-data locations are found by their protobuf bytes (a field a reader cannot misparse
into running anything). A file is skipped only if it does not read as a model itself, so a
model cannot hide from the gate by being named as another model's data. Special files
(FIFO, device, socket) are never opened here; the loader refuses them (MG902).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

from modelgate.loaders import sharded
from modelgate.loaders.errors import Unreadable

# What a directory walk picks up; files named explicitly are read whatever their name.
MODEL_SUFFIXES = (
    ".pt", ".pth", ".pt2", ".ckpt", ".bin", ".onnx", ".safetensors", ".torchscript", ".ptl",
    ".pkl", ".pickle", ".model", ".npy", ".npz", ".joblib",
)  # fmt: skip
# TensorProto.external_data entry {key: "location", value: ...}: field 1 "location", field 2
_LOCATION = b"\x0a\x08location\x12"
_ONNX_PROBE = 256 * 1024 * 1024  # bytes of a .onnx searched for external-data locations
_CHUNK = 16 * 1024 * 1024


@dataclass
class Discovery:
    files: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why it is not checked
    notes: list[str] = field(default_factory=list)  # a named shard checked as its model, ...
    walked: bool = False  # a folder was scanned (the report then says what it found)


def discover(paths: list[str] | tuple[str, ...]) -> Discovery:
    found = Discovery()
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found.walked = True
            out.extend(_walk(path, found))
        else:
            out.append(_named(path, found))
    found.files = list(dict.fromkeys(out))
    return found


def discover_files(paths: list[str]) -> Discovery:
    """Files a glob matched, judged as a folder scan would judge them: a shard stands for its
    index, and a file that a ``.onnx`` beside it names as external data is skipped."""
    found = Discovery(walked=bool(paths))
    found.files = list(dict.fromkeys(_judge(paths, found)))
    return found


def _named(path: str, found: Discovery) -> str:
    """A file named on the command line; a shard becomes the index that describes it."""
    if not _regular(path) or sharded.is_index(path):
        return path
    folder, name = os.path.split(path)
    owner = _owners(folder).get(name)
    if owner is None or not sharded.is_index(owner[0]):
        return path  # named explicitly: read whatever another file says of it
    found.notes.append(
        f"{path} is a shard of {owner[0]}: checked as that model, all its shards together"
    )
    return owner[0]


def _walk(root: str, found: Discovery) -> list[str]:
    files: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "node_modules")
        picked = sorted(
            n
            for n in names
            if n.lower().endswith(MODEL_SUFFIXES) or n.lower().endswith(sharded.INDEX_SUFFIXES)
        )
        files += _judge([os.path.join(folder, n) for n in picked], found)
    return sorted(dict.fromkeys(files))


def _judge(paths: list[str], found: Discovery) -> list[str]:
    """The models among ``paths``: a shard stands for its index, external data that does not
    read as a model itself is skipped; each recorded in ``found.skipped``."""
    out: list[str] = []
    owners: dict[str, dict[str, tuple[str, str]]] = {}  # folder -> its files' owners
    for path in paths:
        folder, name = os.path.split(path)
        if folder not in owners:
            owners[folder] = _owners(folder)
        owner, why = owners[folder].get(name, (None, ""))
        if owner is not None and sharded.is_index(owner):
            found.skipped[path] = why
            out.append(owner)
        elif owner is not None and not _reads_as_model(path):
            found.skipped[path] = why
        else:
            out.append(path)
    return out


def _owners(folder: str) -> dict[str, tuple[str, str]]:
    """Files in ``folder`` that are part of another file's model: name -> (that file, why)."""
    try:
        names = sorted(os.listdir(folder or "."))
    except OSError:
        return {}
    owners: dict[str, tuple[str, str]] = {}
    for name in names:
        path = os.path.join(folder, name)
        if sharded.is_index(path):
            why = f"shard of {name}, checked with it"
        else:
            why = f"ONNX external data of {name}"
        for part in companions(path):
            owners.setdefault(part, (path, why))
    return owners


def companions(path: str) -> list[str]:
    """File names beside ``path`` that are part of its model: a shard index's shards, an ONNX
    file's external data. A pull request that changes only them changes the model."""
    if sharded.is_index(path):
        try:
            return sorted(set(sharded.read_index(path)[1]))
        except Unreadable:
            return []  # MG902 on the index; its shards are checked on their own
    if path.lower().endswith(".onnx") and _regular(path):
        return sorted(_external_data(path))
    return []


def _regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _reads_as_model(path: str) -> bool:
    """External data must not read as a model of its own (then it is checked, not skipped)."""
    if not _regular(path):
        return False
    from modelgate import loaders

    try:
        return loaders.sniff(path) not in ("unknown", "empty")
    except OSError:
        return False


def external_data(path: str, nested: bool = False) -> set[str]:
    """The external-data files a .onnx file refers to: plain names in its folder, and with
    ``nested`` also relative paths into its subfolders (``data/w.bin``), which its loader
    reads as well."""
    return _external_data(path, nested)


def _external_data(path: str, nested: bool = False) -> set[str]:
    """The external-data file names a .onnx file refers to (plain names in its folder)."""
    names: set[str] = set()
    try:
        with open(path, "rb") as fh:
            carry = b""
            read = 0
            while read < _ONNX_PROBE:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                read += len(chunk)
                data = carry + chunk
                start = 0
                while (hit := data.find(_LOCATION, start)) >= 0:
                    start = hit + 1
                    at = hit + len(_LOCATION)
                    if at >= len(data):
                        break
                    size = data[at]
                    if size >= 0x80:  # a name over 127 bytes: not what shares a folder
                        continue
                    name = data[at + 1 : at + 1 + size]
                    if len(name) == size:
                        _add_name(names, name, nested)
                carry = data[-(len(_LOCATION) + 128) :]
    except OSError:
        return names
    return names


def _add_name(names: set[str], raw: bytes, nested: bool = False) -> None:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return
    name = name.removeprefix("./")
    if nested:  # inside the model's folder only, as the loader allows
        steps = name.replace("\\", "/").split("/")
        if (
            name
            and not name.startswith("/")
            and ":" not in name[:3]
            and all(step not in ("", ".", "..") for step in steps)
        ):
            names.add("/".join(steps))
        return
    if name and "/" not in name and "\\" not in name and name not in (".", ".."):
        names.add(name)


def summary(found: Discovery, models: list[Any]) -> str | None:
    """A run-level note: what a folder scan checked (by kind) and what it skipped.
    ``models`` are the run's :class:`~modelgate.report.ModelReport` objects."""
    if not found.walked and not found.skipped:
        return None
    kinds = {"model": 0, "training-state file": 0, "unreadable file": 0}
    for model in models:
        if any(f.rule == "MG902" for f in model.findings):
            kinds["unreadable file"] += 1
        elif model.format == "training_state":
            kinds["training-state file"] += 1
        else:
            kinds["model"] += 1
    parts = [f"{n} {k}{'' if n == 1 else 's'}" for k, n in kinds.items() if n or k == "model"]
    total = len(models) + len(found.skipped)
    text = f"scanned {total} file{'s' if total != 1 else ''}: {', '.join(parts)}"
    if found.skipped:
        by_reason: dict[str, list[str]] = {}
        for path, why in found.skipped.items():
            by_reason.setdefault(why, []).append(os.path.basename(path))
        shown = "; ".join(f"{', '.join(names)} ({why})" for why, names in by_reason.items())
        text += f", {len(found.skipped)} skipped: {shown}"
    return text


def display_path(path: str) -> str:
    """Relative to the working directory when inside it (what annotations and globs use)."""
    absolute = os.path.abspath(path)
    cwd = os.getcwd()
    if absolute.startswith(cwd + os.sep):
        return os.path.relpath(absolute, cwd).replace(os.sep, "/")
    return path
