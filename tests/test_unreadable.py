"""MG902: each way a file fails to be a readable model, in one line that says which.

Also the limits: resource bombs (huge integers, memo slots, shared structures, deep JSON) end
quickly in a failing report instead of eating the machine.
"""

from __future__ import annotations

import json
import os
import struct
import time
import zipfile
from pathlib import Path

import modelfactory
import pytest

from modelgate.loaders import Policy, load

# ---------------------------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------------------------


def text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def number(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8 or 1, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def counts(values: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(number(v) for v in values) + b"t"


def tensor_pickle(numel: int, shape: tuple[int, ...], stride: tuple[int, ...], key: str = "0"):
    """data.pkl of {"w": tensor} as torch.save writes it: a storage by persistent id."""
    storage = b"(" + text("storage") + b"ctorch\nFloatStorage\n" + text(key) + text("cpu")
    storage += number(numel) + b"tQ"  # TUPLE, BINPERSID
    rebuild = b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + number(0) + counts(shape)
    rebuild += counts(stride) + b"\x89" + b"ccollections\nOrderedDict\n)R" + b"tR"
    return b"\x80\x02}" + text("w") + rebuild + b"s."


def torch_zip(folder: Path, name: str, pkl: bytes, storages: dict[str, int]) -> Path:
    members = {f"data/{k}": b"\0" * n for k, n in storages.items()}
    return modelfactory.Factory(folder).torch_zip(pkl, name, extra=members)


def safetensors(header: object, data: bytes = b"", raw: bytes | None = None) -> bytes:
    body = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(body)) + body + data


def entry(dtype: str, shape: list[int], start: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


# ---------------------------------------------------------------------------------------------
# one file, one reason
# ---------------------------------------------------------------------------------------------

BYTES_CASES = {
    "empty": (b"", "empty file (0 bytes)"),
    "random": (bytes(range(7, 250)) * 20, "not a model file"),
    "lfs": (
        b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 4812873401\n",
        "git-lfs pointer",
    ),
    "gguf": (b"GGUF\x03\x00\x00\x00" + b"\x00" * 64, "a GGUF (llama.cpp) file"),
    "json_text": (b'{"model": "not really"}\n', "a text file, not a model"),
    "plain_pickle": (b"\x80\x02}q\x00X\x01\x00\x00\x00aK\x01s.", "not a model: the pickle holds"),
    # safetensors headers that lie about the data
    "st_shape": (safetensors({"w": entry("F32", [2, 3], 0, 16)}, b"\0" * 16), "do not hold"),
    "st_overlap": (
        safetensors({"a": entry("F32", [4], 0, 16), "b": entry("F32", [4], 8, 24)}, b"\0" * 24),
        "overlaps",
    ),
    "st_hole": (
        safetensors({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 16, 24)}, b"\0" * 24),
        "hole before tensor 'b'",
    ),
    "st_duplicate": (
        safetensors(
            None,
            b"\0" * 8,
            raw=b'{"w": {"dtype": "F32", "shape": [2], '
            b'"data_offsets": [0, 8]}, "w": {"dtype": "F32", "shape": [2], '
            b'"data_offsets": [0, 8]}}',
        ),
        "repeats tensor 'w'",
    ),
    "st_past_end": (safetensors({"w": entry("F32", [4], 0, 16)}, b"\0" * 8), "truncated?"),
    "st_tail": (safetensors({"w": entry("F32", [2], 0, 8)}, b"\0" * 12), "tensors cover 8"),
    "st_absurd_header": (struct.pack("<Q", 2**60) + b"{}" + b"\0" * 32, "not a model file"),
    "st_claims_more": (struct.pack("<Q", 4096) + b'{"w": 1}', "claims 4,096 bytes but the file"),
    "truncated_pickle": (b"\x80\x02}q\x00X\x05\x00\x00\x00ab", "pickle stream ends early"),
    "st_absurd_shape": (
        safetensors({"w": entry("F32", [2**40, 2**40], 0, 8)}, b"\0" * 8),
        "invalid shape",
    ),
    "st_big_int": (
        safetensors(
            None,
            b"",
            raw=b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 0]}}',
        ),
        "not valid JSON",
    ),
    "st_deep": (
        safetensors(None, b"", raw=b"{" + b'"a": [' * 100_000 + b"]" * 100_000 + b"}"),
        "not valid JSON",
    ),
    "st_metadata": (
        safetensors({"__metadata__": {"a": [1]}, "w": entry("F32", [1], 0, 4)}, b"\0" * 4),
        "__metadata__ is not a map",
    ),
}


