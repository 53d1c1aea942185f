"""Zip archives as PyTorch writes them (torch.save, TorchScript, .pt2), read defensively.

Only the central directory and small members are read; tensor storages are checked by their
declared sizes, never read. Every member that is a pickle is scanned, not only ``data.pkl``:
an archive may hide one under another name, or nest a whole torch.save archive inside.
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from dataclasses import dataclass, field

from modelgate.graph import PickleIssue
from modelgate.loaders import pickles
from modelgate.loaders.errors import Unreadable

MAX_SMALL_MEMBER = 256 * 1024 * 1024  # a pickle or JSON member larger than this is refused
MAX_MEMBERS = 1_000_000
MAX_RATIO = 200  # compressed members that expand more than this are zip bombs
MAX_NESTING = 3
NATIVE_SUFFIXES = (".so", ".dylib", ".dll", ".cubin", ".fatbin", ".ptx", ".hsaco", ".o")
# ELF, Mach-O (64 and 32 bit), Mach-O universal
NATIVE_MAGIC = (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe")


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


def open_archive(source: str | object, label: str = "") -> Archive:
    """Open and validate the central directory. Raises :class:`Unreadable`."""
    try:
        zf = zipfile.ZipFile(source)  # type: ignore[arg-type]
    except zipfile.BadZipFile as exc:
        raise Unreadable(f"broken zip archive ({exc}); the file may be truncated") from None
    except (OSError, ValueError, EOFError, OverflowError) as exc:
        raise Unreadable(f"broken zip archive ({exc})") from None
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise Unreadable(f"zip archive with {len(infos):,} members (more than {MAX_MEMBERS:,})")
    dupes = [name for name, n in Counter(i.filename for i in infos).items() if n > 1]
    if dupes:
        raise Unreadable(
            f"zip archive names member {dupes[0]!r} twice: readers disagree on which one counts"
        )
    archive_size = _size_of(zf)
    for info in infos:
        if info.flag_bits & 0x1:
            raise Unreadable(f"encrypted zip member {info.filename!r}")
        if info.header_offset + info.compress_size > archive_size:
            raise Unreadable(
                f"zip member {info.filename!r} runs past the end of the file (truncated?)"
            )
        if info.compress_type != zipfile.ZIP_STORED:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > MAX_RATIO and info.file_size > 16 * 1024 * 1024:
                raise Unreadable(
                    f"zip bomb: member {info.filename!r} expands {ratio:,.0f}x "
                    f"to {info.file_size:,} bytes"
                )
    archive = Archive(zf, label, {i.filename: i for i in infos})
    archive.prefix = _torch_prefix(infos)
    return archive


def _size_of(zf: zipfile.ZipFile) -> int:
    fp = zf.fp
    if fp is None:
        return 0
    pos = fp.tell()
    fp.seek(0, 2)
    end = fp.tell()
    fp.seek(pos)
    return end


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
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise Unreadable(f"cannot read member {name!r}: {exc}", member=archive.where(name)) from None
    except Exception as exc:  # zlib/bz2/lzma raise their own error types on corrupt data
        raise Unreadable(f"cannot read member {name!r}: {exc}", member=archive.where(name)) from None
    if len(data) > limit:
        raise Unreadable(f"member {name!r} is larger than declared", member=archive.where(name))
    return data


def head(archive: Archive, name: str, n: int = 8) -> bytes:
    info = archive.infos[name]
    if info.file_size == 0:
        return b""
    try:
        with archive.zf.open(info) as fh:
            return fh.read(n)
    except Exception:  # a member we cannot even peek at is reported when it matters
        return b""


@dataclass
class ScanReport:
    issues: list[PickleIssue] = field(default_factory=list)
    native: list[str] = field(default_factory=list)
    pickles: list[str] = field(default_factory=list)  # member names scanned


def scan_archive(
    archive: Archive,
    policy: pickles.Policy,
    skip: set[str] | None = None,
    depth: int = 0,
) -> ScanReport:
    """Scan every pickle member (and nested archive) of ``archive`` against ``policy``.

    ``skip`` names members known to be raw tensor storage, which may start with any bytes.
    """
    report = ScanReport()
    skip = skip or set()
    for name, info in archive.infos.items():
        if name.endswith("/") or name in skip:
            continue
        lower = name.lower()
        magic = head(archive, name, 8)
        if lower.endswith(NATIVE_SUFFIXES) or magic[:4] in NATIVE_MAGIC:
            report.native.append(archive.where(name))
            continue
        named_pickle = lower.endswith((".pkl", ".pickle", "debug_pkl")) or "/pickle" in lower
        if pickles.is_pickle(magic) or named_pickle:
            if info.file_size > MAX_SMALL_MEMBER:
                report.issues.append(
                    PickleIssue(archive.where(name), None, "pickle member too large to scan", "stream")
                )
                continue
            data = read_member(archive, name)
            result = pickles.scan(data, archive.where(name), policy)
            looks_real = named_pickle or not any(i.usage == "stream" for i in result.issues)
            if looks_real:
                report.pickles.append(name)
                report.issues.extend(result.issues)
        elif magic.startswith(b"PK\x03\x04") and depth < MAX_NESTING:
            if info.file_size > MAX_SMALL_MEMBER:
                continue
            data = read_member(archive, name)
            try:
                inner = open_archive(io.BytesIO(data), label=archive.where(name))
            except Unreadable as exc:
                report.issues.append(
                    PickleIssue(archive.where(name), None, f"nested archive: {exc.reason}", "stream")
                )
                continue
            sub = scan_archive(inner, policy, None, depth + 1)
            report.issues.extend(sub.issues)
            report.native.extend(sub.native)
            report.pickles.extend(sub.pickles)
    return report
