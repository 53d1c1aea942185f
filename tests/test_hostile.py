"""Malicious files, one per way scanners have been bypassed: none runs, each is reported.

Every payload would leave a file behind. A child process first proves each one is live (plain
``pickle.loads``, or ``torch.load`` / ``torch.jit.load`` / ``torch.export.load`` where the
trick is in how torch reads the file, creates its marker); then ``modelgate check`` reads them
all, must report each as MG901 (an archive that two readers would see differently is scanned
entry by entry: what any of them may run is MG901), and no marker may appear.
"""

from __future__ import annotations

import ast
import io
import json
import struct
import subprocess
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("torch")

import background
import modelfactory

from modelgate.loaders import Policy, load

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# pickle opcodes, written by hand so that each trick is exactly what the test says
# ---------------------------------------------------------------------------------------------


def text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL


def call(func: bytes, *args: bytes) -> bytes:
    return func + b"(" + b"".join(args) + b"tR"  # MARK args TUPLE REDUCE


def program(body: bytes, proto: int = 2) -> bytes:
    return bytes([0x80, proto]) + body + b"."


def touch(marker: Path) -> bytes:
    return text(f"touch {marker}")


# ---------------------------------------------------------------------------------------------
# zips, also written by hand where the trick is in the structure
# ---------------------------------------------------------------------------------------------


def local_header(name: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data)
    return struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, len(data), len(data), len(name), 0
    ) + name + data  # fmt: skip


def central(name: bytes, data: bytes, offset: int, version: int = 20) -> bytes:
    crc = zlib.crc32(data)
    return struct.pack(
        "<4s6H3L5H2L", b"PK\x01\x02", 20, version, 0, 0, 0, 0, crc, len(data), len(data),
        len(name), 0, 0, 0, 0, 0, offset,
    ) + name  # fmt: skip


def end_record(entries: int, size: int, offset: int) -> bytes:
    return struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, entries, entries, size, offset, 0)


def build_zip(
    members: list[tuple[bytes, bytes]], version: int = 20, local: dict[bytes, bytes] | None = None
) -> bytes:
    """A stored zip; ``version`` is data.pkl's "version needed", ``local`` renames members in
    their local headers only."""
    out, offsets = b"", []
    for name, data in members:
        offsets.append(len(out))
        out += local_header((local or {}).get(name, name), data)
    cd = b"".join(
        central(n, d, o, version if n.endswith(b"data.pkl") else 20)
        for (n, d), o in zip(members, offsets, strict=True)
    )
    return out + cd + end_record(len(members), len(cd), len(out))


def zip_members(data: bytes) -> list[tuple[bytes, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename.encode(), zf.read(i)) for i in zf.infolist()]


def with_members(data: bytes, replace: dict[str, bytes]) -> bytes:
    """A zip's bytes with members replaced (matched by name suffix) or added."""
    out = io.BytesIO()
    rewrite_zip(io.BytesIO(data), out, replace)  # type: ignore[arg-type]
    return out.getvalue()


def rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes]) -> None:
    """Copy a zip member by member, replacing (or adding) the members named by suffix."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        done = set()
        for info in zin.infolist():
            key = next((k for k in replace if info.filename.endswith(k)), None)
            zout.writestr(info.filename, zin.read(info) if key is None else replace[key])
            done.add(key)
        folder = zin.infolist()[0].filename.split("/")[0]
        for key, data in replace.items():
            if key not in done:
                zout.writestr(f"{folder}/{key}", data)


def torch_save_bytes(obj: object, legacy: bool = False) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def pickle_spans(data: bytes, count: int) -> list[tuple[int, int]]:
    """Where the first ``count`` pickles of a legacy torch.save stream start and end."""
    import pickletools

    spans, stream = [], io.BytesIO(data)
    for _ in range(count):
        start = stream.tell()
        for op, _arg, _pos in pickletools.genops(stream):
            if op.name == "STOP":
                break
        spans.append((start, stream.tell()))
    return spans


# ---------------------------------------------------------------------------------------------
# the cases
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    file: Path
    live: str  # Python run in the child process that proves the payload works
    rule: str  # what modelgate must report
    says: str  # in one of that rule's messages
    marker: Path


def _cases(folder: Path) -> dict[str, Case]:
    import torch

    f = modelfactory.Factory(folder)
    state = {"fc.weight": torch.ones(2, 2), "fc.bias": torch.zeros(2)}
    good = torch_save_bytes(state)
    cases: dict[str, Case] = {}

    def marker(name: str) -> Path:
        return folder / f"{name}.marker"

    def add(name: str, data: bytes, rule: str, says: str, live: str | None = None,
            payload: bytes | None = None, suffix: str = ".pt") -> None:  # fmt: skip
        path = f.raw(data, name + suffix)
        if live is None:  # the payload pickle on its own, for pickle.loads
            side = f.raw(payload if payload is not None else data, name + ".payload")
            live = f"pickle.loads(open({str(side)!r}, 'rb').read())"
        cases[name] = Case(path, live.replace("PATH", repr(str(path))), rule, says, marker(name))

    def in_zip(name: str, pkl: bytes, rule: str, says: str, **kw: object) -> None:
        add(name, f.torch_zip(pkl, name + ".zip").read_bytes(), rule, says, payload=pkl, **kw)

    # 1. globals not on the allow-list
    m = marker
    in_zip("os_system", program(call(glob("os", "system"), touch(m("os_system")))),
           "MG901", "os.system")  # fmt: skip
    popen = b"(" + text("touch") + text(str(m("popen"))) + b"l"  # a list argument
    payload = program(call(glob("subprocess", "Popen"), popen))
    side = f.raw(payload, "popen.payload")
    add(
        "popen",
        f.torch_zip(payload, "popen.zip").read_bytes(),
        "MG901",
        "subprocess.Popen",
        live=f"pickle.loads(open({str(side)!r}, 'rb').read()); import time; time.sleep(1)",
    )
    opener = f"open({str(m('exec'))!r}, 'w').close()"
    in_zip("exec", program(call(glob("builtins", "exec"), text(opener))), "MG901", "builtins.exec")
    opener = f"open({str(m('eval'))!r}, 'w')"
    in_zip("eval", program(call(glob("__builtin__", "eval"), text(opener))), "MG901",
           "builtins.eval")  # fmt: skip
    opener = f"open({str(m('runpy'))!r}, 'w').close()"
    in_zip("runpy", program(call(glob("runpy", "_run_code"), text(opener), b"}")), "MG901",
           "runpy._run_code")  # fmt: skip

    # 2. STACK_GLOBAL whose strings come through the memo (BINPUT/BINGET, MEMOIZE)
    body = text("os") + b"q\x00" + text("system") + b"q\x01" + b"00" + b"h\x00h\x01\x93"
    in_zip("memo_binget", program(call(body, touch(m("memo_binget"))), 4), "MG901", "os.system")
    body = text("os") + b"\x94" + text("system") + b"\x94" + b"00" + b"h\x00h\x01\x93"
    in_zip("memoize", program(call(body, touch(m("memoize"))), 4), "MG901", "os.system")

    # 3. STACK_GLOBAL fed by a value the scanner cannot know without running the pickle
    body = call(glob("builtins", "str"), text("os")) + text("system") + b"\x93"
    in_zip("computed_global", program(call(body, touch(m("computed_global"))), 4), "MG901",
           "cannot follow")  # fmt: skip

    # 4. pickles hidden in other members, and nested archives
    for name, member in (("extra_pkl", "extra.pkl"), ("unnamed", "data/extra"),
                         ("dot_data", ".data/serialization_id")):  # fmt: skip
        payload = program(call(glob("os", "system"), touch(m(name))))
        add(name, with_members(good, {member: payload}), "MG901",
            f"{member}: calls os.system", payload=payload)  # fmt: skip
    inner = program(call(glob("os", "system"), touch(m("nested_zip"))))
    nested = f.torch_zip(inner, "inner.zip").read_bytes()
    add("nested_zip", with_members(good, {"nested.pt": nested}), "MG901",
        "nested.pt!archive/data.pkl: calls os.system", payload=inner)  # fmt: skip

    # 5. zip structure: what Python's zipfile reads is not what torch's miniz reads
    bad = program(call(glob("os", "system"), touch(m("prepended"))))
    cases.update(_two_views(folder, good, bad, m("prepended")))
    members = zip_members(good)
    evil = program(call(glob("os", "system"), touch(m("duplicate"))))
    add("duplicate", build_zip([*members, (members[0][0], evil)]), "MG901", "os.system",
        payload=evil)  # fmt: skip
    evil = program(call(glob("os", "system"), touch(m("local_name"))))
    data = build_zip([*members, (b"archive/extra.pkl", evil)],
                     local={b"archive/extra.pkl": b"archive/other.pkl"})  # fmt: skip
    add("local_name", data, "MG901", "os.system", payload=evil)
    evil = program(call(glob("os", "system"), touch(m("overlap"))))
    add("overlap", _overlapping(members, evil), "MG901", "os.system", payload=evil)
    evil = program(call(glob("os", "system"), touch(m("appended_zip"))))
    add("appended_zip", good + build_zip([(members[0][0], evil), *members[1:]]), "MG901",
        "os.system", payload=evil)  # fmt: skip
    evil = program(call(glob("os", "system"), touch(m("trailing"))))
    add("trailing", good + evil, "MG902", "after the end of the zip archive", payload=evil)
    evil = program(call(glob("os", "system"), touch(m("zip_version"))))
    add("zip_version", build_zip([(members[0][0], evil), *members[1:]], version=99), "MG901",
        "os.system", live="torch.load(PATH, weights_only=False)")  # fmt: skip

    # 6. builtins introspection: getattr(__import__("os"), "system")
    module = call(glob("builtins", "__import__"), text("os"))
    func = call(glob("builtins", "getattr"), module, text("system"))
    in_zip("getattr_import", program(call(func, touch(m("getattr_import")))), "MG901",
           "builtins.getattr")  # fmt: skip

    # 7. a pickle that unpickles another: pickle.loads, _pickle.loads
    for name, module in (("nested_loads", "pickle"), ("nested_c_loads", "_pickle")):
        inner = program(call(glob("os", "system"), touch(m(name))))
        body = call(glob(module, "loads"), b"C" + bytes([len(inner)]) + inner)
        in_zip(name, program(body, 3), "MG901", f"{module}.loads")

    # 8. EXT1: the copyreg extension registry names the global
    payload = program(b"\x82\xf0" + b"(" + touch(m("ext1")) + b"tR")
    add("ext1", f.torch_zip(payload, "ext1.zip").read_bytes(), "MG901", "copyreg extension",
        live="import copyreg; copyreg.add_extension('os', 'system', 0xF0); "
        f"pickle.loads({payload!r})")  # fmt: skip

    # 9. INST and OBJ build "instances" by calling the class
    in_zip("inst", program(b"(" + touch(m("inst")) + b"ios\nsystem\n"), "MG901", "os.system")
    in_zip("obj", program(b"(" + glob("os", "system") + touch(m("obj")) + b"o"), "MG901",
           "os.system")  # fmt: skip

    # 10. the legacy (non-zip) torch.save layout: a malicious sys-info or object pickle
    legacy = torch_save_bytes(state, legacy=True)
    spans = pickle_spans(legacy, 5)
    for name, index in (("legacy_sys_info", 2), ("legacy_object", 3)):
        evil = program(call(glob("os", "system"), touch(m(name))))
        start, end = spans[index]
        add(name, legacy[:start] + evil + legacy[end:], "MG901", f"legacy pickle {index + 1} of 5",
            live="torch.load(PATH, weights_only=False)")  # fmt: skip

    # 11. protocol 0 and 1: no protocol header, text opcodes
    command = f"touch {m('protocol0')}".encode()
    add("protocol0", glob("os", "system") + b"(S'" + command + b"'\ntR.", "MG901", "os.system")
    command = f"touch {m('protocol1')}".encode()
    data = glob("os", "system") + b"(U" + bytes([len(command)]) + command + b"tR."
    add("protocol1", data, "MG901", "os.system")

    # 12. a dotted lookup from an allowed module (protocol 4): torch -> serialization.os.system
    body = text("torch") + text("serialization.os.system") + b"\x93"
    in_zip(
        "dotted",
        program(call(body, touch(m("dotted"))), 4),
        "MG901",
        "attribute path",
        live=f"import torch; pickle.loads({program(call(body, touch(m('dotted'))), 4)!r})",
    )

    # 13. torch.export archives: sample inputs and use_pickle constants go to torch.load
    cases.update(_pt2_cases(folder, marker))
    # 14. TorchScript: __setstate__ runs archive code at torch.jit.load
    cases["ts_setstate"] = _torchscript_case(folder, marker("ts_setstate"))
    return cases


def _two_views(folder: Path, good: bytes, bad: bytes, marker: Path) -> dict[str, Case]:
    """Python reads a clean state dict; torch (miniz) reads the one whose data.pkl is bad.

    Python finds the central directory where the end record's size says it ends (and takes
    the difference as data prepended to the archive); miniz uses the offset as written.
    """
    good_members = zip_members(good)
    bad_members = [(n, bad if n.endswith(b"data.pkl") else d) for n, d in good_members]
    out, bad_offsets, good_offsets = b"", [], []
    for name, data in bad_members:
        bad_offsets.append(len(out))
        out += local_header(name, data)
    for name, data in good_members:
        good_offsets.append(len(out))
        out += local_header(name, data)
    bad_cd_at = len(out)
    bad_cd = b"".join(central(n, d, o) for (n, d), o in zip(bad_members, bad_offsets, strict=True))
    shift = len(bad_cd)  # zipfile's "concat": the bytes it takes for data before the archive
    good_cd = b"".join(
        central(n, d, o - shift) for (n, d), o in zip(good_members, good_offsets, strict=True)
    )
    assert len(good_cd) == len(bad_cd)
    data = out + bad_cd + good_cd + end_record(len(bad_members), len(bad_cd), bad_cd_at)
    path = folder / "prepended.pt"
    path.write_bytes(data)
    with zipfile.ZipFile(path) as zf:  # the view Python gets is the clean one
        assert zf.read("archive/data.pkl") == dict(good_members)[b"archive/data.pkl"]
    live = f"torch.load({str(path)!r}, weights_only=False)"
    return {"prepended": Case(path, live, "MG901", "os.system", marker)}


def _overlapping(members: list[tuple[bytes, bytes]], evil: bytes) -> bytes:
    """A storage member whose bytes hold a whole second member, listed on its own."""
    hidden = local_header(b"archive/extra.pkl", evil)
    members = [*members, (b"archive/data/9", hidden)]
    out, offsets = b"", []
    for name, data in members:
        offsets.append(len(out))
        out += local_header(name, data)
    inside = offsets[-1] + 30 + len(b"archive/data/9")
    entries = [*members, (b"archive/extra.pkl", evil)]
    cd = b"".join(central(n, d, o) for (n, d), o in zip(entries, [*offsets, inside], strict=True))
    return out + cd + end_record(len(entries), len(cd), len(out))


def _pt2_cases(folder: Path, marker) -> dict[str, Case]:  # type: ignore[no-untyped-def]
    f = modelfactory.Factory(folder)
    base = f.pt2(modelfactory.build("clean").eval(), name="base.pt2")
    cases = {}
    # sample inputs: torch.export.load tries weights_only=True, then falls back to False
    payload = program(call(glob("os", "system"), touch(marker("pt2_sample_inputs"))))
    sample = f.torch_zip(payload, "sample.zip").read_bytes()
    path = folder / "pt2_sample_inputs.pt2"
    rewrite_zip(base, path, {"data/sample_inputs/model.pt": sample})
    live = f"import torch; torch.export.load({str(path)!r})"
    cases["pt2_sample_inputs"] = Case(path, live, "MG901", "sample_inputs/model.pt!",
                                      marker("pt2_sample_inputs"))  # fmt: skip
    # a constant saved with use_pickle: torch.load(weights_only=False), here a protocol 0 pickle
    payload = glob("os", "system") + b"(" + f"S'touch {marker('pt2_constant')}'\n".encode()
    payload += b"tR."
    with zipfile.ZipFile(base) as zf:
        name = next(n for n in zf.namelist() if n.endswith("model_constants_config.json"))
        config = json.loads(zf.read(name))
    entry = {"path_name": "tensor_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
    config["config"]["evil"] = entry
    path = folder / "pt2_constant.pt2"
    members = {"data/constants/model_constants_config.json": json.dumps(config).encode(),
               "data/constants/tensor_0": payload}  # fmt: skip
    rewrite_zip(base, path, members)
    live = f"import torch; torch.export.load({str(path)!r})"
    cases["pt2_constant"] = Case(path, live, "MG901", "data/constants/tensor_0: calls os.system",
                                 marker("pt2_constant"))  # fmt: skip
    return cases


def _torchscript_case(folder: Path, marker: Path) -> Case:
    code = f"""
