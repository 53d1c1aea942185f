"""The static pickle scanner: which globals a pickle names and how, before anything runs.

:func:`scan` is the one opcode reader for every pickle modelgate meets (a zip member, each
pickle of the legacy layout, ``.pt2`` members, nested archives, numpy and joblib payloads).
It reads the opcodes as CPython's C unpickler (``pickle.Unpickler``, what ``pickle.load`` and
``torch.load`` use) reads them: the same argument bytes per opcode, the same object stack with
its separate mark stack, the same memo (``MEMOIZE`` numbers by how many entries it holds),
``STACK_GLOBAL`` fed through the memo, protocol 0 text lines decoded as CPython decodes them,
protocol < 3 names mapped through ``_compat_pickle``, one pickle up to ``STOP``. It records
every global the unpickler would import and how each is used (called, instantiated as a class,
patched, or only referenced); anything the :class:`~modelgate.loaders.allowlist.Policy` does
not allow is a :class:`PickleIssue`.

A stream it cannot follow exactly is an issue too (usage ``"stream"``, MG901: fail closed).
That includes every stream where CPython's readers could disagree with each other: the C
unpickler reads a ``FRAME`` into a buffer and, when an opcode reads past the frame's end,
drops what is left of the frame and goes on reading the file (from a ``BytesIO``, as
``torch.load`` reads a zip member) or reads straight on (from ``bytes``), while the pure-Python
unpickler raises. A linear reader such as ``pickletools`` sees yet another program: fickling's
frame-boundary trick hides a ``GLOBAL``/``REDUCE`` inside what a linear reader takes for the
bytes of a long ``BINBYTES``. So an opcode that runs past the end of its frame, a frame opened
inside another, or a frame that runs past ``STOP`` is refused; in well-formed frames every
reader reads the same bytes. So are ``EXT`` codes (the loading program's copyreg registry
decides what they name), ``STACK_GLOBAL`` on values only running the pickle would produce, and
non-ASCII ``STRING`` names (their text depends on the unpickler's encoding).

Nothing is unpickled here: the scanner reads opcodes, never objects, so it is safe on any
bytes; long byte payloads are skipped by seeking, never read.
"""

from __future__ import annotations

import codecs
import contextlib
import copyreg
import io
from dataclasses import dataclass, field
from typing import BinaryIO

from modelgate.graph import PickleIssue
from modelgate.loaders.allowlist import Policy, resolve
from modelgate.loaders.bounds import MAX_GLOBALS
from modelgate.loaders.hostile import describe as _gadget

MAX_OPCODES = 50_000_000  # a 256 MB pickle of tensors has far fewer
_MEMO_SLACK = 1024  # memo indices beyond (opcodes so far + this) are a memory bomb
# Integers below 2**61 - 1 hash to themselves; above, distinct ones can share a hash, and a
# dict keyed by thousands of them takes minutes to build. Checkpoints hold almost none.
_HASH_MODULUS = 2**61 - 1
_MAX_BIG_INTS = 10_000
# How a global is used, most dangerous first; a report names the first one not allowed.
USAGES = ("call", "build", "ref", "class")
HIGHEST_PROTOCOL = 5
_CHUNK = 1 << 20  # bytes read at a time
_MAX_TEXT = 1 << 16  # strings longer than this are skipped: no global is named by one
_MAX_LINE = 64 << 20  # a protocol 0 text line longer than this is refused


class _Global:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _Built:
    """What calling or instantiating a global left on the stack (to see what fills it)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _Str8:
    """A ``STRING`` / ``BINSTRING`` value: its text depends on the unpickler's encoding."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


_ANY = object()


def _built(value: object) -> object:
    return _Built(value.name) if isinstance(value, _Global) else _ANY


_FILL_OPS = {"SETITEM": "items", "SETITEMS": "items", "APPEND": "appends", "APPENDS": "appends"}


