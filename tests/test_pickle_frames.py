"""fickling's frame-boundary trick, in every place a pickle sits: refused as MG901, never passed.

A protocol 4 pickle cuts its opcodes into ``FRAME``\\ s. CPython's C unpickler reads a frame
into a buffer; when an opcode reads past the frame's end it drops what is left of the buffer
and reads on from the file (a ``BytesIO``, as ``torch.load`` reads a zip member). A linear
reader (``pickletools``, and modelgate before this fix) reads on from the next byte. Here a
``BINBYTES`` opens a two-byte frame: read linearly its length is ``07 01 00 00`` and the bytes
that follow (a ``GLOBAL os system`` / ``REDUCE``) are its payload; the C unpickler drops the
``07``, reads its length from the file (one byte) and runs them. Put in front of a real pickle,
the file loads as that pickle's object and the command has run.

Each file is proven live under its real loader (the command creates a marker file), then
``modelgate check`` must say MG901 "cannot follow" and leave no marker.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from test_hostile import pickle_spans

from modelgate.loaders import Policy
from modelgate.loaders.pickle_scan import scan

# ---------------------------------------------------------------------------------------------
# the trick
# ---------------------------------------------------------------------------------------------


def payload(command: str) -> bytes:
    """GLOBAL os.system, UNICODE command, TUPLE1, REDUCE, POP: the stack is as it was."""
    return b"cos\nsystem\nV" + command.encode() + b"\n\x85R0"


def frame_trick(command: str, real: bytes) -> bytes:
    """``real`` with the trick in front: what a linear reader skips as bytes, C runs."""
    body = payload(command)
    k = max(1, -(-(len(body) + 2) // 255))  # C's length: k; the linear one: 7 + 256 * k
    assert k < 256
    head = b"\x80\x04\x95" + struct.pack("<Q", 2) + b"B\x07"  # FRAME of 2 bytes: "B", 0x07
    after = bytes([k, 0, 0, 0]) + b"P" * k + body  # C: length k, k payload bytes, the code
    filler = 3 + 7 + 256 * k - len(after)  # the linear payload ends here
    assert filler >= 2
    return head + after + b"(" + b"N" * (filler - 2) + b"1" + real  # MARK ... POP_MARK


def test_the_trick_reads_differently_in_cpython_and_linearly(tmp_path: Path) -> None:
    """The premise: ``pickle.loads`` (bytes, linear) and ``pickle.load`` of a ``BytesIO`` run
    different programs from the same bytes, and both return the real object."""
    marker = tmp_path / "ran"
    data = frame_trick(f"touch {marker}", pickle.dumps({"w": [1, 2]}, protocol=2))
    assert pickle.loads(data) == {"w": [1, 2]} and not marker.exists()
    (tmp_path / "f").write_bytes(data)
    load = f"pickle.load(io.BytesIO(open({str(tmp_path / 'f')!r}, 'rb').read()))"
    code = f"import io, pickle; print({load})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "{'w': [1, 2]}" and marker.exists()


def test_the_scanner_refuses_it_as_unfollowable() -> None:
    data = frame_trick("true", pickle.dumps({"w": [1, 2]}, protocol=2))
    result = scan(data, "data.pkl", Policy())
    assert [(i.global_name, i.usage) for i in result.issues] == [(None, "stream")]
    assert result.issues[0].detail == (
        "cannot follow the pickle: BINBYTES at byte 11 runs past the end of its FRAME at byte "
        "13: CPython's readers disagree on what such a stream runs (frame-boundary trick)"
    )
    assert not result.truncated


def framed(body: bytes, length: int) -> bytes:
    return b"\x80\x05\x95" + struct.pack("<Q", length) + body


STRADDLES = {  # fickling's variants: each opcode runs past its frame's end
    "binbytes": framed(b"B" + struct.pack("<I", 20) + b"A" * 20, 5) + b".",
    "short_binunicode": framed(b"\x8c\x14" + b"A" * 20, 3) + b".",
    "global_module": framed(b"cmacos\nsystem\n", 4) + b".",
    "global_attr": framed(b"cos\nsystem\n", 7) + b".",  # C reads os.tem from a BytesIO
    "unicode": framed(b"Vhello world\n", 5) + b".",
    "binint": framed(b"J" + struct.pack("<i", 7), 2) + b".",
    "frame_in_frame": framed(b"N\x95" + struct.pack("<Q", 2) + b"N", 30) + b".",
    "frame_past_stop": framed(b"N.", 40) + b"\0" * 40,
}


@pytest.mark.parametrize("name", sorted(STRADDLES))
def test_every_frame_straddle_is_refused(name: str) -> None:
    result = scan(STRADDLES[name], "m", Policy())
    assert any(i.usage == "stream" and "FRAME" in i.detail for i in result.issues), result.issues


def test_global_split_by_a_frame_names_what_a_bytesio_reader_imports() -> None:
    """CPython on a ``BytesIO`` imports ``os.tem`` here, a linear reader ``os.system``: the
    scanner reports the stream, not a guess."""
    seen = []

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            seen.append((module, name))
            return print

    Recorder(io.BytesIO(STRADDLES["global_attr"])).load()
    assert seen == [("os", "tem")]
    assert [i.usage for i in scan(STRADDLES["global_attr"], "m", Policy()).issues] == ["stream"]


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize(
    "obj",
    [
        [1, 2, 3],
        b"x" * 100_000,  # written outside any frame
        [1, b"y" * 100_000, 2],  # framed, unframed, framed again
        list(range(200_000)),  # several full frames
        {"a": [1, 2, {"b": (3, 4)}], "c": "é" * 70_000},
    ],
    ids=["small", "large-bytes", "interleaved", "many-frames", "nested"],
)
def test_well_formed_frames_are_clean(obj: object, protocol: int) -> None:
    for data in (pickle.dumps(obj, protocol=protocol), pickle._dumps(obj, protocol=protocol)):
        result = scan(data, "m", Policy())
        assert result.issues == [] and result.end == len(data)


# ---------------------------------------------------------------------------------------------
# the trick where modelgate missed it, and where it was MG902: proven live, then checked
# ---------------------------------------------------------------------------------------------

LIVENESS = """
import io, json, os, pickle, sys
import torch
out = {}
for name, (live, marker) in json.loads(sys.argv[1]).items():
    try:
        exec(live)
    except BaseException as exc:
        print(name, type(exc).__name__, exc, file=sys.stderr)
    out[name] = os.path.exists(marker)
    if out[name]:
        os.unlink(marker)