import torch
from typing import Tuple
class Evil(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))
    def forward(self, x):
        return x * self.w
    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, bool]:
        return (self.w, self.training)
    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, bool]) -> None:
        self.w = state[0]
        self.training = state[1]
        torch.save(torch.ones(1), {str(marker)!r})
torch.jit.script(Evil()).save({str(folder / "ts_setstate.pt")!r})
"""
    script = folder / "make_ts.py"  # TorchScript compiles from source: it needs a file
    script.write_text(code)
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True, timeout=120)
    path = folder / "ts_setstate.pt"
    live = f"import torch; torch.jit.load({str(path)!r})"
    return Case(path, live, "MG901", "calls torch.save", marker)


# ---------------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------------

LIVENESS = """
import json, os, pickle, sys
import torch
cases = json.loads(sys.argv[1])
out = {}
for name, (live, marker) in cases.items():
    try:
        exec(live)
    except BaseException:
        pass
    out[name] = os.path.exists(marker)
    if out[name]:
        os.unlink(marker)
print(json.dumps(out))
"""


def start_background(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build the cases at the start of the session; the two runs over them go to the
    background (tests/background.py), one after the other, until :func:`hostile` reads them."""
    folder = tmp_path_factory.mktemp("hostile")
    cases = _AHEAD["cases"] = (folder, _cases(folder))
    live, check = _runs(*cases)
    background.add(LIVE, [live])  # one job at a time: the check starts after the liveness run
    background.add(CHECK, [check])