@dataclass
class ScanResult:
    globals: dict[str, set[str]] = field(default_factory=dict)  # name -> usages
    issues: list[PickleIssue] = field(default_factory=list)
    end: int = 0  # offset just past STOP
    persistent_ids: int = 0
    truncated: bool = False  # the data ended before STOP
    # globals whose instances the pickle fills: "items" (SETITEM/S) or "appends" (APPEND/S)
    filled: dict[str, set[str]] = field(default_factory=dict)

    @property
    def class_only(self) -> bool:
        """True when every disallowed global is only instantiated as a class (NEWOBJ)."""
        return all(i.usage == "class" for i in self.issues)

    @property
    def blocking(self) -> bool:
        """Unpickling is off: a disallowed global is called or used, or the stream is odd."""
        return not self.class_only


class _Unfollowable(Exception):
    pass


class _Truncated(Exception):
    """The data ends first; ``tail`` holds the unfinished line, ``global_tail`` the lines of a
    GLOBAL / INST cut by the end."""

    def __init__(self, tail: bytes = b"", global_tail: bytes | None = None) -> None:
        super().__init__()
        self.tail, self.global_tail = tail, global_tail


# opcode byte -> (name, argument): "" none, "1"/"2"/"4"/"8" unsigned little-endian integers,
# "i4" signed, "f8" eight raw bytes, "nl" one text line, "nl2" two, "c1"/"c4"/"ci4"/"c8" a
# payload counted by an unsigned (or signed) integer of that many bytes.
_OPCODES: dict[int, tuple[str, str]] = {
    ord(code): (name, arg)
    for code, name, arg in (
        ("(", "MARK", ""), (".", "STOP", ""), ("0", "POP", ""), ("1", "POP_MARK", ""),
        ("2", "DUP", ""), ("F", "FLOAT", "nl"), ("I", "INT", "nl"), ("J", "BININT", "i4"),
        ("K", "BININT1", "1"), ("L", "LONG", "nl"), ("M", "BININT2", "2"), ("N", "NONE", ""),
        ("P", "PERSID", "nl"), ("Q", "BINPERSID", ""), ("R", "REDUCE", ""),
        ("S", "STRING", "nl"), ("T", "BINSTRING", "ci4"), ("U", "SHORT_BINSTRING", "c1"),
        ("V", "UNICODE", "nl"), ("X", "BINUNICODE", "c4"), ("a", "APPEND", ""),
        ("b", "BUILD", ""), ("c", "GLOBAL", "nl2"), ("d", "DICT", ""), ("}", "EMPTY_DICT", ""),
        ("e", "APPENDS", ""), ("g", "GET", "nl"), ("h", "BINGET", "1"), ("i", "INST", "nl2"),
        ("j", "LONG_BINGET", "4"), ("l", "LIST", ""), ("]", "EMPTY_LIST", ""), ("o", "OBJ", ""),
        ("p", "PUT", "nl"), ("q", "BINPUT", "1"), ("r", "LONG_BINPUT", "4"),
        ("s", "SETITEM", ""), ("t", "TUPLE", ""), (")", "EMPTY_TUPLE", ""),
        ("u", "SETITEMS", ""), ("G", "BINFLOAT", "f8"),
        ("\x80", "PROTO", "1"), ("\x81", "NEWOBJ", ""), ("\x82", "EXT1", "1"),
        ("\x83", "EXT2", "2"), ("\x84", "EXT4", "i4"), ("\x85", "TUPLE1", ""),
        ("\x86", "TUPLE2", ""), ("\x87", "TUPLE3", ""), ("\x88", "NEWTRUE", ""),
        ("\x89", "NEWFALSE", ""), ("\x8a", "LONG1", "c1"), ("\x8b", "LONG4", "ci4"),
        ("B", "BINBYTES", "c4"), ("C", "SHORT_BINBYTES", "c1"),
        ("\x8c", "SHORT_BINUNICODE", "c1"), ("\x8d", "BINUNICODE8", "c8"),
        ("\x8e", "BINBYTES8", "c8"), ("\x8f", "EMPTY_SET", ""), ("\x90", "ADDITEMS", ""),
        ("\x91", "FROZENSET", ""), ("\x92", "NEWOBJ_EX", ""), ("\x93", "STACK_GLOBAL", ""),
        ("\x94", "MEMOIZE", ""), ("\x95", "FRAME", "8"), ("\x96", "BYTEARRAY8", "c8"),
        ("\x97", "NEXT_BUFFER", ""), ("\x98", "READONLY_BUFFER", ""),
    )
}  # fmt: skip
_UNICODE_OPS = frozenset({"BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"})
_PUSH_ANY = frozenset(
    {
        "NONE", "NEWTRUE", "NEWFALSE", "BINFLOAT", "BININT", "BININT1", "BININT2",
        "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "EMPTY_TUPLE", "EMPTY_LIST",
        "EMPTY_DICT", "EMPTY_SET", "NEXT_BUFFER",
    }
)  # fmt: skip
_MARK_OPS = {"TUPLE": 0, "LIST": 0, "DICT": 0, "FROZENSET": 0}  # mark -> one new value


