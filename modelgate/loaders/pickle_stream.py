"""What ``torch.load`` unpickles from a stream that is not a zip archive, scanned in order.

That is one pickle, or the legacy (pre-1.6) ``torch.save`` layout: five pickles back to back
whose first, a magic number, says which. The scanner sees one pickle at a time; this module
knows where the next one starts, and reads the first inertly (once it scanned clean) to tell
the two layouts apart. Where one pickle's ``STOP`` ends, every reader starts the next: the
scanner refuses a ``FRAME`` that runs past ``STOP`` (the C unpickler reading a ``BytesIO``
takes the whole frame, and so starts the next pickle later than a linear reader would).
"""

from __future__ import annotations

import io
from typing import BinaryIO

from modelgate.graph import PickleIssue
from modelgate.loaders.allowlist import Policy
from modelgate.loaders.inert import InertUnpickler
from modelgate.loaders.pickle_scan import ScanResult, scan

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy torch.save file

_LEGACY_PARTS = ("magic number", "protocol", "sys info", "object", "storage keys")


def scan_sequence(
    data: bytes | memoryview | BinaryIO,
    label: str,
    policy: Policy,
    results: list[ScanResult] | None = None,
) -> tuple[list[int], list[int], list[PickleIssue], bool]:
    """Scan what ``torch.load`` unpickles from a non-zip stream, before anything runs.

    That is one pickle, or the legacy (pre-1.6) ``torch.save`` layout: five pickles back to
    back (magic number, protocol, sys info, the object, storage keys), raw storages after.
    The first pickle decides which: it is read inertly once scanned clean.
    Returns the pickles' start and end offsets, their issues, and whether the data ended early;
    each pickle's :class:`ScanResult` is appended to ``results`` when given.
    """
    stream: BinaryIO = io.BytesIO(data) if isinstance(data, (bytes, memoryview)) else data
    first = scan(stream, label, policy)
    if results is not None:
        results.append(first)
    if first.truncated:
        return [], [], _found(first), True
    count = 1
    if not first.issues:
        try:
            stream.seek(0)
            magic = InertUnpickler(stream, policy, class_stubs=False).load()
        except Exception:  # a pickle the scanner follows may still fail to unpickle
            magic = None
        count = 5 if type(magic) is int and magic == LEGACY_MAGIC else 1
    starts, ends, issues = [0], [first.end], list(first.issues)
    for index in range(1, count):
        part = f"legacy pickle {index + 1} of 5 ({_LEGACY_PARTS[index]})"
        result = scan(stream, f"{label} {part}" if label != "pickle" else part, policy, ends[-1])
        if results is not None:
            results.append(result)
        if result.truncated:
            return starts, ends, issues + _found(result), True
        issues.extend(result.issues)
        starts.append(ends[-1])
        ends.append(result.end)
        if any(i.usage == "stream" for i in result.issues):
            break
    return starts, ends, issues, False


def _found(result: ScanResult) -> list[PickleIssue]:
    """A truncated pickle's issues without "it ends early" (the caller reports truncation)."""
    return [i for i in result.issues if i.usage != "stream"]