_AHEAD: dict[str, tuple[Path, dict[str, Case]]] = {}
LIVE, CHECK = f"{__name__}.liveness", f"{__name__}.check"


def _runs(folder: Path, cases: dict[str, Case]) -> tuple[background.Command, background.Command]:
    args = json.dumps({n: (c.live, str(c.marker)) for n, c in cases.items()})
    live = background.Command([sys.executable, "-c", LIVENESS, args], cwd=folder, timeout=300)
    check = background.Command(
        [sys.executable, "-m", "modelgate", "check", "--format", "json", "-j", "2",
         *(str(c.file) for c in cases.values())],
        cwd=folder, timeout=300,
    )  # fmt: skip
    return live, check


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Case], dict]:
    """Every case built; the payloads proven live; one modelgate run over all of them."""
    if "cases" in _AHEAD:
        folder, cases = _AHEAD["cases"]
    else:
        folder = tmp_path_factory.mktemp("hostile")
        cases = _cases(folder)
    live_run, check = _runs(folder, cases)
    (out,) = background.run(LIVE, [live_run])  # waited for before the check starts
    live = json.loads(out.stdout.strip().splitlines()[-1])
    (run,) = background.run(CHECK, [check])
    report = json.loads(run.stdout)
    models = dict(zip(cases, report["models"], strict=True))
    return cases, {"live": live, "models": models, "code": run.returncode, "stderr": run.stderr}


