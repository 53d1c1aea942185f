"""The static pickle scanner: which globals a pickle names and how, before anything runs.

:func:`scan` walks the opcode stream (``pickletools.genops``), simulating the stack far enough
to resolve every global, including ``STACK_GLOBAL`` fed through the memo, and records how each
is used (called, instantiated as a class, or only referenced). Anything the
:class:`~modelgate.loaders.allowlist.Policy` does not allow is a :class:`PickleIssue`; an
opcode stream it cannot follow is one too (fail closed). Nothing is unpickled here: the
scanner reads opcodes, never objects, so it is safe on any bytes.
"""

from __future__ import annotations

import io
import pickletools
from dataclasses import dataclass, field
from typing import BinaryIO

from modelgate.graph import PickleIssue
from modelgate.loaders.allowlist import Policy, resolve
from modelgate.loaders.bounds import MAX_GLOBALS

_STRING_OPS = frozenset(
    {
        "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
        "SHORT_BINUNICODE", "BINUNICODE8",
    }
)  # fmt: skip
_EXT_OPS = frozenset({"EXT1", "EXT2", "EXT4"})
MAX_OPCODES = 50_000_000  # a 256 MB pickle of tensors has far fewer
_MEMO_SLACK = 1024  # memo indices beyond (opcodes so far + this) are a memory bomb
# Integers below 2**61 - 1 hash to themselves; above, distinct ones can share a hash, and a
# dict keyed by thousands of them takes minutes to build. Checkpoints hold almost none.
_HASH_MODULUS = 2**61 - 1
_MAX_BIG_INTS = 10_000
_INT_OPS = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"})
# How a global is used, most dangerous first; a report names the first one not allowed.
USAGES = ("call", "build", "ref", "class")


class _Global:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _Mark:
    pass


