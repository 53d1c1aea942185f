"""One entry of the result cache (:mod:`modelgate.cache`), read as untrusted input.

An entry is JSON (never pickle), at most :data:`MAX_ENTRY` bytes, a regular file owned by this
user and writable by no one else, of the expected shape, carrying its full key inputs (equal
to the ones this run computed: :mod:`modelgate.cache_key`) and a digest of its report.
Anything else reads as no entry. What is stored is a model's report before the budget, the
baselines and the verdict, which every run decides itself; results that say more about the
machine than about the file (a timeout, a crash, running out of memory, modelgate's own bug)
are never stored (:func:`cacheable`).
"""

from __future__ import annotations

import json
import os
import re
import stat
from typing import Any

from modelgate.cache_key import SCHEMA, Lookup, sha
from modelgate.finding import SEVERITIES
from modelgate.report import ModelReport

MAX_ENTRY = 8 * 1024 * 1024  # bytes; a larger report is not stored, a larger file not read
# step failures of the machine, not of the file (modelgate.checks.isolate's kinds)
_MACHINE_KINDS = ("timeout", "crash", "memory")
_MACHINE_WORDS = ("time limit was used up", "internal error")
_ENTRY_KEYS = {"modelgate_cache", "key", "inputs", "created", "report", "digest"}
_CREATED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")  # when it was checked, UTC


def cacheable(report: ModelReport) -> str | None:
    """Why ``report`` must not be stored (it depends on this run's machine or on a bug), or
    None when it may be."""
    if report.transient:
        return report.transient
    if _machine_failure(report.metrics):
        return "a check failed on this machine (a timeout, a crash, out of memory)"
    text = json.dumps(_body(report), default=str)  # findings, skipped rules, notes, metrics
    for word in _MACHINE_WORDS:
        if word in text:
            return f"the report says: {word}"
    return None


def _machine_failure(value: Any) -> bool:
    if isinstance(value, dict):
        if value.get("kind") in _MACHINE_KINDS:
            return True
        if any(word in str(value.get("skipped", "")) for word in _MACHINE_WORDS):
            return True
        return any(_machine_failure(v) for v in value.values())
    if isinstance(value, list):
        return any(_machine_failure(v) for v in value)
    return False


def _body(report: ModelReport) -> dict[str, Any]:
    """What is stored of a report: all but the verdict, which every run decides itself."""
    body = report.to_dict()
    body.pop("passed", None)
    body.pop("cached", None)
    return body


def _valid_report(body: Any) -> bool:
    """The shape :meth:`ModelReport.from_dict` reads, with every field of the type a fresh
    report has."""
    if not isinstance(body, dict) or set(body) != {
        "path", "format", "findings", "metrics", "skipped", "notes",
    }:  # fmt: skip
        return False
    if not (isinstance(body["path"], str) and isinstance(body["format"], str)):
        return False
    if not isinstance(body["metrics"], dict):
        return False
    if not (isinstance(body["notes"], list) and all(isinstance(n, str) for n in body["notes"])):
        return False
    skipped = body["skipped"]
    if not isinstance(skipped, list) or not all(
        isinstance(s, dict) and set(s) == {"rule", "reason"}
        and isinstance(s["rule"], str) and isinstance(s["reason"], str)
        for s in skipped
    ):  # fmt: skip
        return False
    findings = body["findings"]
    if not isinstance(findings, list):
        return False
    for finding in findings:
        if not isinstance(finding, dict):
            return False
        if not all(isinstance(finding.get(k), str) for k in ("rule", "name", "message")):
            return False
        if finding.get("severity") not in SEVERITIES:
            return False
        location = finding.get("location")
        if not isinstance(location, dict) or not isinstance(location.get("path"), str):
            return False
        source = location.get("source")
        if source is not None and not (
            isinstance(source, dict) and isinstance(source.get("file"), str)
            and isinstance(source.get("line"), int)
        ):  # fmt: skip
            return False
        if not isinstance(finding.get("fix"), (str, type(None))):
            return False
        if not isinstance(finding.get("key", ""), (str, type(None))):
            return False
    return True


def _safe_to_read(info: os.stat_result) -> bool:
    """A regular file of at most :data:`MAX_ENTRY` bytes, owned by this user and writable by
    no one else (on POSIX): what another user wrote is not this user's cache."""
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ENTRY:
        return False
    getuid = getattr(os, "getuid", None)
    if getuid is None:  # Windows: no owners to compare
        return True
    return info.st_uid == getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def read_entry(path: str, lookup: Lookup) -> ModelReport | None:
    """The report stored at ``path`` for ``lookup``, or None for anything else: missing,
    not a regular file (a symlink, a folder), too large, another user's, not JSON, another
    shape, another key, another file, a report that does not match its digest."""
    try:
        fd = os.open(
            path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        )
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            if not _safe_to_read(os.fstat(fh.fileno())):
                return None
            raw = fh.read(MAX_ENTRY + 1)
    except OSError:
        return None
    if len(raw) > MAX_ENTRY:
        return None
    try:
        entry = json.loads(raw.decode("utf-8"), parse_constant=_refuse)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        return None
    if entry["modelgate_cache"] != SCHEMA or entry["key"] != lookup.key:
        return None
    if entry["inputs"] != lookup.inputs or sha(entry["inputs"]) != lookup.key:
        return None
    if not isinstance(entry["created"], str) or not _CREATED.fullmatch(entry["created"]):
        return None
    body = entry["report"]
    try:
        if not _valid_report(body) or entry["digest"] != sha(body):
            return None
        report = ModelReport.from_dict(body)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None
    report.cached = entry["created"]
    return report


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def entry_text(lookup: Lookup, report: ModelReport, created: str) -> bytes | None:
    """The entry of ``report`` for ``lookup``, or None when it does not survive JSON as it is
    (a value JSON cannot hold, a tuple that would come back a list) or is too large."""
    body = _body(report)
    try:
        text = json.dumps(body, allow_nan=False)
    except (TypeError, ValueError):
        return None
    if json.loads(text) != body:
        return None
    entry = {
        "modelgate_cache": SCHEMA,
        "key": lookup.key,
        "inputs": lookup.inputs,
        "created": created,
        "report": body,
        "digest": sha(body),
    }
    data = json.dumps(entry, allow_nan=False).encode("utf-8")
    return data if len(data) <= MAX_ENTRY else None