CASE_NAMES = [
    "os_system", "popen", "exec", "eval", "runpy", "memo_binget", "memoize", "computed_global",
    "extra_pkl", "unnamed", "dot_data", "nested_zip", "prepended", "duplicate", "local_name",
    "overlap", "appended_zip", "trailing", "zip_version", "getattr_import", "nested_loads",
    "nested_c_loads", "ext1", "inst", "obj", "legacy_sys_info", "legacy_object", "protocol0",
    "protocol1", "dotted", "pt2_sample_inputs", "pt2_constant", "ts_setstate",
]  # fmt: skip


@pytest.mark.parametrize("name", CASE_NAMES)
def test_payload_is_live_and_modelgate_reports_it_without_running_it(
    hostile: tuple[dict[str, Case], dict], name: str
) -> None:
    cases, run = hostile
    case = cases[name]
    assert run["live"][name], f"{name}: the payload did not run in the child: not a real test"
    model = run["models"][name]
    assert model["passed"] is False
    said = [f["message"] for f in model["findings"] if f["rule"] == case.rule]
    assert any(case.says in message for message in said), (case.rule, model["findings"])
    assert not case.marker.exists(), f"{name}: modelgate ran the payload"


def test_the_run_is_one_clean_report(hostile: tuple[dict[str, Case], dict]) -> None:
    cases, run = hostile
    assert set(CASE_NAMES) == set(cases)
    assert run["code"] == 1
    assert "Traceback" not in run["stderr"]
    assert not any(c.marker.exists() for c in cases.values())


