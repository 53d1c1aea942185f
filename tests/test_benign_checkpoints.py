"""Benign checkpoints that were false alarms: built with torch.save, read as inert stand-ins.

Each file is saved by torch from real benign objects (argparse, datetime, pathlib,
collections, omegaconf, tensors in containers, sparse / quantized / nested tensors) and checked
end to end; the exact findings are asserted. Where MG904 predicts what
``torch.load(weights_only=True)`` does, torch is run both ways: without the globals it names it
fails, with them (the fix's own code) it loads; where MG904 says nothing helps, the named
globals do not help.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import pathlib
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from test_realworld_checkpoints import (  # noqa: E402
    check,
    findings,
    only,
    safe_globals_of,
    weights_only_load,
)

from modelgate.loaders import Policy, load, pickles  # noqa: E402
from modelgate.loaders.inert import load_inert  # noqa: E402
from modelgate.loaders.weights_only import WEIGHTS_ONLY_OPCODES  # noqa: E402


def save(obj: Any, path: Path, protocol: int = 2) -> Path:
    torch.save(obj, str(path), pickle_protocol=protocol)
    return path


def state_dict() -> dict[str, Any]:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3).state_dict()


WO = "torch.load(weights_only=True) "


# ---------------------------------------------------------------------------------------------
# training values: inert stand-ins, MG904 right both ways
# ---------------------------------------------------------------------------------------------


def test_namespace_nested_in_a_fairseq_style_checkpoint(tmp_path: Path):
    args = argparse.Namespace(arch="tiny", lr=[0.1], inner=argparse.Namespace(drop=0.1), d={})
    path = save(
        {"args": args, "model": state_dict(), "extra_state": {"epoch": 3}}, tmp_path / "f.pt"
    )
    report = check(path)
    assert report.format == "checkpoint"
    assert findings(report) == [("MG904", "info", "f/data.pkl")]
    mg904 = only(report, "MG904")
    assert mg904.message == WO + "rejects 1 global this pickle uses: argparse.Namespace"
    assert weights_only_load(path, []) is not None
    assert weights_only_load(path, safe_globals_of(mg904.fix)) is None
    graph = load(str(path), Policy())
    assert sorted(graph.tensors) == ["bias", "weight"]


def test_namespace_in_protocol_1_is_rebuilt_and_weights_only_cannot_read_it(tmp_path: Path):
    """Protocol 1 pickles an instance as copyreg._reconstructor(cls, object, None) + BUILD
    (MG901 "calls copyreg._reconstructor" before); torch's weights_only unpickler does not read
    the INT opcode protocol 1 writes booleans with, whatever is allowed."""
    args = argparse.Namespace(lr=0.1, amp=True, data=pathlib.PosixPath("/data"))
    path = save({"state_dict": state_dict(), "args": args}, tmp_path / "p1.pt", protocol=1)
    report = check(path)
    assert findings(report) == [("MG904", "info", "p1/data.pkl")]
    assert only(report, "MG904").message == (
        WO + "cannot load this file, even with add_safe_globals: opcode INT is not one its "
        "unpickler reads (it reads the opcodes of pickle protocol 2 that torch.save writes by "
        "default)"
    )
    allowed = [argparse.Namespace, object, __import__("copyreg")._reconstructor, pathlib.PosixPath]
    assert "Unsupported operand 73" in (weights_only_load(path, allowed) or "")
    assert torch.load(str(path), weights_only=False)["args"].lr == 0.1  # the file is sound


def test_datetime_values_every_protocol_torch_save_writes(tmp_path: Path):
    cest = datetime.timezone(datetime.timedelta(hours=2), "CEST")
    values = {
        "at": datetime.datetime(2024, 5, 1, 12, tzinfo=cest),
        "day": datetime.date(2024, 5, 1),
        "time": datetime.time(3, 4, 5),
        "took": datetime.timedelta(hours=3),
        "utc": datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc),
    }  # fmt: skip
    names = "datetime.date, datetime.datetime, datetime.time, datetime.timedelta, datetime.timezone"
    allowed = [
        datetime.date,
        datetime.datetime,
        datetime.time,
        datetime.timedelta,
        datetime.timezone,
    ]
    path = save({"state_dict": state_dict(), **values}, tmp_path / "d2.pt")
    report = check(path)
    assert findings(report) == [("MG904", "info", "d2/data.pkl")]
    mg904 = only(report, "MG904")
    assert mg904.message == WO + f"rejects 5 globals this pickle uses: {names}"
    assert weights_only_load(path, []) is not None
    assert weights_only_load(path, safe_globals_of(mg904.fix)) is None
    # protocols 3 and 4 write opcodes torch's weights_only unpickler does not read at all
    for protocol, opcode, operand in ((3, "SHORT_BINBYTES", 67), (4, "FRAME", 149)):
        path = save({"state_dict": state_dict(), **values}, tmp_path / f"d{protocol}.pt", protocol)
        report = check(path)
        assert findings(report) == [("MG904", "info", f"d{protocol}/data.pkl")]
        assert f"opcode {opcode} is not one its unpickler reads" in only(report, "MG904").message
        assert f"Unsupported operand {operand}" in (weights_only_load(path, allowed) or "")


def test_pathlib_paths(tmp_path: Path):
    obj = {
        "state_dict": state_dict(),
        "out": pathlib.Path("/runs/7"),
        "conf": pathlib.PurePosixPath("conf/a.yaml"),
        "win": pathlib.PureWindowsPath("C:/data"),
    }
    path = save(obj, tmp_path / "paths.pt")
    report = check(path)
    assert findings(report) == [("MG904", "info", "paths/data.pkl")]
    mg904 = only(report, "MG904")
    assert mg904.message == WO + (
        "rejects 3 globals this pickle uses: pathlib.PosixPath, pathlib.PurePosixPath, "
        "pathlib.PureWindowsPath"
    )
    assert weights_only_load(path, []) is not None
    assert weights_only_load(path, safe_globals_of(mg904.fix)) is None


def test_pathlib_local_names_of_python_313_are_inert():
    """Python 3.13 pickles paths as pathlib._local.PosixPath: same stand-in, no MG901."""
    data = b"\x80\x02cpathlib._local\nPosixPath\nX\x04\x00\x00\x00/tmp\x85R."
    assert pickles.scan(data, "pickle", Policy()).issues == []
    rebuilt = load_inert(data, Policy(), class_stubs=False)
    assert rebuilt.qualname == "pathlib._local.PosixPath" and rebuilt.args == ("/tmp",)


def test_non_empty_defaultdicts(tmp_path: Path):
    obj = {
        "state_dict": state_dict(),
        "counts": collections.defaultdict(int, {"cat": 3}),
        "history": collections.defaultdict(list, {"loss": [0.5]}),
    }
    path = save(obj, tmp_path / "dd.pt")
    report = check(path)
    assert findings(report) == [("MG904", "info", "dd/data.pkl")]
    assert only(report, "MG904").message == WO + (
        "cannot load this file, even with add_safe_globals: collections.defaultdict is filled "
        "item by item with SETITEM(S), which it allows only on dict, OrderedDict and Counter"
    )
    allowed = [collections.defaultdict, int, list]
    assert "Can only" in (weights_only_load(path, allowed) or "")
    graph = load(str(path), Policy())
    assert sorted(graph.tensors) == ["bias", "weight"]


def test_empty_defaultdict_needs_its_factory_allowed(tmp_path: Path):
    path = save({"state_dict": state_dict(), "h": collections.defaultdict(list)}, tmp_path / "e.pt")
    report = check(path)
    mg904 = only(report, "MG904")
    assert mg904.message == WO + (
        "rejects 2 globals this pickle uses: builtins.list, collections.defaultdict"
    )
    assert weights_only_load(path, []) is not None
    assert weights_only_load(path, safe_globals_of(mg904.fix)) is None


def test_sets_and_bytes_beside_tensors(tmp_path: Path):
    obj = {
        "state_dict": state_dict(),
        "labels": {"cat", "dog"},
        "raw": b"\x00\x01",
        "buf": bytearray(b"ab"),
        "pairs": {(1, 2): torch.zeros(2)},
    }
    path = save(obj, tmp_path / "sb.pt")
    assert findings(check(path)) == []
    assert weights_only_load(path, []) is None
    proto4 = save(obj, tmp_path / "sb4.pt", 4)  # EMPTY_SET / ADDITEMS, FRAME
    report = check(proto4)
    assert findings(report) == [("MG904", "info", "sb4/data.pkl")]
    assert "opcode FRAME" in only(report, "MG904").message
    assert "Unsupported operand" in (weights_only_load(proto4, []) or "")


# ---------------------------------------------------------------------------------------------
# omegaconf (Hydra): DictConfig and ListConfig are inert records
# ---------------------------------------------------------------------------------------------

OMEGACONF_NEEDS = (
    "builtins.dict, builtins.int, builtins.list, collections.defaultdict, "
    "omegaconf.base.ContainerMetadata, omegaconf.base.Metadata, omegaconf.dictconfig.DictConfig, "
    "omegaconf.listconfig.ListConfig, omegaconf.nodes.AnyNode, typing.Any"
)


def test_omegaconf_dictconfig_in_a_lightning_checkpoint(tmp_path: Path):
    omegaconf = pytest.importorskip("omegaconf")
    conf = omegaconf.OmegaConf.create({"model": {"width": 8, "layers": [1, 2]}, "name": "x"})
    path = save(
        {"state_dict": state_dict(), "hyper_parameters": {"cfg": conf}}, tmp_path / "h.ckpt"
    )
    report = check(path)
    assert report.format == "checkpoint"
    assert findings(report) == [("MG904", "info", "h/data.pkl")]
    mg904 = only(report, "MG904")
    assert mg904.message == WO + f"rejects 10 globals this pickle uses: {OMEGACONF_NEEDS}"
    assert weights_only_load(path, []) is not None
    assert weights_only_load(path, safe_globals_of(mg904.fix)) is None


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def test_omegaconf_shape_without_omegaconf_installed():
    """The opcode shape a DictConfig pickles as (NEWOBJ, a state dict with metadata, nodes
    that point back at their parent through the memo), built by hand: inert, no MG901, and the
    stand-ins never import omegaconf."""
    node = (
        _global("omegaconf.nodes", "AnyNode") + b")\x81q\x02}("
        + _text("_metadata") + _global("omegaconf.base", "Metadata") + b")\x81}("
        + _text("ref_type") + _global("typing", "Any") + b"ub"
        + _text("_parent") + b"h\x00" + _text("_val") + b"K\x01ub"
    )  # fmt: skip
    data = (
        b"\x80\x02" + _global("omegaconf.dictconfig", "DictConfig") + b")\x81q\x00}q\x01("
        + _text("_metadata") + _global("omegaconf.base", "ContainerMetadata") + b")\x81}("
        + _text("object_type") + _global("__builtin__", "dict")
        + _text("resolver_cache") + _global("collections", "defaultdict")
        + _global("__builtin__", "dict") + b"\x85R" + b"ub"
        + _text("_content") + b"}(" + _text("a") + node + b"u"
        + b"ub."
    )  # fmt: skip
    assert pickles.scan(data, "pickle", Policy()).issues == []
    rebuilt = load_inert(data, Policy(), class_stubs=False)
    assert rebuilt.qualname == "omegaconf.dictconfig.DictConfig"
    child = rebuilt.attributes["_content"]["a"]
    assert child.qualname == "omegaconf.nodes.AnyNode"
    assert child.attributes["_parent"] is rebuilt and child.attributes["_val"] == 1
    # read in a fresh interpreter: nothing named in the file was imported
    code = (
        "import sys; from modelgate.loaders import Policy; from modelgate.loaders.inert import "
        f"load_inert; load_inert({data!r}, Policy(), False); "
        "print(sorted(m for m in sys.modules if m.startswith(('omegaconf', 'typing_ext'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_omegaconf_structured_config_classes_stay_mg901():
    """A structured config names its own dataclass as object_type: that class is unknown."""
    data = (
        b"\x80\x02" + _global("omegaconf.base", "ContainerMetadata") + b")\x81}("
        + _text("object_type") + _global("myproject.conf", "TrainConfig") + b"ub."
    )  # fmt: skip
    issues = pickles.scan(data, "pickle", Policy()).issues
    assert [(i.global_name, i.usage) for i in issues] == [("myproject.conf.TrainConfig", "ref")]


# ---------------------------------------------------------------------------------------------
# tensors in containers, and tensors of every layout
# ---------------------------------------------------------------------------------------------


def test_tensors_in_a_list_or_tuple_are_weights(tmp_path: Path):
    for name, obj in (
        ("list", [torch.zeros(3, 2), torch.ones(2)]),
        ("tuple", (torch.zeros(3, 2), {"x": torch.ones(2)}, "meta", None)),
    ):
        path = save(obj, tmp_path / f"{name}.pt")
        report = check(path)
        assert report.format == "tensor_container", name
        assert findings(report) == [], name
        assert weights_only_load(path, []) is None
        graph = load(str(path), Policy())
        assert {k: v.shape for k, v in graph.tensors.items()} == (
            {"0": (3, 2), "1": (2,)} if name == "list" else {"0": (3, 2), "1.x": (2,)}
        )
        assert graph.metadata["container"] == name


def test_a_few_tensors_among_many_values_are_weights(tmp_path: Path):
    obj = {"w": torch.zeros(4, 4), "step": 3, "name": "run", "lr": 0.1}
    report = check(save(obj, tmp_path / "few.pt"))
    assert report.format == "tensor_container"
    assert findings(report) == []


def test_no_tensor_at_all_is_still_not_a_model(tmp_path: Path):
    report = check(save({"epoch": 3, "names": ["a"]}, tmp_path / "none.pt"))
    assert findings(report) == [("MG902", "error", None)]
    assert report.findings[0].message == "not a model: the pickle holds a dict with no tensors"


def test_sparse_tensors(tmp_path: Path):
    obj = {
        "coo": torch.eye(3).to_sparse(),
        "csr": torch.eye(4).to_sparse_csr(),
        "b": torch.zeros(2),
    }
    path = save(obj, tmp_path / "sp.pt")
    report = check(path)
    assert report.format == "state_dict"
    assert findings(report) == []
    assert weights_only_load(path, []) is None
    graph = load(str(path), Policy())
    assert {k: v.shape for k, v in graph.tensors.items()} == {
        "coo": (3, 3),
        "csr": (4, 4),
        "b": (2,),
    }
    assert graph.notes == [
        "coo: a sparse coo tensor, counted by its logical shape (3, 3)",
        "csr: a sparse csr tensor, counted by its logical shape (4, 4)",
    ]


def test_sparse_tensor_storages_are_checked(tmp_path: Path):
    """The indices and values of a sparse tensor live in storages like any tensor's: an archive
    that lacks one is refused (it was silently dropped before)."""
    import zipfile

    path = save({"coo": torch.eye(3).to_sparse()}, tmp_path / "sp.pt")
    cut = tmp_path / "cut.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(cut, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("data/0"):
                dst.writestr(info, src.read(info))
    graph = load(str(cut), Policy())
    assert "which the archive lacks" in (graph.unreadable or "")


def test_quantized_tensors(tmp_path: Path):
    per_tensor = torch.quantize_per_tensor(torch.rand(4), 0.1, 10, torch.quint8)
    per_channel = torch.quantize_per_channel(
        torch.rand(2, 4), torch.tensor([0.1, 0.2]), torch.tensor([0, 1]), 0, torch.qint8
    )
    path = save({"a.weight": per_tensor, "b.weight": per_channel}, tmp_path / "q.pt")
    report = check(path)
    assert findings(report) == []
    assert weights_only_load(path, []) is None
    graph = load(str(path), Policy())
    assert {k: (v.shape, v.dtype) for k, v in graph.tensors.items()} == {
        "a.weight": ((4,), "quint8"),
        "b.weight": ((2, 4), "qint8"),
    }


def test_nested_tensor(tmp_path: Path):
    nested = torch.nested.nested_tensor([torch.zeros(2, 3), torch.zeros(4, 3)])
    path = save({"seq": nested, "w": torch.zeros(3)}, tmp_path / "nt.pt")
    report = check(path)
    assert report.format == "state_dict"
    assert findings(report) == []
    assert weights_only_load(path, []) is None
    graph = load(str(path), Policy())
    assert graph.tensors["seq"].shape == (18,)
    assert graph.notes == ["seq: a nested tensor, counted by its logical shape (18,)"]


# ---------------------------------------------------------------------------------------------
# the inert unpickler survives what pickle does to the values it stands in for
# ---------------------------------------------------------------------------------------------


def test_newobj_on_a_function_stand_in_and_fills_on_records():
    """NEWOBJ wants a type (a stand-in of OrderedDict is one), and records of calls take
    BUILD, SETITEMS, APPENDS and ADDITEMS like the values they stand for."""
    data = (
        b"\x80\x04" + _global("collections", "OrderedDict") + b")\x81(" + _text("k") + b"K\x01u"
        + b"."
    )  # fmt: skip
    rebuilt = load_inert(data, Policy(), class_stubs=False)
    assert rebuilt == {"k": 1}
    record = (
        b"\x80\x02" + _global("torch", "device") + _text("cpu") + b"\x85R"
        + b"}(" + _text("a") + b"K\x01ub"  # BUILD
        + b"(" + _text("b") + b"K\x02u"  # SETITEMS
        + b"(K\x03e"  # APPENDS
        + b"."
    )  # fmt: skip
    value = load_inert(record, Policy(), class_stubs=False)
    assert value.name == "torch.device" and value.state == {"a": 1}
    assert value.items == [("b", 2), 3]


def test_stand_ins_are_hashable_where_their_originals_are():
    """A torch.device or a tensor as a dict key or in a frozenset (protocol 2: a call)."""
    data = (
        b"\x80\x02}" + _global("torch", "device") + _text("cpu") + b"\x85R" + b"K\x01s"
        + _text("f") + _global("__builtin__", "frozenset") + b"]K\x01a\x85Rs."
    )  # fmt: skip
    value = load_inert(data, Policy(), class_stubs=False)
    assert value["f"] == frozenset({1})
    assert [k.name for k in value if not isinstance(k, str)] == ["torch.device"]


def test_weights_only_opcodes_match_torch() -> None:
    """modelgate's list of opcodes torch's weights_only unpickler reads is torch's own."""
    import inspect
    import pickle

    from torch import _weights_only_unpickler as wou

    source = inspect.getsource(wou.Unpickler.load)
    named = set(re.findall(r"\b([A-Z][A-Z0-9_]+)\[0\]", source))
    torch_reads = {n for n in named if hasattr(pickle, n)}
    assert torch_reads == WEIGHTS_ONLY_OPCODES
