"""The scanner against CPython itself, on thousands of generated and mutated opcode streams.

Every stream is unpickled by CPython in a child process (whose memory is capped: a mutated
``LONG_BINPUT`` can ask the C unpickler for gigabytes) with a ``find_class`` that records
``(module, name)`` and hands back a harmless stand-in, read four ways: the C unpickler on a
``BytesIO`` (how ``torch.load`` reads a zip member), on a small-buffered ``BufferedReader``
(``pickle.load`` of a file), on a reader that hands it everything at once (``pickle.loads``),
and the pure-Python unpickler (joblib's). The scanner must report every global any of them
imported, unless it refused the stream as one it cannot follow (a ``"stream"`` issue, MG901):
never a silent pass. Where the scanner accepts a stream, ``pickletools`` must read the same
opcodes up to the same ``STOP``.

The streams are seeded and the same on every run: programs built from opcode snippets
(frames well-formed and not, memo tricks, ``STACK_GLOBAL`` through the memo, ``EXT`` codes,
protocol 0 text, every string opcode) and real pickles of protocols 0-5, mutated (bytes
flipped, inserted, dropped, spliced, truncated, ``FRAME`` headers inserted).
"""

from __future__ import annotations

import base64
import json
import pickle
import pickletools
import random
import struct
import subprocess
import sys

import pytest

from modelgate.loaders.allowlist import Policy, resolve
from modelgate.loaders.pickle_scan import scan

SEED = 20261202
GENERATED = 1500  # programs of random snippets (most break the stack somewhere)
VALID = 2500  # well-formed programs, framed at random opcode boundaries
MUTATED = 3000  # real and well-formed pickles, mutated
EXTENSIONS = {240: ("os", "system"), 300: ("builtins", "eval"), 70000: ("posix", "popen")}

MODULES = ["os", "posix", "builtins", "__builtin__", "collections", "torch._utils", "copy_reg",
           "a", "b.c", "é", "subprocess", "UserDict"]  # fmt: skip
NAMES = ["system", "eval", "OrderedDict", "_rebuild_tensor_v2", "x", "y.z", "popen", "Popen",
         "UserDict", "reduce", "é"]  # fmt: skip

# ---------------------------------------------------------------------------------------------
# CPython, in a child process: stream -> the globals each reader imported
# ---------------------------------------------------------------------------------------------

ORACLE = r"""
import base64, copyreg, io, json, pickle, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))
for code, (module, name) in json.loads(sys.argv[1]).items():
    copyreg.add_extension(module, name, int(code))

class Stand:
    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)
    def __init__(self, *args, **kwargs):
        pass
    def __call__(self, *args, **kwargs):
        return Stand()
    def __setstate__(self, state):
        pass
    def __setitem__(self, key, value):
        pass
    def append(self, value):
        pass
    def extend(self, values):
        pass
    def add(self, value):
        pass

def recorder(base):
    class Recorder(base):
        def find_class(self, module, name):
            SEEN.append((module, name))
            return Stand
        def persistent_load(self, pid):
            return Stand()
    return Recorder

C, PURE = recorder(pickle.Unpickler), recorder(pickle._Unpickler)

class Everything(io.RawIOBase):
    "Hands the C unpickler all the rest on peek(): it reads as pickle.loads does."
    def __init__(self, data):
        self.data, self.pos = data, 0
    def readable(self):
        return True
    def peek(self, n=0):
        return self.data[self.pos:]
    def read(self, n=-1):
        out = self.data[self.pos:] if n < 0 else self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out
    def readinto(self, buf):
        out = self.read(len(buf))
        buf[:len(out)] = out
        return len(out)
    def readline(self, size=-1):
        end = self.data.find(b"\n", self.pos)
        end = len(self.data) if end < 0 else end + 1
        out = self.data[self.pos:end]
        self.pos = end
        return out

def run(cls, stream):
    global SEEN
    SEEN = []
    try:
        cls(stream).load()
    except BaseException:
        return [SEEN, False]
    return [SEEN, True]

out = []
for line in sys.stdin:
    data = base64.b64decode(line)
    size = 1 + data[-1] % 32 if data else 1
    out.append({
        "bytesio": run(C, io.BytesIO(data)),
        "buffered": run(C, io.BufferedReader(io.BytesIO(data), buffer_size=size)),
        "loads": run(C, Everything(data)),
        "pure": run(PURE, io.BytesIO(data)),
    })
print(json.dumps(out))
"""

# ---------------------------------------------------------------------------------------------
# the streams
# ---------------------------------------------------------------------------------------------


