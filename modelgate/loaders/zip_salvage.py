"""Every pickle a malformed zip may hand to a loader, scanned entry by entry.

A zip whose structure readers disagree on (data before or after the archive, a member named
twice, a local header that names another file than the central directory, a bad CRC) is
refused by :mod:`modelgate.loaders.archive`: which member PyTorch's reader (miniz) picks is
not something to guess. But refusing is not the same as knowing: ``torch.load`` may well read
such a file, and run what its ``data.pkl`` holds. So before the refusal becomes the verdict,
every local entry in the file's bytes (each copy of a duplicated name, an appended archive's,
one whose CRC is wrong) is decompressed without the checks that failed and scanned as a
pickle when its name or its bytes say pickle. An unsafe global in any of them is MG901: what
some reader may execute. None: the refusal (MG902) stands.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib

from modelgate.graph import PickleIssue
from modelgate.loaders.allowlist import Policy
from modelgate.loaders.pickle_scan import is_pickle, scan

_LOCAL = b"PK\x03\x04"
_HEADER = struct.Struct("<4s5H3L2H")  # signature, version, flags, method, time, date, crc,
# compressed size, size, name length, extra length
MAX_ENTRIES = 100_000
MAX_PICKLE = 256 * 1024 * 1024  # as archive.MAX_SMALL_MEMBER


def scan_entries(path: str, policy: Policy, label: str) -> list[PickleIssue]:
    """The pickle issues of every local entry of the zip at ``path`` that a reader could take
    for a pickle (a ``.pkl`` name, or bytes that start like one); [] when none is unsafe."""
    size = os.path.getsize(path)
    if size < _HEADER.size:
        return []
    issues: list[PickleIssue] = []
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        pos = data.find(_LOCAL)
        seen = 0
        while pos >= 0 and seen < MAX_ENTRIES and pos + _HEADER.size <= size:
            seen += 1
            fields = _HEADER.unpack_from(data, pos)
            flags, method, packed = fields[2], fields[3], fields[7]
            name_len, extra_len = fields[9], fields[10]
            name = bytes(data[pos + _HEADER.size : pos + _HEADER.size + name_len])
            start = pos + _HEADER.size + name_len + extra_len
            body = _body(data, start, packed, method, bool(flags & 0x08), size)
            shown = name.decode("utf-8", "replace")
            if body is not None and (shown.lower().endswith(".pkl") or is_pickle(body[:2])):
                where = f"{label}:{shown} (zip entry at byte {pos:,})"
                issues += scan(body, where, policy).issues
            pos = data.find(_LOCAL, pos + 4)
    return issues


def _body(
    data: mmap.mmap, start: int, packed: int, method: int, descriptor: bool, size: int
) -> bytes | None:
    """An entry's bytes, decompressed without its CRC check (None: not readable as data)."""
    if start >= size:
        return None
    if method == 0:  # stored: the local size, or up to the next header when it is deferred
        end = start + packed if packed and not descriptor else data.find(_LOCAL, start)
        end = size if end < 0 else min(end, size, start + MAX_PICKLE)
        return bytes(data[start:end])
    if method != 8:  # deflate is what torch.save and numpy write; others are not salvaged
        return None
    inflater = zlib.decompressobj(-15)
    end = min(size, start + (packed if packed and not descriptor else MAX_PICKLE))
    out = bytearray()
    chunk = 1 << 20
    at = start
    try:
        while at < end and len(out) <= MAX_PICKLE and not inflater.eof:
            feed = data[at : min(at + chunk, end)]
            at += chunk
            while feed and len(out) <= MAX_PICKLE and not inflater.eof:
                out += inflater.decompress(feed, MAX_PICKLE + 1 - len(out))  # bounded: no bomb
                feed = inflater.unconsumed_tail
    except zlib.error:
        pass
    return bytes(out[:MAX_PICKLE]) if out else None