@pytest.mark.parametrize("name", sorted(BYTES_CASES))
def test_unreadable_bytes(run_cli, tmp_path: Path, name: str) -> None:
    data, reason = BYTES_CASES[name]
    (tmp_path / "model.bin").write_bytes(data)
    code, out, err = run_cli("check", "model.bin", "--format", "json")
    assert code == 1, err
    (model,) = json.loads(out)["models"]
    messages = [f["message"] for f in model["findings"] if f["rule"] == "MG902"]
    assert len(messages) == 1 and reason in messages[0], model["findings"]
    assert "\n" not in messages[0]


def _archive_cases(folder: Path) -> dict[str, tuple[Path, str]]:
    """Archives and pickles that lie about their sizes, built without torch."""
    good = tensor_pickle(6, (2, 3), (3, 1))
    f = modelfactory.Factory(folder)
    cases = {
        "storage_missing": (torch_zip(folder, "a.pt", good, {}), "which the archive lacks"),
        "storage_short": (torch_zip(folder, "b.pt", good, {"0": 12}), "needs 24"),
        "past_storage": (
            torch_zip(folder, "c.pt", tensor_pickle(6, (2, 3), (4, 1)), {"0": 24}),
            "reaches past the end of its storage",
        ),
        "absurd_numel": (
            torch_zip(folder, "d.pt", tensor_pickle(2**70, (2,), (1,)), {"0": 8}),
            "invalid size",
        ),
        "absurd_shape": (
            torch_zip(folder, "e.pt", tensor_pickle(8, (2**40, 2**40), (1, 1)), {"0": 32}),
            "more than 2**62 elements",
        ),
    }
    ok = torch_zip(folder, "ok.pt", good, {"0": 24})
    data = ok.read_bytes()
    cases["truncated_zip"] = (f.raw(data[: len(data) * 2 // 3], "t.pt"), "may be truncated")
    # a stored member whose declared size is not what it holds
    with zipfile.ZipFile(folder / "v.pt", "w") as zf:
        zf.writestr("archive/data.pkl", good)
        zf.writestr("archive/data/0", b"\0" * 24)
    raw = bytearray((folder / "v.pt").read_bytes())
    cd = raw.rfind(b"PK\x01\x02")  # the last central entry: data/0, size fields at +20 / +24
    raw[cd + 24 : cd + 28] = struct.pack("<L", 2**31)
    cases["size_lie"] = (f.raw(bytes(raw), "v.pt"), "declares 2,147,483,648 bytes")
    # a zip bomb: 64 MB of zeros in a few kB
    with zipfile.ZipFile(folder / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", good)
        zf.writestr("archive/data/0", b"\0" * (64 * 1024 * 1024))
    cases["zip_bomb"] = (folder / "bomb.pt", "zip bomb")
    with zipfile.ZipFile(folder / "notorch.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
    cases["zip_not_torch"] = (folder / "notorch.zip", "not a PyTorch model")
    return cases


ARCHIVE_CASES = [
    "storage_missing", "storage_short", "past_storage", "absurd_numel", "absurd_shape",
    "truncated_zip", "size_lie", "zip_bomb", "zip_not_torch",
]  # fmt: skip


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    return _archive_cases(tmp_path_factory.mktemp("archives"))


@pytest.mark.parametrize("name", ARCHIVE_CASES)
def test_unreadable_archives(archives: dict[str, tuple[Path, str]], name: str) -> None:
    path, reason = archives[name]
    graph = load(str(path))
    assert graph.unreadable is not None and reason in graph.unreadable, graph.unreadable
    assert graph.pickle_issues == []


def test_a_good_handmade_checkpoint_reads(tmp_path: Path) -> None:
    """(the builders above make readable files when they do not lie)"""
    graph = load(str(torch_zip(tmp_path, "ok.pt", tensor_pickle(6, (2, 3), (3, 1)), {"0": 24})))
    assert graph.unreadable is None and graph.tensors["w"].shape == (2, 3)


# ---------------------------------------------------------------------------------------------
# ONNX external data
# ---------------------------------------------------------------------------------------------


def _onnx_external(folder: Path, location: str, length: int | None = None) -> Path:
    from onnx import TensorProto, helper

    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length or 64))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("/etc/passwd", "points at absolute path '/etc/passwd'"),
        ("../outside.data", "escapes the model's folder"),
        ("sub/../../outside.data", "escapes the model's folder"),
        ("..\\outside.data", "escapes the model's folder"),
        ("missing.data", "is missing"),
        ("short.data", "which has 16 (truncated?)"),
    ],
)
def test_onnx_external_data(tmp_path: Path, location: str, reason: str) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (tmp_path / "outside.data").write_bytes(b"\0" * 64)  # exists: escaping is the problem
    (folder / "short.data").write_bytes(b"\0" * 16)
    graph = load(str(_onnx_external(folder, location)))
    assert graph.unreadable is not None and reason in graph.unreadable, graph.unreadable


def test_onnx_external_data_that_fits_is_read_not_loaded(tmp_path: Path) -> None:
    (tmp_path / "ok.data").write_bytes(b"\0" * 64)
    graph = load(str(_onnx_external(tmp_path, "ok.data")))
    assert graph.unreadable is None and graph.tensors["w"].external == "ok.data"


def test_truncated_onnx(tmp_path: Path) -> None:
    (tmp_path / "ok.data").write_bytes(b"\0" * 64)
    data = _onnx_external(tmp_path, "ok.data").read_bytes()
    graph = load(str(modelfactory.Factory(tmp_path).raw(data[: len(data) // 2], "cut.onnx")))
    assert graph.unreadable is not None and "ONNX" in graph.unreadable


# ---------------------------------------------------------------------------------------------
# limits: bombs end quickly, in a report
# ---------------------------------------------------------------------------------------------


def _quick(path: Path, policy: Policy | None = None) -> tuple[object, float]:
    start = time.perf_counter()
    graph = load(str(path), policy)
    return graph, time.perf_counter() - start


def test_long4_bomb(tmp_path: Path) -> None:
    """A 64 MB integer: read and set aside, not printed or multiplied out."""
    big = b"\x8b" + struct.pack("<i", 64 * 1024 * 1024) + b"\x01" * (64 * 1024 * 1024)
    pkl = b"\x80\x02}" + text("w") + big + b"s."
    graph, seconds = _quick(torch_zip(tmp_path, "m.pt", pkl, {}))
    assert "not a model" in (graph.unreadable or "")
    assert seconds < 20


def test_memo_bomb_is_refused_before_unpickling(tmp_path: Path) -> None:
    """LONG_BINPUT 4e9 would make the unpickler allocate a 32 GB memo table."""
    pkl = b"\x80\x02}r" + struct.pack("<I", 0xFFFFFFF0) + b"."
    graph, _ = _quick(torch_zip(tmp_path, "m.pt", pkl, {}))
    assert [(i.usage, "memo slot" in i.detail) for i in graph.pickle_issues] == [("stream", True)]


def test_exponentially_shared_structure(tmp_path: Path) -> None:
    """Each list holds the previous one twice: 2**200 elements if walked naively."""
    body = b"\x80\x02]r" + struct.pack("<I", 0)  # EMPTY_LIST, LONG_BINPUT 0
    for level in range(1, 201):  # MARK, GET, GET, LIST, PUT: [previous, previous]
        previous = struct.pack("<I", level - 1)
        body += b"(j" + previous + b"j" + previous + b"lr" + struct.pack("<I", level)
    pkl = body + b"."
    graph, seconds = _quick(torch_zip(tmp_path, "m.pt", pkl, {}))
    assert graph.pickle_issues == []
    assert "not a model" in (graph.unreadable or "")
    assert seconds < 20


def test_deeply_nested_pt2_json(tmp_path: Path) -> None:
    f = modelfactory.Factory(tmp_path)
    deep = b'{"graph_module": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with zipfile.ZipFile(tmp_path / "m.pt2", "w") as zf:
        zf.writestr("m/archive_format", "pt2")
        zf.writestr("m/models/model.json", deep)
    graph, seconds = _quick(f.path("m.pt2"))
    assert "not valid JSON" in (graph.unreadable or "")
    assert seconds < 20


def test_nothing_large_is_read_into_memory(tmp_path: Path) -> None:
    """A 256 MB storage member is checked by its size, never read."""
    import psutil

    pkl = tensor_pickle(64 * 1024 * 1024, (64 * 1024 * 1024,), (1,))
    path = torch_zip(tmp_path, "m.pt", pkl, {})
    chunk = b"\0" * (8 * 1024 * 1024)
    with zipfile.ZipFile(path, "a") as zf, zf.open("archive/data/0", "w", force_zip64=True) as fh:
        for _ in range(32):
            fh.write(chunk)
    before = psutil.Process().memory_info().rss
    graph, _ = _quick(path)
    assert graph.unreadable is None and graph.tensors["w"].shape == (64 * 1024 * 1024,)
    assert psutil.Process().memory_info().rss - before < 64 * 1024 * 1024
    os.unlink(path)
