"""Formats that carry pickles are read, not refused: NumPy .npy / .npz, joblib (raw and
compressed), the legacy .tar torch.save layout. Numeric arrays are weights; every pickle they
carry is scanned (MG901), never run. Other containers stay MG902.

Files are written by the real libraries (numpy.save, numpy.savez, joblib.dump), except the
legacy .tar (torch < 0.4 wrote it; today's torch still reads it), built here member by member
as torch.serialization._legacy_load reads it, and proven readable by torch.load.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")

from modelgate import config as cfg  # noqa: E402
from modelgate import discover, engine  # noqa: E402
from modelgate.loaders import Policy, joblib_file, load, numpy_file  # noqa: E402


def check(path: Path) -> Any:
    return engine.check_file(str(path), cfg.from_dict({}))


def findings(report: Any) -> list[tuple[str, str, str | None]]:
    return sorted((f.rule, f.severity, f.location.member) for f in report.findings)


def messages(report: Any, rule: str) -> list[str]:
    return sorted(f.message for f in report.findings if f.rule == rule)


class Payload:
    """Pickles as a shell command; never unpickled here (the marker file must not appear)."""

    marker = "/tmp/modelgate-containers-payload-ran"

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(autouse=True)
def no_payload_runs():
    if os.path.exists(Payload.marker):
        os.unlink(Payload.marker)
    yield
    assert not os.path.exists(Payload.marker)


SYSTEM = "calls posix.system while loading" if os.name == "posix" else "calls nt.system"


def _system_call(report: Any) -> list[str]:
    return [m for m in messages(report, "MG901") if SYSTEM in m]


# ---------------------------------------------------------------------------------------------
# .npy
# ---------------------------------------------------------------------------------------------


def test_numeric_npy_is_weights(tmp_path: Path):
    path = tmp_path / "emb.npy"
    np.save(path, np.zeros((30, 4), np.float32))
    report = check(path)
    assert report.format == "numpy"
    assert findings(report) == []
    graph = load(str(path), Policy())
    assert {k: (v.shape, v.dtype) for k, v in graph.tensors.items()} == {
        "array": ((30, 4), "float32")
    }


@pytest.mark.parametrize(
    ("dtype", "name"),
    [("<f2", "float16"), (">f8", "float64"), ("|b1", "bool"), ("|i1", "int8"), ("<u4", "uint32"),
     ("<c8", "complex64")],
)  # fmt: skip
def test_npy_dtypes_with_and_without_numpy(tmp_path: Path, dtype: str, name: str, monkeypatch):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros((2, 3), np.dtype(dtype)))
    assert load(str(path), Policy()).tensors["array"].dtype == name
    monkeypatch.setattr(numpy_file, "_dtype", numpy_file._parse_descr)  # the core, no numpy
    assert load(str(path), Policy()).tensors["array"].dtype == name


def test_benign_object_npy_is_scanned_and_passes(tmp_path: Path):
    path = tmp_path / "labels.npy"
    np.save(path, np.array(["cat", 3, {"k": (1.5, None)}], dtype=object), allow_pickle=True)
    report = check(path)
    assert report.format == "numpy"
    assert findings(report) == []
    assert report.notes[0] == (
        "object array: an object array, stored as a pickle: np.load needs allow_pickle=True, "
        "which runs it; modelgate scanned it and found nothing unsafe"
    )


def test_malicious_object_npy_is_mg901(tmp_path: Path):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([Payload()], dtype=object), allow_pickle=True)
    report = check(path)
    assert findings(report) == [("MG901", "error", "object array")]
    assert len(_system_call(report)) == 1


def test_structured_npy_with_an_object_field_is_scanned(tmp_path: Path, monkeypatch):
    path = tmp_path / "rec.npy"
    rows = np.array([(1.0, Payload())], dtype=[("x", "<f4"), ("o", "O")])
    np.save(path, rows, allow_pickle=True)
    assert len(_system_call(check(path))) == 1
    monkeypatch.setattr(numpy_file, "_dtype", numpy_file._parse_descr)
    assert any(i.usage == "call" for i in load(str(path), Policy()).pickle_issues)


def test_truncated_and_malformed_npy_are_mg902(tmp_path: Path):
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((100, 100), np.float32))
    raw = good.read_bytes()
    cases = {
        "short.npy": (raw[:-1000], "needs 40,000 bytes of data, the file holds 39,000 (truncated)"),
        "header.npy": (raw[:20], "ends inside its header (truncated)"),
        "keys.npy": (raw.replace(b"'fortran_order'", b"'fortran_orde_'"), "not a dict of"),
        "version.npy": (raw[:6] + b"\x09\x00" + raw[8:], "version 9.0, which numpy cannot read"),
        "code.npy": (raw.replace(b"'descr': '<f4'", b"'descr': __import__('os')"[:14]), "literal"),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        graph = load(str(tmp_path / name), Policy())
        assert expected in (graph.unreadable or ""), (name, graph.unreadable)


# ---------------------------------------------------------------------------------------------
# .npz
# ---------------------------------------------------------------------------------------------


def test_npz_plain_and_compressed_are_weights(tmp_path: Path):
    arrays = {"l1.weight": np.zeros((8, 4), np.float32), "l1.bias": np.zeros(8, np.float32)}
    for name, save in (("p.npz", np.savez), ("c.npz", np.savez_compressed)):
        save(tmp_path / name, **arrays)
        report = check(tmp_path / name)
        assert report.format == "numpy", name
        assert findings(report) == [], name
        graph = load(str(tmp_path / name), Policy())
        assert {k: v.shape for k, v in graph.tensors.items()} == {
            "l1.weight": (8, 4),
            "l1.bias": (8,),
        }
        assert graph.layers["l1"].type == "Linear"


def test_npz_object_members_are_scanned(tmp_path: Path):
    np.savez_compressed(
        tmp_path / "ok.npz", w=np.zeros(3, np.float32), names=np.array(["a", None], object)
    )
    report = check(tmp_path / "ok.npz")
    assert findings(report) == []
    assert report.notes[0].startswith("names.npy: an object array, stored as a pickle")
    np.savez(tmp_path / "evil.npz", w=np.zeros(3, np.float32), x=np.array([Payload()], object))
    report = check(tmp_path / "evil.npz")
    assert findings(report) == [("MG901", "error", "x.npy")]
    assert len(_system_call(report)) == 1


def test_npz_member_that_is_no_array_is_mg902(tmp_path: Path):
    with zipfile.ZipFile(tmp_path / "odd.npz", "w") as zf:
        zf.writestr("w.npy", pickle.dumps(Payload()))  # np.load would hand back its bytes
    graph = load(str(tmp_path / "odd.npz"), Policy())
    assert "not a .npy array" in (graph.unreadable or "")


def test_other_containers_stay_mg902(tmp_path: Path):
    import gzip

    with zipfile.ZipFile(tmp_path / "docs.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
        zf.writestr("w.npy", b"")
    (tmp_path / "a.7z").write_bytes(b"7z\xbc\xaf\x27\x1c" + b"\0" * 64)
    (tmp_path / "text.gz").write_bytes(gzip.compress(b"just some text, no pickle"))
    with tarfile.open(tmp_path / "src.tar", "w") as tar:
        info = tarfile.TarInfo("README")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    expected = {
        "docs.zip": "a zip archive that is not a PyTorch model or a NumPy .npz",
        "a.7z": "a 7-Zip archive, not a format modelgate reads",
        "text.gz": "a gzip file, not a format modelgate reads",
        "src.tar": "a tar archive, not a format modelgate reads",
    }
    for name, text in expected.items():
        report = check(tmp_path / name)
        assert findings(report) == [("MG902", "error", None)], name
        assert report.findings[0].message.startswith(text), (name, report.findings[0].message)


# ---------------------------------------------------------------------------------------------
# joblib
# ---------------------------------------------------------------------------------------------

joblib = pytest.importorskip("joblib")


def test_joblib_raw_arrays_are_weights(tmp_path: Path):
    obj = {"w": np.zeros((5, 2), np.float32), "b": np.arange(3), "names": ["a"]}
    joblib.dump(obj, tmp_path / "m.joblib")
    report = check(tmp_path / "m.joblib")
    assert report.format == "joblib"
    assert findings(report) == []
    graph = load(str(tmp_path / "m.joblib"), Policy())
    assert {k: (v.shape, v.dtype) for k, v in graph.tensors.items()} == {
        "b": ((3,), "int64"),
        "w": ((5, 2), "float32"),
    }
    assert graph.metadata["compression"] == "none"


@pytest.mark.parametrize("method", ["zlib", "gzip", "bz2", "lzma", "xz"])
def test_joblib_compressed(tmp_path: Path, method: str):
    obj = {"w": np.ones((50, 20), np.float32), "o": np.array([1, None, "x"], dtype=object)}
    path = tmp_path / f"m.{method}"
    joblib.dump(obj, path, compress=(method, 3))
    report = check(path)
    assert report.format == "joblib"
    assert findings(report) == []
    graph = load(str(path), Policy())
    assert {k: v.shape for k, v in graph.tensors.items()} == {"w": (50, 20)}
    assert graph.metadata["compression"] == method
    assert graph.notes == ["1 object array, each a pickle of its own: scanned"]
    evil = tmp_path / f"evil.{method}"
    joblib.dump(
        {"w": np.zeros(3), "x": np.array([Payload()], dtype=object)}, evil, compress=(method, 3)
    )
    report = check(evil)
    assert findings(report) == [("MG901", "error", "pickle (object array 1)")]
    assert len(_system_call(report)) == 1


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_joblib_protocols(tmp_path: Path, protocol: int):
    path = tmp_path / f"p{protocol}.joblib"
    joblib.dump(
        {"w": np.zeros((4, 4), np.float32), "k": [np.ones(2, np.int8)]}, path, protocol=protocol
    )
    report = check(path)
    assert (report.format, findings(report)) == ("joblib", [])
    assert sorted(load(str(path), Policy()).tensors) == ["k.0", "w"]


def test_joblib_payload_is_mg901(tmp_path: Path):
    joblib.dump({"w": np.zeros(3), "hook": Payload()}, tmp_path / "e.joblib")
    report = check(tmp_path / "e.joblib")
    assert findings(report) == [("MG901", "error", "pickle")]
    assert len(_system_call(report)) == 1
    assert report.notes == ["the joblib pickle was not read: it is unsafe"]


def test_sklearn_style_estimators_stay_mg901(tmp_path: Path):
    class LogisticRegression:
        def __init__(self) -> None:
            self.coef_ = np.zeros((1, 4))

    LogisticRegression.__module__ = "__main__"
    LogisticRegression.__qualname__ = "LogisticRegression"
    import __main__

    __main__.LogisticRegression = LogisticRegression  # type: ignore[attr-defined]
    try:
        joblib.dump(LogisticRegression(), tmp_path / "clf.joblib")
    finally:
        del __main__.LogisticRegression  # type: ignore[attr-defined]
    report = check(tmp_path / "clf.joblib")
    assert messages(report, "MG901") == [
        "pickle: instantiates class __main__.LogisticRegression, which loading would import and run"
    ]


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _wrapper(shape: tuple[int, ...], code: str) -> bytes:
    """A NumpyArrayWrapper as joblib pickles it (protocol 2), up to and with its BUILD."""
    dtype = (
        _global("numpy", "dtype") + _text(code) + b"\x89\x88\x87R"
        + b"(K\x03" + _text("|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )  # fmt: skip
    dims = b"".join(b"K" + bytes([d]) for d in shape)
    return (
        _global("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81}("
        + _text("subclass") + _global("numpy", "ndarray") + _text("shape") + b"(" + dims + b"t"
        + _text("order") + _text("C") + _text("dtype") + dtype
        + _text("allow_mmap") + b"\x89" + _text("numpy_array_alignment_bytes") + b"N" + b"ub"
    )  # fmt: skip


def test_array_bytes_that_hide_opcodes_from_a_linear_scanner(tmp_path: Path):
    """After a 5-byte uint8 array, joblib resumes the pickle; a scanner reading on sees those
    5 bytes as BINBYTES that swallow the next opcodes. What joblib runs is what is scanned."""
    hidden = b"a" + _global("builtins", "len") + _text("abc") + b"\x85Ra"
    data = (
        b"\x80\x02]" + _wrapper((5,), "u1")
        + b"B" + struct.pack("<I", len(hidden))  # the array's 5 bytes, to joblib
        + hidden + b"."
    )  # fmt: skip
    path = tmp_path / "trick.joblib"
    path.write_bytes(data)
    plain = data.replace(b"joblib.numpy_pickle\nNumpyArrayWrapper", b"argparse\nNamespace")
    assert pickle.loads(plain) == hidden  # read as one pickle, the call is only bytes
    loaded = joblib.load(path)  # builtins.len is harmless: proves joblib runs the hidden part
    assert loaded[1] == 3 and loaded[0].shape == (5,)
    report = check(path)
    assert messages(report, "MG901") == ["pickle: calls builtins.len while loading"]


def test_decompression_is_bounded(tmp_path: Path, monkeypatch):
    path = tmp_path / "big.gz"
    joblib.dump({"w": np.zeros(4_000_000, np.uint8)}, path, compress=("gzip", 9))
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(joblib_file, "MAX_EXPANDED", 1_000_000)
    graph = load(str(path), Policy())
    assert "expands past 1,000,000 bytes" in (graph.unreadable or "")


def test_truncated_joblib_is_mg902(tmp_path: Path):
    path = tmp_path / "t.joblib"
    joblib.dump({"w": np.zeros((100, 100))}, path)
    path.write_bytes(path.read_bytes()[:-500])
    graph = load(str(path), Policy())
    assert "joblib stream cannot be read" in (graph.unreadable or "")
    assert "ends early" in (graph.unreadable or "")


def test_ndarraywrapper_companion_outside_the_folder_is_mg901(tmp_path: Path):
    """joblib < 0.10 kept arrays in companion .npy files it np.load()s with allow_pickle."""

    def wrapper(filename: str) -> bytes:
        return (
            b"\x80\x02" + _global("joblib.numpy_pickle", "NDArrayWrapper") + b")\x81}("
            + _text("filename") + _text(filename) + _text("subclass")
            + _global("numpy", "ndarray") + b"ub."
        )  # fmt: skip

    (tmp_path / "old.pkl").write_bytes(wrapper("../elsewhere.npy"))
    report = check(tmp_path / "old.pkl")
    assert messages(report, "MG901") == [
        "pickle: loads '../elsewhere.npy', a file outside the model's folder, with "
        "np.load(allow_pickle=True)"
    ]
    np.save(tmp_path / "old_01.npy", np.array([Payload()], dtype=object), allow_pickle=True)
    (tmp_path / "old2.pkl").write_bytes(wrapper("old_01.npy"))
    report = check(tmp_path / "old2.pkl")
    assert findings(report) == [("MG901", "error", "old_01.npy: object array")]


# ---------------------------------------------------------------------------------------------
# legacy .tar torch.save (torch < 0.4)
# ---------------------------------------------------------------------------------------------

torch = pytest.importorskip("torch")


class _Ref:
    def __init__(self, pid: str) -> None:
        self.pid = pid


def legacy_tar(path: Path, obj: Any, shapes: dict[int, tuple[int, ...]], extra: Any = None) -> Path:
    """What torch < 0.4's _save wrote: sys_info, pickle, tensors, storages."""

    class Pickler(pickle.Pickler):
        def persistent_id(self, o: Any) -> Any:
            return o.pid if isinstance(o, _Ref) else None

    main = io.BytesIO()
    Pickler(main, protocol=2).dump(obj)
    storages = io.BytesIO()
    pickle.dump(len(shapes), storages, protocol=2)
    for key, shape in shapes.items():
        numel = int(np.prod(shape))
        pickle.dump((key + 100, "cpu", torch.FloatStorage), storages, protocol=2)
        storages.write(struct.pack("<q", numel) + b"\0" * (4 * numel))
    pickle.dump(extra if extra is not None else [], storages, protocol=2)
    tensors = io.BytesIO()
    pickle.dump(len(shapes), tensors, protocol=2)
    for key, shape in shapes.items():
        pickle.dump((key, key + 100, torch.FloatTensor), tensors, protocol=2)
        strides = [int(np.prod(shape[i + 1 :])) for i in range(len(shape))]
        tensors.write(struct.pack("<i", len(shape)) + b"\0" * 4)
        tensors.write(
            struct.pack(f"<{len(shape)}q", *shape) + struct.pack(f"<{len(shape)}q", *strides)
        )
        tensors.write(struct.pack("<q", 0))
    members = {
        "sys_info": pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2),
        "pickle": main.getvalue(),
        "tensors": tensors.getvalue(),
        "storages": storages.getvalue(),
    }
    with tarfile.open(path, "w:", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_legacy_tar_is_read(tmp_path: Path):
    from collections import OrderedDict

    state = OrderedDict([("fc.weight", _Ref("1")), ("fc.bias", _Ref("2"))])
    path = legacy_tar(tmp_path / "old.tar", state, {1: (3, 4), 2: (3,)})
    loaded = torch.load(str(path), weights_only=False)  # torch reads what the test built
    assert loaded["fc.weight"].shape == (3, 4)
    report = check(path)
    assert report.format == "state_dict"
    assert findings(report) == [("MG904", "info", "pickle")]
    assert messages(report, "MG904") == [
        "torch.load(weights_only=True) cannot load this file, even with add_safe_globals: "
        "the legacy .tar layout is refused whatever is allowed"
    ]
    with pytest.raises(RuntimeError, match=r"legacy \.tar format"):
        torch.load(str(path), weights_only=True)
    graph = load(str(path), Policy())
    assert {k: v.shape for k, v in graph.tensors.items()} == {"fc.weight": (3, 4), "fc.bias": (3,)}


def test_every_pickle_of_a_legacy_tar_is_scanned(tmp_path: Path):
    main = legacy_tar(tmp_path / "main.tar", {"w": _Ref("1"), "x": Payload()}, {1: (2,)})
    assert findings(check(main)) == [
        ("MG901", "error", "pickle (object)"),
        ("MG904", "info", "pickle"),
    ]
    views = legacy_tar(tmp_path / "views.tar", {"w": _Ref("1")}, {1: (2,)}, extra=[Payload()])
    report = check(views)
    assert ("MG901", "error", "storages (storage views)") in findings(report)
    assert len(_system_call(report)) == 1


def test_legacy_tar_with_a_link_member_is_mg902(tmp_path: Path):
    path = legacy_tar(tmp_path / "ok.tar", {"w": _Ref("1")}, {1: (2,)})
    linked = tmp_path / "link.tar"
    with tarfile.open(path) as src, tarfile.open(linked, "w:", format=tarfile.PAX_FORMAT) as dst:
        for info in src.getmembers():
            if info.name == "storages":
                link = tarfile.TarInfo("storages")
                link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
                dst.addfile(link)
            else:
                dst.addfile(info, src.extractfile(info))
    graph = load(str(linked), Policy())
    assert "member 'storages' is a link, not a file" in (graph.unreadable or "")


# ---------------------------------------------------------------------------------------------
# discovery and pre-commit find them
# ---------------------------------------------------------------------------------------------


def test_folder_scans_and_pre_commit_pick_the_new_suffixes(tmp_path: Path):
    import re

    import yaml

    for name in ("a.npy", "b.npz", "c.joblib", "d.tar", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = discover.discover([str(tmp_path)])  # a .tar is read when named, not found
    assert sorted(Path(f).name for f in found.files) == ["a.npy", "b.npz", "c.joblib"]
    hooks = yaml.safe_load((Path(__file__).parent.parent / ".pre-commit-hooks.yaml").read_text())
    for hook in hooks:
        pattern = re.compile(hook["files"])
        assert all(pattern.search(f"models/x.{ext}") for ext in ("npy", "npz", "joblib")), hook[
            "id"
        ]


def test_array_bytes_that_hide_a_call_from_joblib_but_not_from_pickle_load(tmp_path: Path):
    """The other way round: joblib skips 8 array bytes that pickle.load reads as opcodes, and
    the call sits there. Both readings are scanned."""
    call = b"0" + _global("builtins", "len") + _text("ab") + b"\x85R"  # POP, len("ab")
    data = b"\x80\x02]" + _wrapper((len(call),), "u1") + call + b"a."
    path = tmp_path / "other.joblib"
    path.write_bytes(data)
    assert joblib.load(path)[0].tobytes() == call  # joblib: only array bytes
    plain = data.replace(b"joblib.numpy_pickle\nNumpyArrayWrapper", b"argparse\nNamespace")
    assert pickle.loads(plain) == [2]  # pickle.load: builtins.len("ab") ran
    report = check(path)
    assert messages(report, "MG901") == [f"{joblib_file.LINEAR}: calls builtins.len while loading"]


def test_a_legacy_torch_file_that_names_joblib_is_read_as_torch(tmp_path: Path):
    """A legacy torch.save file whose magic-number pickle carries joblib's words is still
    five pickles to torch.load: the object pickle after it is scanned."""
    path = tmp_path / "legacy.pt"
    torch.save(
        {"w": torch.zeros(2), "x": Payload()}, str(path), _use_new_zipfile_serialization=False
    )
    raw = path.read_bytes()
    words = _text("joblib NumpyArrayWrapper") + b"0"
    path.write_bytes(raw[:2] + words + raw[2:])
    assert pickle.loads(path.read_bytes()) == 0x1950A86A20F9469CFC6C  # torch's magic number
    report = check(path)
    assert report.format == "torch_save"
    assert findings(report) == [("MG901", "error", "legacy pickle 4 of 5 (object)")]


def test_npz_refusals_that_guard_torch_do_not_apply(tmp_path: Path):
    """A compressed npz of zeros expands 1000x (a "zip bomb" to a torch archive), and np.savez
    keys may differ only in case (torch's reader would confuse them): numpy reads both."""
    np.savez_compressed(tmp_path / "z.npz", mask=np.zeros((4096, 4096), np.float32))
    np.savez(tmp_path / "case.npz", a=np.zeros(2, np.float32), A=np.ones(2, np.float32))
    assert sorted(load(str(tmp_path / "z.npz"), Policy()).tensors) == ["mask"]
    assert sorted(load(str(tmp_path / "case.npz"), Policy()).tensors) == ["A", "a"]
    for name in ("z.npz", "case.npz"):
        assert findings(check(tmp_path / name)) == [], name


def test_the_readers_import_no_numpy_torch_or_joblib():
    import subprocess
    import sys

    code = (
        "import sys; import modelgate.loaders.numpy_file, modelgate.loaders.joblib_file, "
        "modelgate.loaders.tar_legacy, modelgate.loaders.inert; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'torch', 'joblib'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_npy_without_numpy_installed(tmp_path: Path):
    """The core reads a .npy header without numpy: a fresh interpreter where importing numpy
    fails reads a numeric array and scans an object array."""
    import subprocess
    import sys

    np.save(tmp_path / "w.npy", np.zeros((2, 3), np.float16))
    np.save(tmp_path / "o.npy", np.array([Payload()], dtype=object), allow_pickle=True)
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "from modelgate.loaders import load, Policy\n"
        f"w = load({str(tmp_path / 'w.npy')!r}, Policy())\n"
        f"o = load({str(tmp_path / 'o.npy')!r}, Policy())\n"
        "print(w.tensors['array'].shape, w.tensors['array'].dtype, "
        "[(i.global_name, i.usage) for i in o.pickle_issues])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    system = "posix.system" if os.name == "posix" else "nt.system"
    assert out.stdout.strip() == f"(2, 3) float16 [('{system}', 'call')]"


def test_npz_members_are_arrays_by_their_magic_whatever_their_name(tmp_path: Path):
    """np.load reads an npz member that starts with the .npy magic as an array, named or not."""
    ok, evil = io.BytesIO(), io.BytesIO()
    np.lib.format.write_array(ok, np.zeros(3, np.float32))
    np.lib.format.write_array(evil, np.array([Payload()], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "m.npz", "w") as zf:
        zf.writestr("w.npy", ok.getvalue())
        zf.writestr("meta", evil.getvalue())
    report = check(tmp_path / "m.npz")
    assert findings(report) == [("MG901", "error", "meta")]


def test_a_second_pickle_after_the_first_is_scanned(tmp_path: Path):
    """pickle.load in a loop reads every pickle of the file; a scan of the first alone does
    not see a payload in the second."""
    path = tmp_path / "two.pkl"
    path.write_bytes(pickle.dumps(["a", "b"], protocol=3) + pickle.dumps(Payload(), protocol=3))
    report = check(path)
    assert ("MG901", "error", "pickle 2 (after the first)") in findings(report)
    assert len(_system_call(report)) == 1


def test_a_protocol_0_pickle_that_reads_as_protobuf_is_a_pickle(tmp_path: Path):
    """picklescan's malicious10: its first bytes also parse as a (truncated) ONNX protobuf."""
    path = tmp_path / "inst.pkl"
    code = "open('/tmp/modelgate-marker', 'w').close()"
    path.write_bytes(b"(S" + repr(code).encode() + b"\ni__builtin__\nexec\n.")
    report = check(path)
    (message,) = messages(report, "MG901")  # the reason after the colon is MG901's to word
    assert message.startswith("pickle: calls builtins.exec while loading")


def test_memo_and_length_bombs_before_the_scan_end_quickly(tmp_path: Path):
    """joblib and .tar pickles are followed before they are scanned: LONG_BINPUT 4e9 (a 32 GB
    memo table to the C unpickler) and a 4 GB BINBYTES8 from a small gzip must not allocate."""
    import gzip
    import time

    memo = b"\x80\x02]r" + struct.pack("<I", 0xFFFFFFF0) + _wrapper((1,), "u1") + b"\x00a."
    (tmp_path / "memo.joblib").write_bytes(memo)
    big = b"\x80\x04]" + _global("joblib.numpy_pickle", "NumpyArrayWrapper") + b"0"
    big += b"\x8e" + struct.pack("<Q", 4 * 1024**3) + b"\0" * 1024
    (tmp_path / "len.gz").write_bytes(gzip.compress(big))
    start = time.perf_counter()
    memo_graph = load(str(tmp_path / "memo.joblib"), Policy())
    len_graph = load(str(tmp_path / "len.gz"), Policy())
    assert time.perf_counter() - start < 10
    assert [i.usage for i in memo_graph.pickle_issues] == ["stream"]  # the scanner's refusal
    assert "memo slot" in memo_graph.pickle_issues[0].detail
    assert "reads a value of 4,294,967,296 bytes" in (len_graph.unreadable or "")