print(json.dumps(out))
"""


def _replace_member(src: bytes, suffix: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(src)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            replaced = info.filename.endswith(suffix)
            zout.writestr(info.filename, data if replaced else zin.read(info))
    return out.getvalue()


def _data_pkl(archive: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        return zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str, Path]]:
    """name -> (file, Python that loads it as its real loader would, marker)."""
    torch = pytest.importorskip("torch")
    import modelfactory

    folder = tmp_path_factory.mktemp("frames")
    state = {"fc.weight": torch.ones(2, 2), "fc.bias": torch.zeros(2)}
    out: dict[str, tuple[Path, str, Path]] = {}

    def marker(name: str) -> Path:
        return folder / f"{name}.marker"

    # a torch.save zip: torch.load reads data.pkl through a BytesIO
    buf = io.BytesIO()
    torch.save(state, buf)
    good = buf.getvalue()
    evil = frame_trick(f"touch {marker('zip')}", _data_pkl(good))
    path = folder / "zip.pt"
    path.write_bytes(_replace_member(good, "data.pkl", evil))
    out["zip"] = (path, f"torch.load({str(path)!r}, weights_only=False)", marker("zip"))

    # .pt2 sample inputs: torch.export.load falls back to weights_only=False (FRAME is not
    # an opcode the weights_only unpickler reads), then reads data.pkl through a BytesIO
    base = modelfactory.Factory(folder).pt2(modelfactory.build("clean").eval(), name="base.pt2")
    with zipfile.ZipFile(base) as zf:
        name = next(n for n in zf.namelist() if n.endswith("sample_inputs/model.pt"))
        sample = zf.read(name)
    evil = frame_trick(f"touch {marker('pt2')}", _data_pkl(sample))
    path = folder / "pt2.pt2"
    path.write_bytes(
        _replace_member(base.read_bytes(), name, _replace_member(sample, "data.pkl", evil))
    )
    out["pt2"] = (path, f"torch.export.load({str(path)!r})", marker("pt2"))

    # a raw pickle, loaded by pickle.load from memory
    path = folder / "raw.pkl"
    path.write_bytes(frame_trick(f"touch {marker('raw')}", pickle.dumps(state, protocol=2)))
    live = f"pickle.load(io.BytesIO(open({str(path)!r}, 'rb').read()))"
    out["raw"] = (path, live, marker("raw"))

    # the legacy torch.save layout, the trick in front of the object pickle
    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=False)
    legacy = buf.getvalue()
    start, end = pickle_spans(legacy, 5)[3]
    evil = frame_trick(f"touch {marker('legacy')}", legacy[start:end])
    path = folder / "legacy.pt"
    path.write_bytes(legacy[:start] + evil + legacy[end:])
    live = f"torch.load(io.BytesIO(open({str(path)!r}, 'rb').read()), weights_only=False)"
    out["legacy"] = (path, live, marker("legacy"))
    return out


@pytest.fixture(scope="module")
def runs(cases: dict[str, tuple[Path, str, Path]]) -> tuple[dict[str, bool], dict]:
    args = json.dumps({n: (live, str(m)) for n, (_, live, m) in cases.items()})
    live = subprocess.run(
        [sys.executable, "-c", LIVENESS, args], capture_output=True, text=True, timeout=300
    )
    proven = json.loads(live.stdout.strip().splitlines()[-1])
    check = subprocess.run(
        [sys.executable, "-m", "modelgate", "check", "--format", "json",
         *(str(path) for path, _, _ in cases.values())],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "Traceback" not in check.stderr
    models = dict(zip(cases, json.loads(check.stdout)["models"], strict=True))
    return proven, models


@pytest.mark.parametrize("name", ["zip", "pt2", "raw", "legacy"])
def test_trick_runs_under_its_loader_and_modelgate_refuses_it(
    cases: dict[str, tuple[Path, str, Path]], runs: tuple[dict[str, bool], dict], name: str
) -> None:
    proven, models = runs
    assert proven[name], f"{name}: the payload did not run under the real loader"
    findings = models[name]["findings"]
    assert models[name]["passed"] is False
    assert [f["rule"] for f in findings] == ["MG901"], findings
    assert "cannot follow the pickle" in findings[0]["message"]
    assert "runs past the end of its FRAME" in findings[0]["message"]
    assert not cases[name][2].exists()


# ---------------------------------------------------------------------------------------------
# known gadgets are named as attacks, unknown classes as classes
# ---------------------------------------------------------------------------------------------


def _call(module: str, name: str) -> bytes:
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n)R."


GADGETS = [
    (_call("os", "system"), "calls os.system while loading: a known code-execution gadget "
     "(runs a shell command)"),
    (_call("posix", "system"), "calls posix.system while loading: a known code-execution "
     "gadget (runs a shell command)"),
    (_call("__builtin__", "eval"), "calls builtins.eval while loading: a known code-execution "
     "gadget (evaluates a Python expression)"),
    (_call("subprocess", "check_output"), "calls subprocess.check_output while loading: a "
     "known code-execution gadget (starts a process)"),
    (_call("torch.hub", "load"), "calls torch.hub.load while loading: a known code-execution "
     "gadget (downloads and runs code from the network)"),
    (_call("functools", "partial"), "calls functools.partial while loading: a known "
     "code-execution gadget (binds arguments for a later call, to chain gadgets)"),
    (_call("mypkg.models", "helper"), "calls mypkg.models.helper while loading"),
    (b"\x80\x02cmypkg.models\nNet\n)\x81.", "instantiates class mypkg.models.Net, which "
     "loading would import and run"),
    (b"\x80\x04\x8c\x05torch\x8c\x17serialization.os.system\x93)R.", "looks up the attribute "
     "path torch.serialization.os.system: a known code-execution gadget (runs a shell command)"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "detail"), GADGETS, ids=[d[1].split()[1] for d in GADGETS])
def test_known_gadgets_say_so_and_unknown_globals_do_not(data: bytes, detail: str) -> None:
    assert [i.detail for i in scan(data, "m", Policy()).issues] == [detail]