class _Built:
    """What calling or instantiating a global left on the stack (to see what fills it)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _built(value: object) -> object:
    return _Built(value.name) if isinstance(value, _Global) else _ANY


_FILL_OPS = {"SETITEM": "items", "SETITEMS": "items", "APPEND": "appends", "APPENDS": "appends"}


_MARK = _Mark()
_ANY = object()


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


def _use(result: ScanResult, value: object, usage: str) -> None:
    if isinstance(value, _Global):
        result.globals.setdefault(value.name, set()).add(usage)


def _line_pair(stream: BinaryIO, pos: int) -> tuple[str, str]:
    """GLOBAL / INST arguments exactly as the unpickler reads them (two UTF-8 lines)."""
    here = stream.tell()
    stream.seek(pos + 1)
    module = stream.readline()
    name = stream.readline()
    stream.seek(here)
    if not module.endswith(b"\n") or not name.endswith(b"\n"):
        raise _Unfollowable(f"global at byte {pos} without its two lines")
    return module[:-1].decode("utf-8"), name[:-1].decode("utf-8")


def _size_of(stream: BinaryIO) -> int:
    here = stream.tell()
    end = stream.seek(0, 2)
    stream.seek(here)
    return end


def scan(
    data: bytes | memoryview | BinaryIO, member: str, policy: Policy, start: int = 0
) -> ScanResult:
    """Statically list a pickle's globals and check them against ``policy``.

    ``data`` is the pickle's bytes or a seekable binary file (read as far as the pickle goes,
    so a multi-GB legacy checkpoint is not read whole). ``start`` lets a caller scan one of
    several pickles written back to back (the legacy ``torch.save`` layout);
    ``ScanResult.end`` tells where the next one begins.
    """
    result = ScanResult()
    stream: BinaryIO = io.BytesIO(data) if isinstance(data, (bytes, memoryview)) else data
    size = _size_of(stream)
    stream.seek(start)
    stack: list[object] = []
    memo: dict[int, object] = {}
    dotted: set[str] = set()
    proto = 0
    count = 0
    big_ints = 0
    try:
        for opcode, arg, pos in pickletools.genops(stream):
            count += 1
            if count > MAX_OPCODES:
                raise _Unfollowable(f"more than {MAX_OPCODES:,} opcodes")
            name = opcode.name
            if name in _STRING_OPS:
                stack.append(arg)
            elif name in _INT_OPS:
                if type(arg) is int and abs(arg) >= _HASH_MODULUS:
                    big_ints += 1
                    if big_ints > _MAX_BIG_INTS:
                        raise _Unfollowable(f"more than {_MAX_BIG_INTS:,} integers over 2**61")
                stack.append(_ANY)
            elif name == "PROTO":
                proto = int(arg)
            elif name in ("GLOBAL", "INST"):
                module, attr = _line_pair(stream, pos)
                found = _Global(resolve(module, attr, proto))
                if "." in attr:
                    dotted.add(found.name)
                if name == "GLOBAL":
                    stack.append(found)
                else:
                    for item in _pop_mark(stack, name, pos):
                        _use(result, item, "ref")
                    _use(result, found, "call")
                    stack.append(_built(found))
            elif name == "STACK_GLOBAL":
                if len(stack) < 2 or not all(type(v) is str for v in stack[-2:]):
                    raise _Unfollowable(f"STACK_GLOBAL at byte {pos} on values it cannot resolve")
                attr = stack.pop()
                module = stack.pop()
                found = _Global(resolve(module, attr, proto))  # type: ignore[arg-type]
                if "." in attr:  # type: ignore[operator]
                    dotted.add(found.name)
                stack.append(found)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                if not stack or stack[-1] is _MARK:
                    raise _Unfollowable(f"{name} with nothing to store at byte {pos}")
                index = len(memo) if name == "MEMOIZE" else int(arg)
                if index > count + _MEMO_SLACK:
                    raise _Unfollowable(f"{name} to memo slot {index:,} at byte {pos}")
                memo[index] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if int(arg) not in memo:
                    raise _Unfollowable(f"{name} of memo slot {arg} never stored, byte {pos}")
                stack.append(memo[int(arg)])
            elif name == "DUP":
                _need(stack, 1, name, pos)
                stack.append(stack[-1])
            elif name == "POP":
                if not stack:
                    raise _Unfollowable(f"POP on an empty stack at byte {pos}")
                _use(result, stack.pop(), "ref")
            elif name in _EXT_OPS:
                raise _Unfollowable(f"{name} (copyreg extension registry) at byte {pos}")
            elif name == "REDUCE":
                _need(stack, 2, name, pos)
                _use(result, stack[-2], "call")
                _use(result, stack[-1], "ref")
                made = _built(stack[-2])
                del stack[-2:]
                stack.append(made)
            elif name in ("NEWOBJ", "NEWOBJ_EX"):
                n = 2 if name == "NEWOBJ" else 3
                _need(stack, n, name, pos)
                _use(result, stack[-n], "class")
                for item in stack[-n + 1 :]:
                    _use(result, item, "ref")
                made = _built(stack[-n])
                del stack[-n:]
                stack.append(made)
            elif name == "OBJ":
                items = _pop_mark(stack, name, pos)
                if not items:
                    raise _Unfollowable(f"OBJ without a class at byte {pos}")
                _use(result, items[0], "call")
                for item in items[1:]:
                    _use(result, item, "ref")
                stack.append(_built(items[0]))
            elif name == "BUILD":
                _need(stack, 2, name, pos)
                _use(result, stack[-2], "build")  # setting state on a class or function
                _use(result, stack[-1], "ref")
                stack.pop()
            elif name in ("PERSID", "BINPERSID"):
                result.persistent_ids += 1
                if name == "BINPERSID":
                    _need(stack, 1, name, pos)
                    _use(result, stack.pop(), "ref")
                stack.append(_ANY)
            elif name in _FILL_OPS:
                target = _fill_target(stack, name)
                _generic(stack, opcode, result, pos)
                if isinstance(target, _Built):
                    result.filled.setdefault(target.name, set()).add(_FILL_OPS[name])
                    stack[-1] = target  # the container stays what it was
            elif name == "STOP":
                _need(stack, 1, name, pos)
                _use(result, stack[-1], "ref")
                result.end = stream.tell()
                break
            else:
                _generic(stack, opcode, result, pos)
            if len(result.globals) > MAX_GLOBALS:
                raise _Unfollowable(f"more than {MAX_GLOBALS:,} distinct globals")
        else:
            raise _Unfollowable("the stream ends without STOP")
    except (_Unfollowable, ValueError, EOFError, KeyError, IndexError, TypeError,
            OverflowError, UnicodeDecodeError, MemoryError) as exc:  # fmt: skip
        result.truncated = stream.tell() >= size
        reason = "it ends before STOP (truncated)" if result.truncated else _brief_error(exc)
        result.issues.append(
            PickleIssue(member, None, f"cannot follow the pickle: {reason}", "stream")
        )
    # globals met before a stream breaks off count too: the unpickler runs them as it goes
    for gname, usages in sorted(result.globals.items()):
        shown = gname if len(gname) <= 200 else gname[:199] + "…"
        if gname in dotted and not policy.extra_allows(gname, dotted=True):
            result.issues.append(
                PickleIssue(member, shown, f"looks up the attribute path {shown}", "call")
            )
            continue
        for usage in USAGES:
            if usage in usages and not policy.allows(gname, usage):
                result.issues.append(PickleIssue(member, shown, _describe(shown, usage), usage))
                break
    return result


def _brief_error(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def _describe(name: str, usage: str) -> str:
    if usage == "class":
        return f"instantiates class {name}, which loading would import and run"
    if usage == "call":
        return f"calls {name} while loading"
    if usage == "build":
        return f"sets attributes on {name} while loading"
    return f"references {name}"


class _Unfollowable(Exception):
    pass


def _fill_target(stack: list[object], name: str) -> object:
    """The container SETITEM(S) / APPEND(S) fill (None when the stack is malformed)."""
    if name in ("SETITEM", "APPEND"):
        n = 3 if name == "SETITEM" else 2
        return stack[-n] if len(stack) >= n else None
    for i in range(len(stack) - 1, 0, -1):
        if stack[i] is _MARK:
            return stack[i - 1]
    return None


def _need(stack: list[object], n: int, name: str, pos: int) -> None:
    if len(stack) < n or any(v is _MARK for v in stack[-n:]):
        raise _Unfollowable(f"{name} at byte {pos} needs {n} stack values")


def _pop_mark(stack: list[object], name: str, pos: int) -> list[object]:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1 :]
            del stack[i:]
            return items
    raise _Unfollowable(f"{name} at byte {pos} without a MARK")


def _generic(
    stack: list[object], opcode: pickletools.OpcodeInfo, result: ScanResult, pos: int
) -> None:
    """Apply an opcode's declared stack effect; globals consumed here count as references."""
    before = opcode.stack_before
    if pickletools.markobject in before:
        # everything down to the mark is consumed (plus what sits below it, e.g. the list)
        items = _pop_mark(stack, opcode.name, pos)
        for item in items:
            _use(result, item, "ref")
        below = before.index(pickletools.markobject)
        if below:
            _need(stack, below, opcode.name, pos)
        for _ in range(below):
            _use(result, stack.pop(), "ref")
    else:
        n = len(before)
        if n:
            _need(stack, n, opcode.name, pos)
            for item in stack[-n:]:
                _use(result, item, "ref")
            del stack[-n:]
    for produced in opcode.stack_after:
        stack.append(_MARK if produced is pickletools.markobject else _ANY)
    # containers that are appended to / set on stay on the stack (they are in stack_after)


def is_pickle(head: bytes) -> bool:
    """A pickle with a protocol header (every pickle torch writes starts with one)."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