class _Data:
    """The stream's bytes from ``start``, read a chunk at a time; payloads past the chunk that
    the scanner does not need are skipped by seeking, never read."""

    __slots__ = ("base", "buf", "i", "size", "stream")

    def __init__(self, stream: BinaryIO, start: int, size: int) -> None:
        self.stream, self.size = stream, size
        self.buf, self.base, self.i = b"", start, 0

    @property
    def pos(self) -> int:
        return self.base + self.i

    def _refill(self, n: int) -> None:
        pos = self.base + self.i
        self.stream.seek(pos)
        self.buf, self.base, self.i = self.stream.read(max(n, _CHUNK)), pos, 0

    def take(self, n: int) -> bytes:
        if self.i + n > len(self.buf):
            if self.pos + n > self.size:
                raise _Truncated
            self._refill(n)
            if n > len(self.buf):
                raise _Truncated
        out = self.buf[self.i : self.i + n]
        self.i += n
        return out

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise _Truncated
        if self.i + n <= len(self.buf):
            self.i += n
        else:
            self.buf, self.base, self.i = b"", self.pos + n, 0

    def line(self) -> bytes:
        """One line with its newline, as the unpickler's readline reads it. At the end of the
        data, what is left (without a newline) goes with the ``_Truncated`` raised."""
        found = self.buf.find(b"\n", self.i)
        if found >= 0:
            out = self.buf[self.i : found + 1]
            self.i = found + 1
            return out
        parts: list[bytes] = []
        length = 0
        while True:
            parts.append(self.buf[self.i :])
            length += len(parts[-1])
            if length > _MAX_LINE:
                raise _Unfollowable(f"a text line longer than {_MAX_LINE:,} bytes")
            self.buf, self.base, self.i = b"", self.base + len(self.buf), 0
            self._refill(1)
            if not self.buf:
                raise _Truncated(b"".join(parts))
            found = self.buf.find(b"\n")
            if found >= 0:
                parts.append(self.buf[: found + 1])
                self.i = found + 1
                return b"".join(parts)


def _size_of(stream: BinaryIO) -> int:
    here = stream.tell()
    end = stream.seek(0, 2)
    stream.seek(here)
    return end


def _digits(line: bytes, name: str, pos: int) -> int:
    """A protocol 0 memo index: plain decimal digits (anything else is refused)."""
    text = line[:-1]
    if not text.isdigit() or not text.isascii():
        raise _Unfollowable(f"{name} at byte {pos} with index {text[:40]!r}")
    return int(text)


