"""Zip archives as PyTorch writes them (torch.save, TorchScript, .pt2), read defensively.

Only the central directory and small members are read; tensor storages are checked by their
declared sizes, never read. Every member that is a pickle is scanned, not only ``data.pkl``:
an archive may hide one under another name, or nest a whole torch.save archive inside.

PyTorch reads zips with miniz, not Python's ``zipfile``. Where the two could see different
archives in the same bytes (data before the archive, entries whose local header disagrees with
the central directory, overlapping or duplicate members), the archive is refused: a scanner
that reads one archive while torch loads another scans nothing.
"""

from __future__ import annotations

import io
import itertools
import struct
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from modelgate.graph import PickleIssue
from modelgate.loaders.allowlist import Policy, resolve
from modelgate.loaders.errors import Unreadable
from modelgate.loaders.inert import InertUnpickler
from modelgate.loaders.pickle_scan import ScanResult, is_pickle, scan
from modelgate.loaders.pickle_stream import scan_sequence

MAX_SMALL_MEMBER = 256 * 1024 * 1024  # a pickle or JSON member larger than this is refused
MAX_MEMBERS = 1_000_000
MAX_RATIO = 200  # compressed members that expand more than this are zip bombs
MAX_NESTING = 3
NATIVE_SUFFIXES = (".so", ".dylib", ".dll", ".cubin", ".fatbin", ".ptx", ".hsaco", ".o")
# ELF, Mach-O (64 and 32 bit), Mach-O universal, PE
NATIVE_MAGIC = (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe")
PICKLE_NAMES = (".pkl", ".pickle", "debug_pkl")

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_LOCAL = b"PK\x03\x04"
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # signature ... name length, extra length


@dataclass
class Archive:
    """An opened zip with its members indexed; the prefix is torch's archive folder name."""

    zf: zipfile.ZipFile
    label: str  # how findings name this archive ("" for the file itself, else a member path)
    infos: dict[str, zipfile.ZipInfo] = field(default_factory=dict)
    prefix: str = ""

    def has(self, rel: str) -> bool:
        return (self.prefix + rel) in self.infos

    def names(self, rel_prefix: str = "") -> list[str]:
        """Member names below ``rel_prefix`` relative to the archive folder."""
        full = self.prefix + rel_prefix
        n = len(self.prefix)
        return [name[n:] for name in self.infos if name.startswith(full)]

    def size(self, rel: str) -> int | None:
        info = self.infos.get(self.prefix + rel)
        return info.file_size if info else None

    def read(self, rel: str, limit: int = MAX_SMALL_MEMBER) -> bytes:
        return read_member(self, self.prefix + rel, limit)

    def where(self, name: str) -> str:
        return f"{self.label}!{name}" if self.label else name


def open_archive(source: str | BinaryIO, label: str = "") -> Archive:
    """Open and validate the archive's structure. Raises :class:`Unreadable`."""
    try:
        zf = zipfile.ZipFile(source)
    except zipfile.BadZipFile as exc:
        raise _structural(f"broken zip archive ({exc}); the file may be truncated") from None
    except Exception as exc:  # OSError, struct.error, OverflowError, ...: all the same to us
        raise _structural(f"broken zip archive ({type(exc).__name__}: {exc})") from None
    try:
        infos = _validate(zf)
    except Unreadable as exc:
        zf.close()
        exc.structural = True
        raise
    except (OSError, ValueError, struct.error, OverflowError) as exc:
        zf.close()
        raise Unreadable(f"broken zip archive ({type(exc).__name__}: {exc})") from None
    archive = Archive(zf, label, {i.filename: i for i in infos})
    archive.prefix = _torch_prefix(infos)
    return archive


def _validate(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise Unreadable(f"zip archive with {len(infos):,} members (more than {MAX_MEMBERS:,})")
    fp = zf.fp
    assert fp is not None
    archive_size = fp.seek(0, 2)
    declared_offset, declared_entries, end = _end_record(fp, archive_size)
    if zf.start_dir != declared_offset:
        raise Unreadable(
            f"{zf.start_dir - declared_offset:,} bytes of other data before the zip archive: "
            "PyTorch and Python would read different archives"
        )
    if end != archive_size:
        raise Unreadable(
            f"{archive_size - end:,} bytes after the end of the zip archive "
            "(a second archive appended?)"
        )
    if declared_entries != len(infos):
        raise Unreadable(
            f"zip end record counts {declared_entries:,} members but the central directory "
            f"holds {len(infos):,}"
        )
    dupes = [n for n, c in Counter(i.filename for i in infos).items() if c > 1]
    if not dupes:  # miniz (PyTorch) looks member names up without regard to case
        dupes = [n for n, c in Counter(i.filename.lower() for i in infos).items() if c > 1]
    if dupes:
        raise Unreadable(
            f"zip archive names member {dupes[0]!r} twice: readers disagree on which one counts"
        )
    spans: list[tuple[int, int, str]] = []
    for info in infos:
        name = info.filename
        if name != info.orig_filename:  # zipfile cuts names at NUL; miniz keeps the bytes
            raise Unreadable(f"zip member name {info.orig_filename!r} holds a NUL byte")
        if info.flag_bits & 0x1:
            raise Unreadable(f"encrypted zip member {name!r}")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise Unreadable(
                f"zip member {name!r} is stored uncompressed but declares {info.file_size:,} "
                f"bytes and holds {info.compress_size:,}"
            )
        if info.compress_type != zipfile.ZIP_STORED:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > MAX_RATIO and info.file_size > 16 * 1024 * 1024:
                raise Unreadable(
                    f"zip bomb: member {name!r} expands {ratio:,.0f}x to {info.file_size:,} bytes"
                )
        start = _data_start(fp, info, archive_size)
        end_of_data = start + info.compress_size
        if end_of_data > zf.start_dir:
            raise Unreadable(f"zip member {name!r} runs past the end of the file (truncated?)")
        spans.append((info.header_offset, end_of_data, name))
    spans.sort()
    for (_, end_a, name_a), (start_b, _, name_b) in itertools.pairwise(spans):
        if start_b < end_a:
            raise Unreadable(
                f"zip members {name_a!r} and {name_b!r} overlap: one's bytes are the other's"
            )
    return infos


def _end_record(fp: BinaryIO, size: int) -> tuple[int, int, int]:
    """The central directory offset and entry count the end record declares, and where the
    archive ends (end record plus its comment). Finds the record as ``zipfile`` does (the
    last 22 bytes, else the last signature in the final 64 kB), which is also miniz's pick."""
    fp.seek(max(0, size - 22))
    last = fp.read(22)
    if len(last) == 22 and last[:4] == _EOCD and last[-2:] == b"\0\0":
        at = size - 22
    else:
        tail_start = max(0, size - 22 - 65535)
        fp.seek(tail_start)
        found = fp.read().rfind(_EOCD)
        if found < 0:
            raise Unreadable("broken zip archive (no end of central directory record)")
        at = tail_start + found
    fp.seek(at)
    record = fp.read(22)
    if len(record) < 22:
        raise Unreadable("broken zip archive (end record cut off; truncated?)")
    (_sig, _disk, _cd_disk, _n_disk, entries, _cd_size, offset, comment) = struct.unpack(
        "<4s4H2LH", record
    )
    end = at + 22 + comment
    if end > size:
        raise Unreadable("zip archive comment runs past the end of the file (truncated?)")
    if at >= 20:
        fp.seek(at - 20)
        locator = fp.read(20)
        if locator[:4] == _EOCD64_LOCATOR:
            (pointer,) = struct.unpack("<Q", locator[8:16])
            expected = at - 20 - 56
            if pointer != expected:  # zipfile reads the record before the locator, miniz
                raise Unreadable(  # follows the pointer: both must be the same record
                    "zip64 end record is not where its locator points"
                )
            fp.seek(expected)
            rec = fp.read(56)
            if len(rec) < 56 or rec[:4] != b"PK\x06\x06":
                raise Unreadable("broken zip archive (zip64 end record missing)")
            (entries,) = struct.unpack("<Q", rec[32:40])
            (offset,) = struct.unpack("<Q", rec[48:56])
    return offset, entries, end


def _data_start(fp: BinaryIO, info: zipfile.ZipInfo, archive_size: int) -> int:
    """Where a member's bytes begin, from its local header, which must name the same file."""
    if info.header_offset + _LOCAL_HEADER.size > archive_size:
        raise Unreadable(
            f"zip member {info.filename!r} starts past the end of the file (truncated?)"
        )
    fp.seek(info.header_offset)
    raw = fp.read(_LOCAL_HEADER.size)
    fields = _LOCAL_HEADER.unpack(raw)
    if fields[0] != _LOCAL:
        raise Unreadable(f"zip member {info.filename!r} has no local header where it should")
    name_len, extra_len = fields[9], fields[10]
    local_name = fp.read(name_len)
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
    if local_name != info.orig_filename.encode(encoding, "replace"):
        shown = local_name.decode(encoding, "replace")
        raise Unreadable(
            f"zip member {info.filename!r} is named {shown!r} in its local header: "
            "readers disagree on what it is"
        )
    return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len


def _torch_prefix(infos: list[zipfile.ZipInfo]) -> str:
    """torch names every record "<folder>/<record>", the folder taken from the first member."""
    if not infos:
        return ""
    first = infos[0].filename
    return first.split("/", 1)[0] + "/" if "/" in first else ""


def read_member(archive: Archive, name: str, limit: int = MAX_SMALL_MEMBER) -> bytes:
    info = archive.infos.get(name)
    if info is None:
        raise Unreadable(f"archive has no member {name!r}", member=archive.where(name))
    if info.file_size > limit:
        raise Unreadable(
            f"member {name!r} is {info.file_size:,} bytes, more than the {limit:,} modelgate reads",
            member=archive.where(name),
        )
    try:
        with archive.zf.open(info) as fh:
            data = fh.read(limit + 1)
    except Exception as exc:  # zipfile, zlib, bz2 and lzma each raise their own errors
        raise _structural(
            f"cannot read member {name!r}: {_brief(exc)}", member=archive.where(name)
        ) from None
    if len(data) > limit:
        raise Unreadable(f"member {name!r} is larger than declared", member=archive.where(name))
    return data


def head(archive: Archive, name: str, n: int = 8) -> bytes:
    """A member's first bytes. A member that cannot even be opened makes the archive
    unreadable: skipping it would skip whatever it hides."""
    info = archive.infos[name]
    if info.file_size == 0:
        return b""
    try:
        with archive.zf.open(info) as fh:
            return fh.read(n)
    except Exception as exc:
        raise _structural(
            f"cannot read member {name!r}: {_brief(exc)}", member=archive.where(name)
        ) from None


def _structural(reason: str, member: str | None = None) -> Unreadable:
    """A refusal of the zip's structure or bytes (a bad CRC, a broken record)."""
    exc = Unreadable(reason, member)
    exc.structural = True
    return exc


def _brief(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


@dataclass
class ScanReport:
    issues: list[PickleIssue] = field(default_factory=list)
    native: list[str] = field(default_factory=list)
    pickles: list[str] = field(default_factory=list)  # member names scanned
    # main pickles read inertly during the scan (to learn which members are raw storages)
    objects: dict[str, Any] = field(default_factory=dict)
    scans: dict[str, ScanResult] = field(default_factory=dict)  # the main pickles'


def scan_archive(
    archive: Archive,
    policy: Policy,
    main: Iterable[str] = ("data.pkl",),
    raw: Iterable[str] = (),
    loaded: Iterable[str] = (),
    depth: int = 0,
) -> ScanReport:
    """Scan every pickle member (and nested archive) of ``archive`` against ``policy``.

    ``main`` names (relative to the archive folder) the pickles the format's loader unpickles;
    they are scanned first and, when clean, read inertly to learn which members they use as
    raw tensor storage (``data/<key>``), which may start with any bytes. Every other member
    whose bytes or name say pickle is scanned and must be followable (fail closed).
    ``raw`` names more members that are raw data; ``loaded`` names members that the format's
    loader hands to ``torch.load`` whatever their bytes (a zip, or a pickle of any protocol).
    """
    report = ScanReport()
    main = [archive.prefix + rel for rel in main if archive.has(rel)]
    skip = {archive.prefix + rel for rel in raw}
    forced = {archive.prefix + rel for rel in loaded}
    strict = True
    for name in main:
        result = _scan_pickle(archive, name, policy, report)
        if result is not None:
            report.scans[name] = result
        if result is None or result.blocking:
            strict = False  # storages unknown: stray bytes that look like pickles are noise
            continue
        try:
            obj, keys = _load_checked(read_member(archive, name), policy, result)
        except Unreadable:
            raise
        except _Unlisted as exc:  # the unpickler and the scan read different programs
            detail = (
                f"cannot follow the pickle: unpickling it imports {exc}, which its scan never met"
            )
            report.issues.append(PickleIssue(archive.where(name), None, detail, "stream"))
            strict = False
            continue
        except Exception:  # reported by the format's loader, which reads it again
            strict = False
            continue
        report.objects[name] = obj
        folder = name.removesuffix(".pkl") + "/"  # data.pkl -> data/<key>, constants.pkl ...
        skip.update(folder + key for key in keys)
    for name, info in archive.infos.items():
        if name.endswith("/") or name in skip or name in main or info.file_size == 0:
            continue
        lower = name.lower()
        magic = head(archive, name, 8)
        if lower.endswith(NATIVE_SUFFIXES) or magic[:4] in NATIVE_MAGIC:
            report.native.append(archive.where(name))
            continue
        if magic.startswith(_LOCAL):
            _scan_nested(archive, name, policy, report, depth)
        elif name in forced:
            _scan_loaded_stream(archive, name, policy, report)
        elif is_pickle(magic) or _pickle_name(lower):
            named = _pickle_name(lower)
            _scan_pickle(archive, name, policy, report, quiet=not (strict or named))
    return report


def _pickle_name(lower: str) -> bool:
    """A member named as a pickle: ``*.pkl``, ``debug_pkl``, or a member called ``pickle``
    (not a source file such as ``code/__torch__/pickle_utils.py``)."""
    return lower.endswith(PICKLE_NAMES) or lower.rsplit("/", 1)[-1] == "pickle"


class _Unlisted(Exception):
    pass


class _CheckedUnpickler(InertUnpickler):
    """The inert read held to its scan: every global it meets must be one the scan listed."""

    def __init__(self, stream: BinaryIO, policy: Policy, class_stubs: bool, listed: set[str]):
        super().__init__(stream, policy, class_stubs)
        self._listed = listed

    def find_class(self, module: str, name: str) -> Any:
        if (
            resolve(module, name, 2) not in self._listed
            and resolve(module, name, 5) not in self._listed
        ):
            raise _Unlisted(f"{module}.{name}"[:200])
        return super().find_class(module, name)


def _load_checked(data: bytes, policy: Policy, result: ScanResult) -> tuple[Any, set[str]]:
    """Read a scanned main pickle inertly, to learn its storage keys. Class stand-ins only
    where the scan allowed classes; a global the scan did not list stops the read: a second
    line of defence should the two readers ever see different programs."""
    unpickler = _CheckedUnpickler(
        io.BytesIO(data), policy, bool(result.issues), set(result.globals)
    )
    return unpickler.load(), unpickler.storage_keys


def _scan_pickle(
    archive: Archive,
    name: str,
    policy: Policy,
    report: ScanReport,
    quiet: bool = False,
) -> ScanResult | None:
    """Scan one pickle member; ``quiet`` drops "cannot follow" for bytes that may be data."""
    where = archive.where(name)
    info = archive.infos[name]
    if info.file_size > MAX_SMALL_MEMBER:
        report.issues.append(PickleIssue(where, None, "pickle member too large to scan", "stream"))
        return None
    result = scan(read_member(archive, name), where, policy)
    if quiet and any(i.usage == "stream" for i in result.issues):
        return result
    report.pickles.append(name)
    report.issues.extend(result.issues)
    return result


def _scan_loaded_stream(archive: Archive, name: str, policy: Policy, report: ScanReport) -> None:
    """A member torch.load reads that is not a zip: the legacy layout or a bare pickle."""
    where = archive.where(name)
    if archive.infos[name].file_size > MAX_SMALL_MEMBER:
        report.issues.append(PickleIssue(where, None, "member too large to scan", "stream"))
        return
    _, _, issues, _ = scan_sequence(read_member(archive, name), where, policy)
    report.pickles.append(name)
    report.issues.extend(issues)


def _scan_nested(
    archive: Archive, name: str, policy: Policy, report: ScanReport, depth: int
) -> None:
    where = archive.where(name)
    if depth >= MAX_NESTING:
        report.issues.append(
            PickleIssue(where, None, f"archives nested more than {MAX_NESTING} deep", "stream")
        )
        return
    if archive.infos[name].file_size > MAX_SMALL_MEMBER:
        report.issues.append(PickleIssue(where, None, "nested archive too large to scan", "stream"))
        return
    data = read_member(archive, name)
    try:
        inner = open_archive(io.BytesIO(data), label=where)
    except Unreadable as exc:
        report.issues.append(PickleIssue(where, None, f"nested archive: {exc.reason}", "stream"))
        return
    with inner.zf:
        if inner.names("code/"):  # a TorchScript archive
            main = ("data.pkl", "constants.pkl", "traced_inputs.pkl")
            policy = Policy(extra=policy.extra, torchscript=True)
        else:
            main = ("data.pkl",)
        sub = scan_archive(inner, policy, main=main, depth=depth + 1)
    report.issues.extend(sub.issues)
    report.native.extend(sub.native)
    report.pickles.extend(sub.pickles)