def _text(rng: random.Random, value: str) -> bytes:
    raw = value.encode("utf-8")
    kind = rng.randrange(8)
    if kind == 0:
        return b"X" + struct.pack("<I", len(raw)) + raw
    if kind == 1:
        return b"\x8c" + bytes([len(raw)]) + raw
    if kind == 2:
        return b"\x8d" + struct.pack("<Q", len(raw)) + raw
    if kind == 3:
        return b"V" + value.encode("raw-unicode-escape") + b"\n"
    if kind == 4:
        return b"S" + repr(raw)[1:].encode() + b"\n"  # protocol 0 STRING, quoted, escaped
    if kind == 5:
        return b"T" + struct.pack("<i", len(raw)) + raw
    if kind == 6:
        return b"U" + bytes([len(raw)]) + raw
    return b"\x8c" + bytes([len(raw)]) + raw + b"\x94"  # and memoized


def _index(rng: random.Random) -> int:
    return rng.choice([0, 1, 2, 3, rng.randrange(8), rng.randrange(300)])


def _put(rng: random.Random) -> bytes:
    i = _index(rng)
    return rng.choice([b"q" + bytes([i % 256]), b"r" + struct.pack("<I", i), b"\x94",
                       b"p%d\n" % i])  # fmt: skip


def _get(rng: random.Random) -> bytes:
    i = _index(rng)
    return rng.choice([b"h" + bytes([i % 256]), b"j" + struct.pack("<I", i), b"g%d\n" % i])


def _snippet(rng: random.Random, depth: int = 0) -> bytes:
    module, name = rng.choice(MODULES), rng.choice(NAMES)
    kind = rng.randrange(24)
    if kind == 0:
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"
    if kind == 1:
        return _text(rng, module) + _text(rng, name) + b"\x93"
    if kind == 2:  # STACK_GLOBAL through the memo
        return (_text(rng, module) + b"q\x07" + b"0" + _text(rng, name) + b"q\x08" + b"0"
                + b"h\x07h\x08\x93")  # fmt: skip
    if kind == 3:
        return _text(rng, rng.choice(MODULES + NAMES))
    if kind == 4:
        return _put(rng)
    if kind == 5:
        return _get(rng)
    if kind == 6:
        code = rng.choice([*EXTENSIONS, 1, 5, 255])
        if code < 256:
            return b"\x82" + bytes([code])
        if code < 65536:
            return b"\x83" + struct.pack("<H", code)
        return b"\x84" + struct.pack("<i", code)
    if kind == 7:
        return b"("
    if kind == 8:
        return rng.choice([b"t", b"l", b"d", b"\x91", b"1", b"e", b"u", b"\x90", b"o"])
    if kind == 9:
        return rng.choice([b"R", b"\x81", b"\x92", b"b", b"a", b"s", b"0", b"2"])
    if kind == 10:
        return rng.choice([b")", b"]", b"}", b"\x8f", b"N", b"\x88", b"\x89", b"K\x05"])
    if kind == 11:
        return rng.choice([b"\x85", b"\x86", b"\x87"])
    if kind == 12:  # a call: MARK args TUPLE REDUCE
        return _snippet(rng, depth + 1) + b"(" + _text(rng, "arg") + b"tR"
    if kind == 13:
        return b"(" + _text(rng, "arg") + b"i" + module.encode() + b"\n" + name.encode() + b"\n"
    if kind == 14:
        return b"\x80" + bytes([rng.choice([0, 1, 2, 3, 4, 5, 5, 6])])
    if kind == 15 and depth < 2:  # a well-formed frame around a few snippets
        body = b"".join(_snippet(rng, depth + 1) for _ in range(rng.randrange(1, 5)))
        return b"\x95" + struct.pack("<Q", len(body)) + body
    if kind == 16 and depth < 2:  # an ill-formed one: the length is off
        body = b"".join(_snippet(rng, depth + 1) for _ in range(rng.randrange(1, 5)))
        return b"\x95" + struct.pack("<Q", max(0, len(body) + rng.randint(-6, 6))) + body
    if kind == 17:
        return rng.choice([b"I%d\n", b"L%dL\n", b"F%d.5\n"]) % rng.randrange(-5, 300)
    if kind == 18:
        return b"P" + name.encode() + b"\n" + rng.choice([b"", b"0"])
    if kind == 19:
        return b"B" + struct.pack("<I", 3) + b"abc"
    if kind == 20:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
    if kind == 21:
        return b"\x8a\x02\xff\x7f"
    if kind == 22:
        return b"G" + struct.pack(">d", 1.5)
    return b"."