class _Machine:
    """CPython's unpickler run on symbols: the stack, its marks and the memo as positions."""

    def __init__(self, result: ScanResult) -> None:
        self.result = result
        self.stack: list[object] = []
        self.marks: list[int] = []
        self.memo: dict[int, object] = {}
        self.dotted: set[str] = set()
        self.proto = 0

    # -- the stack, with CPython's fence: nothing below the top mark is popped ----------------
    def fence(self) -> int:
        return self.marks[-1] if self.marks else 0

    def need(self, n: int, name: str, pos: int) -> None:
        if len(self.stack) - n < self.fence():
            raise _Unfollowable(f"{name} at byte {pos} needs {n} stack values")

    def pop_mark(self, name: str, pos: int) -> list[object]:
        if not self.marks:
            raise _Unfollowable(f"{name} at byte {pos} without a MARK")
        at = self.marks.pop()
        if at > len(self.stack):
            raise _Unfollowable(f"{name} at byte {pos}: its MARK is above the stack")
        items = self.stack[at:]
        del self.stack[at:]
        return items

    def use(self, value: object, usage: str) -> None:
        if isinstance(value, _Global):
            self.result.globals[value.name].add(usage)

    def uses(self, values: list[object], usage: str = "ref") -> None:
        for value in values:
            if isinstance(value, _Global):
                self.result.globals[value.name].add(usage)

    def take(self, n: int, name: str, pos: int) -> list[object]:
        """Pop ``n`` values (each a reference unless the caller says otherwise)."""
        self.need(n, name, pos)
        items = self.stack[len(self.stack) - n :]
        del self.stack[len(self.stack) - n :]
        return items

    def global_(self, module: str, attr: str) -> _Global:
        name = resolve(module, attr, self.proto)
        if "." in attr:
            self.dotted.add(name)
        self.result.globals.setdefault(name, set())
        if len(self.result.globals) > MAX_GLOBALS:
            raise _Unfollowable(f"more than {MAX_GLOBALS:,} distinct globals")
        return _Global(name)

    def fill(self, target: object, name: str) -> None:
        """SETITEM(S) / APPEND(S) / ADDITEMS call the target's own methods on a non-builtin."""
        if isinstance(target, _Global):
            self.use(target, "build")  # e.g. APPEND onto sys.path
        elif isinstance(target, _Built) and name in _FILL_OPS:
            self.result.filled.setdefault(target.name, set()).add(_FILL_OPS[name])


def scan(
    data: bytes | memoryview | BinaryIO, member: str, policy: Policy, start: int = 0
) -> ScanResult:
    """Statically list a pickle's globals and check them against ``policy``.

    ``data`` is the pickle's bytes or a seekable binary file (read as far as the pickle goes,
    so a multi-GB legacy checkpoint is not read whole). ``start`` lets a caller scan one of
    several pickles written back to back (the legacy ``torch.save`` layout);
    ``ScanResult.end`` tells where the next one begins. Never raises on hostile bytes.
    """
    result = ScanResult()
    stream: BinaryIO = io.BytesIO(data) if isinstance(data, (bytes, memoryview)) else data
    machine = _Machine(result)
    reader = _Data(stream, start, 0)
    try:
        reader.size = _size_of(stream)
        _run(reader, machine, member)
    except _Truncated as exc:
        result.truncated = True
        if exc.global_tail:  # a GLOBAL cut by the end: the pure-Python unpickler takes it
            _partial_global(exc.global_tail, machine)
        reason = "it ends before STOP (truncated)"
        result.issues.append(
            PickleIssue(member, None, f"cannot follow the pickle: {reason}", "stream")
        )
    except Exception as exc:  # _Unfollowable, a decoding error, OSError: never a crash
        result.issues.append(
            PickleIssue(member, None, f"cannot follow the pickle: {_brief_error(exc)}", "stream")
        )
    with contextlib.suppress(OSError, ValueError):
        stream.seek(result.end or reader.pos)
    _report(result, machine.dotted, member, policy)
    return result


