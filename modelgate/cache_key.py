"""What decides a model's cached result (:mod:`modelgate.cache`): the key of its entry.

The key is the SHA-256 of :func:`key_inputs`: the file's bytes and those of its parts
(shards, ONNX external data), the settings that reach the checks and the rules, modelgate's
version and a digest of its code, the Python version and platform, and the installed versions
of every toolchain package a target may import (read from their metadata, never imported).
An entry stores these inputs in full, and a run compares them with its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelgate import __version__, discover
from modelgate.config import Config, InputSpec
from modelgate.targets import REGISTRY as TARGETS

SCHEMA = 1  # the entry format; another value is a foreign entry
_CHUNK = 4 * 1024 * 1024
# packages every run may import besides the targets' own (TorchScript and .pt2 need torch)
_BASE_PACKAGES = ("torch", "numpy", "onnx", "safetensors", "transformers")  # + builds


def _plain(value: Any) -> Any:
    """Settings as JSON values: dataclasses and mappings as sorted objects, sequences as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def settings(config: Config, cli_inputs: tuple[InputSpec, ...] = ()) -> dict[str, Any]:
    """What of the config reaches one model's report before the budget: the rules with their
    options and severities, the targets, input shapes, the pickle allow-list, the checks'
    settings, and which figures the budget limits (a limit on latency or on a target's
    figures makes the checks run the model or convert it; the limits' values do not reach
    them). ``fail_on``, ``ignore`` and the limits are the verdict's, judged on every run;
    ``timeout`` only cuts a check short, and such a result is never stored."""
    return {
        "rules": {
            rid: [s.enabled, s.severity, _plain(s.options)]
            for rid, s in sorted(config.rules.items())
        },
        "targets": list(config.targets),
        "asked_targets": list(config.asked_targets),
        "inputs": _plain(config.inputs),
        "cli_inputs": _plain(cli_inputs),
        "pickle_allow": list(config.pickle_allow),
        "checks": _plain(config.checks),
        "budgeted": sorted(config.budget),
        "build": config.build,
        "added_targets": list(TARGETS.added()),
    }


def toolchains() -> dict[str, str | None]:
    """Installed versions of every package a run may import (torch, numpy, onnx and each
    registered target's requirements), read from the installed metadata, without importing
    them; None for one not installed."""
    names = dict.fromkeys([*_BASE_PACKAGES, *(p for t in TARGETS for p in t.requires)])
    return {name: _version(name) for name in sorted(names)}


def _version(name: str) -> str | None:
    for candidate in dict.fromkeys((name, name.replace("_", "-"))):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError, ValueError):
            return importlib.metadata.version(candidate)
    return None


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}  # modelgate's own files, by stat


def code_digest() -> str:
    """The SHA-256 of modelgate's own code and data (the package, its rules, its targets and
    any target registered at run time): a development install changes results without
    changing its version."""
    roots = []
    for package in ("modelgate", "modelgate.rules", "modelgate.targets"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            roots.append(os.path.dirname(spec.origin))
    files = set()
    for root in dict.fromkeys(roots):
        for here, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            files.update(os.path.join(here, n) for n in names if n.endswith((".py", ".json")))
    for target in TARGETS:
        source = getattr(target.module, "__file__", None)
        if source:
            files.add(source)
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode("utf-8", "replace") + b"\0")
        digest.update((_code_file(path) or "missing").encode() + b"\0")
    return digest.hexdigest()


def _code_file(path: str) -> str | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    memo = (path, info.st_mtime_ns, info.st_size)
    if memo not in _FILE_DIGESTS:
        found = _digest(path)
        if found is None:
            return None
        _FILE_DIGESTS[memo] = found[0]
    return _FILE_DIGESTS[memo]


def _digest(path: str) -> tuple[str, int, int] | None:
    """(SHA-256, size, mtime_ns) of a regular file, or None (missing, special, unreadable).
    A FIFO or device is never opened."""
    try:
        before = os.stat(path)
        if not stat.S_ISREG(before.st_mode):
            return None
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        after = os.stat(path)
    except OSError:
        return None
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        return None  # written while it was read
    return digest.hexdigest(), after.st_size, after.st_mtime_ns


def parts(path: str) -> list[str]:
    """The files beside ``path`` that are part of its model, as the Action decides a change
    (:func:`modelgate.discover.companions`: shards, ONNX external data) plus ONNX external
    data in subfolders of the model's folder, which its loader also reads."""
    found = dict.fromkeys(discover.companions(path))
    if path.lower().endswith(".onnx"):
        found.update(dict.fromkeys(discover.external_data(path, nested=True)))
    return sorted(found)


@dataclass
class Lookup:
    """One model's key and what its entry must hold."""

    path: str
    key: str
    inputs: dict[str, Any]
    stat: tuple[int, int]  # the file's (size, mtime_ns) when hashed: a change stops the store


def run_inputs(config: Config, cli_inputs: tuple[InputSpec, ...] = ()) -> dict[str, Any]:
    """What the key holds that is the same for every file of a run."""
    return {
        "schema": SCHEMA,
        "modelgate": __version__,
        "code": code_digest(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": f"{sys.platform} {platform.machine()}",
        "toolchains": toolchains(),
        "threads": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "cwd": os.getcwd(),  # source files under it are reported relative to it
        "settings": settings(config, cli_inputs),
    }


def key_inputs(
    path: str,
    config: Config,
    cli_inputs: tuple[InputSpec, ...] = (),
    run: dict[str, Any] | None = None,
) -> Lookup | None:
    """The key of ``path``'s result under ``config`` (``run``: :func:`run_inputs`, when
    already made), or None when it cannot be cached (not a regular file, unreadable, or
    written while it was hashed)."""
    own = _digest(path)
    if own is None:
        return None
    folder_of = os.path.dirname(path)
    shares = {}
    for name in parts(path):
        part = _digest(os.path.join(folder_of, name))
        shares[name] = part[0] if part else None  # a missing part is part of the key too
    from modelgate import recipes

    inputs = {
        **(run if run is not None else run_inputs(config, cli_inputs)),
        "file": {"sha256": own[0], "size": own[1]},
        "parts": shares,
        "build": recipes.fingerprint(path, config, config.recipe_paths.get(path)),
    }
    return Lookup(path, sha(inputs), inputs, (own[1], own[2]))


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def sha(value: Any) -> str:
    return hashlib.sha256(_canonical(value)).hexdigest()