def _expr(rng: random.Random, memo: list[int], depth: int = 0) -> list[bytes]:
    """Opcodes (one per item) that push exactly one value."""
    module, name = rng.choice(MODULES), rng.choice(NAMES)
    kind = rng.randrange(9 if depth < 3 else 3)
    if kind == 0:
        out = [_text(rng, rng.choice(MODULES + NAMES))]
    elif kind == 1:
        out = [b"c" + module.encode() + b"\n" + name.encode() + b"\n"]
    elif kind == 2 and memo:
        out = [b"h" + bytes([rng.choice(memo)])]
    elif kind == 2:
        out = [rng.choice([b"N", b"K\x07", b"\x88", b"I12\n", b"G" + struct.pack(">d", 2.5)])]
    elif kind == 3:  # STACK_GLOBAL, its strings through the memo half the time
        first, second = _text(rng, module), _text(rng, name)
        if rng.random() < 0.5:
            a, b = len(memo) + 10, len(memo) + 11
            out = [first, b"q" + bytes([a]), b"0", second, b"q" + bytes([b]), b"0",
                   b"h" + bytes([a]), b"h" + bytes([b]), b"\x93"]  # fmt: skip
        else:
            out = [first, second, b"\x93"]
    elif kind == 4:  # a call
        out = [*_expr(rng, memo, depth + 1), b"("]
        for _ in range(rng.randrange(3)):
            out += _expr(rng, memo, depth + 1)
        out += [b"t", b"R"]
    elif kind == 5:  # a container
        out = [b"("]
        for _ in range(rng.randrange(4)):
            out += _expr(rng, memo, depth + 1)
        out += [rng.choice([b"l", b"t", b"\x91"])]
    elif kind == 6:  # NEWOBJ / BUILD
        out = [*_expr(rng, memo, depth + 1), b")", b"\x81"]
        if rng.random() < 0.5:
            out += [b"}", b"b"]
    elif kind == 7:  # INST
        out = [b"(", *_expr(rng, memo, depth + 1)]
        out += [b"i" + module.encode() + b"\n" + name.encode() + b"\n"]
    else:  # a dict filled with SETITEMS
        out = [b"}", b"("]
        for _ in range(rng.randrange(3)):
            out += [_text(rng, "k"), *_expr(rng, memo, depth + 1)]
        out += [b"u"]
    if rng.random() < 0.3 and len(memo) < 200:
        memo.append(len(memo))
        out.append(b"q" + bytes([memo[-1]]) if rng.random() < 0.5 else b"\x94")
    return out


def valid(rng: random.Random) -> bytes:
    """A well-formed program: protocol header, a few values popped, one returned, framed at
    random opcode boundaries (sometimes with a length that is off)."""
    memo: list[int] = []
    ops: list[bytes] = [b"\x80" + bytes([rng.choice([2, 3, 4, 5])])]
    for _ in range(rng.randrange(1, 4)):
        ops += [*_expr(rng, memo), b"0"]
    ops += [*_expr(rng, memo), b"."]
    if rng.random() < 0.6:  # frames
        out, i = [ops[0]], 1
        while i < len(ops):
            j = min(len(ops), i + rng.randrange(1, 8))
            body = b"".join(ops[i:j])
            if rng.random() < 0.7:
                length = len(body) if rng.random() < 0.8 else max(0, len(body) + rng.randint(-4, 4))
                out.append(b"\x95" + struct.pack("<Q", length))
            out.append(body)
            i = j
        return b"".join(out)
    return b"".join(ops)


def generated(rng: random.Random) -> bytes:
    body = b"".join(_snippet(rng) for _ in range(rng.randrange(1, 12)))
    head = b"\x80" + bytes([rng.choice([2, 3, 4, 5])]) if rng.random() < 0.7 else b""
    return head + body + (b"." if rng.random() < 0.9 else b"")