def _run(data: _Data, m: _Machine, member: str) -> None:
    result = m.result
    stack = m.stack
    frame_end: int | None = None
    count = 0
    big_ints = 0
    while True:
        i = data.i
        pos = data.base + i
        if frame_end is not None and pos >= frame_end:
            frame_end = None  # the frame ended cleanly before this opcode
        if i < len(data.buf):  # the opcode byte, without a call
            code = data.buf[i]
            data.i = i + 1
        else:
            code = data.take(1)[0]
        entry = _OPCODES.get(code)
        if entry is None:
            raise _Unfollowable(f"unknown opcode {code:#04x} at byte {pos}")
        count += 1
        if count > MAX_OPCODES:
            raise _Unfollowable(f"more than {MAX_OPCODES:,} opcodes")
        name, kind = entry
        # ---- the argument, read byte for byte as CPython reads it
        arg: object = None
        if kind == "":
            pass
        elif kind == "1":
            arg = data.take(1)[0]
        elif kind == "2" or kind == "4" or kind == "8":
            arg = int.from_bytes(data.take(int(kind)), "little")
        elif kind == "i4":
            arg = int.from_bytes(data.take(4), "little", signed=True)
        elif kind == "f8":
            data.skip(8)
        elif kind == "nl":
            arg = data.line()
        elif kind == "nl2":
            first = data.line()
            try:
                second = data.line()
            except _Truncated as exc:
                raise _Truncated(global_tail=first + exc.tail) from None
            arg = (first, second)
        else:  # a counted payload
            width = int(kind[-1])
            n = int.from_bytes(data.take(width), "little", signed=kind == "ci4")
            if n < 0:
                raise _Unfollowable(f"{name} at byte {pos} with a negative length")
            if n <= _MAX_TEXT and (name in _UNICODE_OPS or name in ("BINSTRING", "SHORT_BINSTRING",
                                                                    "LONG1", "LONG4")):  # fmt: skip
                arg = data.take(n)
            else:
                data.skip(n)
                arg = n
        end = data.base + data.i
        # ---- frames: an opcode must lie wholly inside its frame, or after it
        if frame_end is not None and end > frame_end:
            raise _Unfollowable(
                f"{name} at byte {pos} runs past the end of its FRAME at byte {frame_end}: "
                "CPython's readers disagree on what such a stream runs (frame-boundary trick)"
            )
        # ---- what the opcode does
        if name in _PUSH_ANY:
            stack.append(_ANY)
        elif name in _UNICODE_OPS:
            if isinstance(arg, bytes):
                stack.append(arg.decode("utf-8", "surrogatepass"))
            else:
                stack.append(_ANY)  # longer than any name: skipped unread
        elif name == "BINPUT" or name == "LONG_BINPUT" or name == "PUT" or name == "MEMOIZE":
            if name == "MEMOIZE":
                index = len(m.memo)
            elif name == "PUT":
                index = _digits(arg, name, pos)  # type: ignore[arg-type]
            else:
                index = arg  # type: ignore[assignment]
            if len(stack) <= m.fence():
                raise _Unfollowable(f"{name} with nothing to store at byte {pos}")
            if index > count + _MEMO_SLACK:  # type: ignore[operator]
                raise _Unfollowable(f"{name} to memo slot {index:,} at byte {pos}")
            m.memo[index] = stack[-1]  # type: ignore[index]
        elif name == "BINGET" or name == "LONG_BINGET" or name == "GET":
            index = _digits(arg, name, pos) if name == "GET" else arg  # type: ignore[arg-type]
            if index not in m.memo:
                raise _Unfollowable(f"{name} of memo slot {index} never stored, byte {pos}")
            stack.append(m.memo[index])  # type: ignore[index]
        elif name == "MARK":
            m.marks.append(len(stack))
        elif name == "TUPLE1" or name == "TUPLE2" or name == "TUPLE3":
            m.uses(m.take(int(name[-1]), name, pos))
            stack.append(_ANY)
        elif name in _MARK_OPS:
            m.uses(m.pop_mark(name, pos))
            stack.append(_ANY)
        elif name == "GLOBAL" or name == "INST":
            module, attr = _line_pair(arg, name, pos)  # type: ignore[arg-type]
            found = m.global_(module, attr)
            if name == "GLOBAL":
                stack.append(found)
            else:
                m.uses(m.pop_mark(name, pos))
                m.use(found, "call")
                stack.append(_built(found))
        elif name == "STACK_GLOBAL":
            m.need(2, name, pos)
            module, attr = _name(stack[-2]), _name(stack[-1])
            if module is None or attr is None:
                raise _Unfollowable(f"STACK_GLOBAL at byte {pos} on values it cannot resolve")
            del stack[-2:]
            stack.append(m.global_(module, attr))
        elif name == "REDUCE":
            func, args = m.take(2, name, pos)
            m.use(func, "call")
            m.use(args, "ref")
            stack.append(_built(func))
        elif name == "NEWOBJ" or name == "NEWOBJ_EX":
            items = m.take(2 if name == "NEWOBJ" else 3, name, pos)
            m.use(items[0], "class")
            m.uses(items[1:])
            stack.append(_built(items[0]))
        elif name == "OBJ":
            items = m.pop_mark(name, pos)
            if not items:
                raise _Unfollowable(f"OBJ without a class at byte {pos}")
            m.use(items[0], "call")
            m.uses(items[1:])
            stack.append(_built(items[0]))
        elif name == "BUILD":
            m.need(2, name, pos)
            m.use(stack[-2], "build")  # setting state on a class or function
            m.use(stack.pop(), "ref")
        elif name == "SETITEM" or name == "APPEND":
            n = 3 if name == "SETITEM" else 2
            m.need(n, name, pos)
            m.fill(stack[-n], name)
            m.uses(stack[-n + 1 :])
            del stack[-n + 1 :]
        elif name == "SETITEMS" or name == "APPENDS" or name == "ADDITEMS":
            items = m.pop_mark(name, pos)
            if len(stack) <= m.fence():  # the container must sit above the next mark
                raise _Unfollowable(f"{name} at byte {pos} with nothing to fill")
            if name == "SETITEMS" and len(items) % 2:
                raise _Unfollowable(f"SETITEMS at byte {pos} with an odd number of items")
            m.fill(stack[-1], name)
            m.uses(items)
        elif name == "POP":
            if m.marks and m.marks[-1] == len(stack):
                m.marks.pop()  # CPython pops a mark that sits on top
            else:
                m.use(m.take(1, name, pos)[0], "ref")
        elif name == "POP_MARK":
            m.uses(m.pop_mark(name, pos))
        elif name == "DUP":
            m.need(1, name, pos)
            stack.append(stack[-1])
        elif name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
            stack.append(_string(arg, name, pos))
        elif name == "UNICODE":
            stack.append(codecs.decode(arg[:-1], "raw-unicode-escape"))  # type: ignore[index]
        elif name in ("INT", "LONG", "LONG1", "LONG4", "FLOAT"):
            arg = _number(arg, name, pos)
            if name != "FLOAT" and _big(arg):
                big_ints += 1
                if big_ints > _MAX_BIG_INTS:
                    raise _Unfollowable(f"more than {_MAX_BIG_INTS:,} integers over 2**61")
            stack.append(_ANY)
        elif name == "PERSID" or name == "BINPERSID":
            result.persistent_ids += 1
            if name == "BINPERSID":
                m.use(m.take(1, name, pos)[0], "ref")
            stack.append(_ANY)
        elif name == "READONLY_BUFFER":
            m.need(1, name, pos)
        elif name == "EXT1" or name == "EXT2" or name == "EXT4":
            key = copyreg._inverted_registry.get(arg)  # type: ignore[call-overload]
            if isinstance(key, tuple) and len(key) == 2:
                m.use(m.global_(str(key[0]), str(key[1])), "ref")
            raise _Unfollowable(
                f"{name} at byte {pos}: extension code {arg} names a global through the "
                "copyreg extension registry, which the loading program fills"
            )
        elif name == "PROTO":
            if arg > HIGHEST_PROTOCOL:  # type: ignore[operator]
                raise _Unfollowable(f"unsupported pickle protocol {arg} at byte {pos}")
            m.proto = arg  # type: ignore[assignment]
        elif name == "FRAME":
            if frame_end is not None:
                raise _Unfollowable(
                    f"FRAME at byte {pos} opens inside the frame that ends at byte {frame_end}"
                )
            frame_end = end + arg  # type: ignore[operator]
        elif name == "STOP":
            m.need(1, name, pos)
            m.use(stack.pop(), "ref")
            if frame_end is not None and frame_end > end:
                raise _Unfollowable(
                    f"the FRAME that holds STOP runs on to byte {frame_end}, past STOP at {pos}"
                )
            result.end = end
            return
        else:  # pragma: no cover - every opcode of the table is handled above
            raise _Unfollowable(f"{name} at byte {pos}")