def test_allow_list_globs_never_admit_attribute_paths(tmp_path: Path) -> None:
    """A user who trusts ``mypkg.*`` (here ``torch.*``) trusts classes, not a walk from there
    to ``os.system`` through module attributes."""
    body = text("torch") + text("serialization.os.system") + b"\x93"
    path = modelfactory.Factory(tmp_path).torch_zip(program(call(body, text("true")), 4))
    graph = load(str(path), Policy(extra=("torch.*",)))
    assert [i.global_name for i in graph.pickle_issues] == ["torch.serialization.os.system"]
    graph = load(str(path), Policy(extra=("torch.serialization.os.system",)))  # exact: allowed
    assert graph.pickle_issues == []


def test_allowed_globals_cannot_be_patched_by_build(tmp_path: Path) -> None:
    """BUILD on a global (setting attributes on torch.Tensor itself) is never allowed."""
    body = glob("torch", "Tensor") + b"N}" + text("__reduce_ex__") + b"N" + b"s\x86b"
    path = modelfactory.Factory(tmp_path).torch_zip(program(body))
    graph = load(str(path))
    assert [(i.global_name, i.usage) for i in graph.pickle_issues] == [("torch.Tensor", "build")]


def test_every_torch_load_in_modelgate_says_weights_only() -> None:
    """modelgate's own code: torch.load only with weights_only=True spelled out."""
    offenders = []
    for path in [*ROOT.joinpath("modelgate").rglob("*.py"), *ROOT.joinpath("rules").glob("*.py")]:
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                safe = any(
                    k.arg == "weights_only"
                    and isinstance(k.value, ast.Constant)
                    and k.value.value is True
                    for k in node.keywords
                )
                if not safe:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