class _Reduced:
    """An object that pickles as a call of a global (as attacks and real classes do)."""

    def __init__(self, func: object, args: tuple[object, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def _seeds() -> list[bytes]:
    import argparse
    import collections
    import datetime
    import fractions

    objects = [
        {"a": [1, 2, (3, "x")], "b": b"y" * 40, "c": 1.5, "d": None, "e": True},
        collections.OrderedDict([("w", [0.5] * 3), ("s", "é" * 5)]),
        [datetime.date(2024, 1, 2), fractions.Fraction(1, 3), argparse.Namespace(lr=0.1)],
        _Reduced(print, ("hi",)),
        [_Reduced(len, ("abc",)), {frozenset({1, 2}), 3}, bytearray(b"z")],
        ["x" * 70_000],  # a string longer than the scanner decodes
    ]
    out = []
    for obj in objects:
        for protocol in range(6):
            out.append(pickle.dumps(obj, protocol=protocol))
            if protocol >= 4:
                out.append(pickle._dumps(obj, protocol=protocol))
    return out


def mutated(rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds)[:4000])
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(7)
        at = rng.randrange(len(data) + 1)
        if kind == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif kind == 1:
            data[at:at] = bytes([rng.randrange(256)])
        elif kind == 2:
            del data[at : at + rng.randrange(1, 4)]
        elif kind == 3:
            data = data[: max(1, at)]
        elif kind == 4:  # a FRAME header, its length near the rest
            rest = len(data) - at
            data[at:at] = b"\x95" + struct.pack("<Q", max(0, rest + rng.randint(-8, 2)))
        elif kind == 5:  # a snippet spliced in
            data[at:at] = _snippet(rng)
        else:  # a slice repeated
            end = min(len(data), at + rng.randrange(1, 16))
            data[at:at] = data[at:end]
    return bytes(data)


def _streams() -> list[bytes]:
    rng = random.Random(SEED)
    seeds = _seeds()
    streams = [generated(rng) for _ in range(GENERATED)]
    programs = [valid(rng) for _ in range(VALID)]
    streams += programs
    streams += [mutated(rng, seeds + programs[:200]) for _ in range(MUTATED)]
    return seeds + streams


# ---------------------------------------------------------------------------------------------
# the comparison
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def verdicts() -> tuple[list[bytes], list[dict[str, list[list[str]]]]]:
    streams = _streams()
    lines = "".join(base64.b64encode(s).decode() + "\n" for s in streams)
    child = subprocess.run(
        [sys.executable, "-c", ORACLE, json.dumps(EXTENSIONS)],
        input=lines, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-2000:]
    return streams, json.loads(child.stdout)


@pytest.fixture()
def extensions():  # type: ignore[no-untyped-def]
    """The same copyreg registrations as in CPython's process, so EXT codes can be named."""
    import copyreg

    for code, (module, name) in EXTENSIONS.items():
        copyreg.add_extension(module, name, code)
    yield
    for code, (module, name) in EXTENSIONS.items():
        copyreg.remove_extension(module, name, code)


def _reported(names: set[str], module: str, name: str) -> bool:
    return resolve(module, name, 2) in names or resolve(module, name, 5) in names


def _linear_globals(data: bytes) -> tuple[list[tuple[str, str]], int] | None:
    """GLOBAL / INST names as ``pickletools`` reads them, and where STOP ends (None when it
    cannot read the stream; ``([], -1)`` when it cannot decode a non-ASCII name, which the
    unpickler reads as UTF-8)."""
    found = []
    try:
        for op, arg, pos in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST") and "\\" not in arg:
                module, _, name = arg.partition(" ")
                found.append((module, name))
            if op.name == "STOP":
                return found, pos + 1
    except UnicodeDecodeError:
        return [], -1
    except Exception:
        return None
    return None


def test_scanner_reports_every_global_cpython_imports(verdicts, extensions) -> None:  # type: ignore[no-untyped-def]
    streams, seen = verdicts
    policy = Policy()
    refused = agreed = imported = loaded = refused_loaded = 0
    misses: list[str] = []
    for data, modes in zip(streams, seen, strict=True):
        result = scan(data, "m", policy)
        stream_issue = any(i.usage == "stream" for i in result.issues)
        names = set(result.globals)
        missed = sorted(
            {f"{mode}: {m}.{n}" for mode, (pairs, _ok) in modes.items() for m, n in pairs
             if not _reported(names, m, n)}
        )  # fmt: skip
        imported += any(pairs for pairs, _ok in modes.values())
        ok = modes["bytesio"][1]
        loaded += ok
        if stream_issue:
            refused += 1
            refused_loaded += ok
        elif missed:
            misses.append(f"{data!r}: {missed}")
        else:
            agreed += 1
            linear = _linear_globals(data)
            assert linear is not None and linear[1] in (result.end, -1), data
            assert all(_reported(names, m, n) for m, n in linear[0]), data
    total = len(streams)
    print(f"\n{total} streams: {agreed} followed and in agreement, {refused} refused as "
          f"unfollowable ({refused_loaded} of them loaded by CPython), {len(misses)} missed; "
          f"CPython loaded {loaded}, imported a global in {imported}")  # fmt: skip
    assert misses == [], "\n".join(misses[:10])
    assert agreed + refused == total
    assert total >= 7000 and agreed > 2000 and imported > 3000


def test_real_pickles_are_followed_not_refused() -> None:
    """Refusing is agreement only for odd streams: every real pickle is read through."""
    for data in _seeds():
        result = scan(data, "m", Policy())
        assert not any(i.usage == "stream" for i in result.issues), (data[:60], result.issues)
        assert result.end == len(data)