def _line_pair(lines: tuple[bytes, bytes], name: str, pos: int) -> tuple[str, str]:
    """GLOBAL / INST arguments as the C unpickler reads them: two non-empty UTF-8 lines."""
    module, attr = lines
    if len(module) < 2 or len(attr) < 2:
        raise _Unfollowable(f"{name} at byte {pos} with an empty line")
    try:
        return module[:-1].decode("utf-8"), attr[:-1].decode("utf-8")
    except UnicodeDecodeError:
        raise _Unfollowable(f"{name} at byte {pos} whose name is not UTF-8") from None


def _partial_global(tail: bytes, m: _Machine) -> None:
    """The pure-Python unpickler imports ``module.name`` from two lines cut by the end of the
    data (it drops each line's last byte, newline or not): reported, in case it is used."""
    lines = tail.split(b"\n", 1)
    if len(lines) == 2 and lines[0]:
        module, attr = lines[0], lines[1][:-1]
        if attr:
            with contextlib.suppress(UnicodeDecodeError, _Unfollowable):
                m.global_(module.decode("utf-8"), attr.decode("utf-8"))


def _string(arg: object, name: str, pos: int) -> object:
    """A protocol 0-2 byte string: the unpickler decodes it with its ``encoding``."""
    if not isinstance(arg, bytes):
        return _ANY  # too long to be a name
    if name == "STRING":
        text = arg[:-1]
        if len(text) < 2 or text[:1] != text[-1:] or text[:1] not in (b"'", b'"'):
            raise _Unfollowable(f"STRING at byte {pos} without quotes")
        try:
            arg = codecs.escape_decode(text[1:-1])[0]
        except ValueError:
            raise _Unfollowable(f"STRING at byte {pos} with a broken escape") from None
    return _Str8(arg)  # type: ignore[arg-type]


def _name(value: object) -> str | None:
    """The text STACK_GLOBAL reads from a stack value, when the pickle alone decides it."""
    if type(value) is str:
        return value
    if isinstance(value, _Str8) and value.raw.isascii():
        return value.raw.decode("ascii")
    return None


def _number(arg: object, name: str, pos: int) -> object:
    """A protocol 0 number line in the form picklers write it (``-12``, ``12L``, ``1.5``);
    the forms only CPython's C parser takes (``0x1f``, `` 010``) are refused."""
    if not isinstance(arg, bytes) or not arg.endswith(b"\n"):
        return arg  # a binary payload
    text = arg[:-1]
    if name == "FLOAT":
        ok = text.isascii() and "_" not in text.decode("ascii") and not text[:1].isspace()
        try:
            float(text) if ok else None
        except ValueError:
            ok = False
    else:
        digits = text[:-1] if name == "LONG" and text.endswith(b"L") else text
        digits = digits[1:] if digits[:1] in (b"-", b"+") else digits
        ok = digits.isdigit() and digits.isascii()
    if not ok:
        raise _Unfollowable(f"{name} at byte {pos} with {text[:40]!r}")
    return arg


def _big(arg: object) -> bool:
    """An integer of 2**61 or more (which hash-collide)."""
    if isinstance(arg, int):  # a long payload skipped unread
        return True
    raw = bytes(arg)  # type: ignore[call-overload]
    if raw.endswith(b"\n"):  # INT / LONG text
        digits = raw.strip().rstrip(b"L").lstrip(b"+-")
        return len(digits) >= 19
    return abs(int.from_bytes(raw, "little", signed=True)) >= _HASH_MODULUS


def _report(result: ScanResult, dotted: set[str], member: str, policy: Policy) -> None:
    # globals met before a stream breaks off count too: the unpickler runs them as it goes
    for gname, usages in sorted(result.globals.items()):
        shown = gname if len(gname) <= 200 else gname[:199] + "…"
        if gname in dotted and not policy.extra_allows(gname, dotted=True):
            text = f"looks up the attribute path {shown}{_gadget(gname)}"
            result.issues.append(PickleIssue(member, shown, text, "call"))
            continue
        for usage in USAGES:
            if usage in (usages or {"ref"}) and not policy.allows(gname, usage):
                text = _describe(shown, usage) + _gadget(gname)
                result.issues.append(PickleIssue(member, shown, text, usage))
                break


def _brief_error(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:240]


def _describe(name: str, usage: str) -> str:
    """What the pickle does with ``name``, as MG901 says it."""
    if usage == "class":
        text = f"instantiates class {name}, which loading would import and run"
    elif usage == "call":
        text = f"calls {name} while loading"
    elif usage == "build":
        text = f"sets attributes on {name} while loading"
    else:
        text = f"references {name}"
    return text


def is_pickle(head: bytes) -> bool:
    """A pickle with a protocol header (every pickle torch writes starts with one)."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
