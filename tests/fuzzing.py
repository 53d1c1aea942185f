"""Mutation fuzzing of real model files: the corpus, the mutations, and how a run is judged.

Shared by ``tests/test_fuzz.py`` (a few hundred cases) and ``benchmarks/fuzz.py`` (thousands).
Each case is a real model file of one format, mutated once: truncated, bytes flipped, or a
member of its archive edited (then re-zipped with valid checksums, so the edit reaches the
pickle, JSON or TorchScript reader behind the zip). One ``modelgate check`` run reads them
all; every model must come back as a report that passes or fails as documented, and nothing
may crash, hang or run the payload planted in the hostile seeds.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import modelfactory

# What a report must never say: the reader or a rule broke, or a time limit or crash hit.
CRASH_SIGNS = (
    "modelgate could not read it (",  # the loaders' catch-all: a reader bug
    "modelgate failed on this file",  # an exception escaped the engine in a worker
    "reader crashed on this file",
    "reader exited on this file",
    "reader stopped answering",
    "internal error in the rule",
)
HANG_SIGNS = ("timed out after",)


@dataclass
class Seed:
    name: str
    path: Path
    kind: str  # zip | stream | safetensors | onnx | onnx_external
    companions: list[Path] = field(default_factory=list)  # external data beside it


def build_corpus(folder: Path, marker: Path) -> list[Seed]:
    """One small real model per format, plus hostile seeds whose payload touches ``marker``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    f = modelfactory.Factory(folder)
    model = modelfactory.build("dropout").eval()
    seeds = [
        Seed("state_dict", f.state_dict(model, "sd.pt"), "zip"),
        Seed("checkpoint", f.state_dict(model, "ckpt.pt", wrap="model"), "zip"),
        Seed("legacy", f.state_dict(model, "legacy.pt", legacy=True), "stream"),
        Seed("pickled_module", f.whole_module(model, "whole.pt"), "zip"),
        Seed("torchscript", f.torchscript(model, name="ts.pt"), "zip"),
        Seed("pt2", f.pt2(model, name="ep.pt2"), "zip"),
        Seed("safetensors", f.safetensors(model.state_dict(), "w.safetensors"), "safetensors"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["h"], name="/fc/Gemm", transB=1),
        helper.make_node("Relu", ["h"], ["y"], name="/act/Relu"),
    ]
    inits = [
        numpy_helper.from_array(np.arange(128, dtype=np.float32).reshape(16, 8), "fc.weight"),
        numpy_helper.from_array(np.ones(16, np.float32), "fc.bias"),
    ]
    io_ = (
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])],
    )
    seeds.append(Seed("onnx", f.onnx(nodes, *io_, inits, name="m.onnx"), "onnx"))
    graph = helper.make_graph(nodes, "g", *io_, inits)
    ext = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "mx.onnx"
    onnx.save(ext, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="mx.data", size_threshold=0)  # fmt: skip
    seeds.append(Seed("onnx_external", path, "onnx_external", [folder / "mx.data"]))
    # hostile seeds: mutations keep the payload somewhere in most cases
    payload = (
        b"\x80\x02cos\nsystem\n(X" + struct.pack("<I", len(f"touch {marker}"))
        + f"touch {marker}".encode() + b"tR."
    )  # fmt: skip
    evil = folder / "evil.pt"
    evil.write_bytes(_with_members(seeds[0].path.read_bytes(), {"extra.pkl": payload}))
    seeds.append(Seed("hostile_zip", evil, "zip"))
    seeds.append(Seed("hostile_stream", f.raw(payload, "evil.pkl"), "stream"))
    seeds += _pickle_carriers(folder, payload)
    return seeds


def _pickle_carriers(folder: Path, payload: bytes) -> list[Seed]:
    """The formats that carry pickles (issue 12): NumPy .npy / .npz, an object array whose
    pickle is the payload, joblib raw and compressed."""
    import io

    import numpy as np

    weights = np.arange(64, dtype=np.float32).reshape(8, 8)
    np.save(folder / "w.npy", weights)
    np.savez_compressed(folder / "w.npz", w=weights, b=np.ones(8, np.float32))
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|O", "fortran_order": False, "shape": (1,)}
    )
    (folder / "evil.npy").write_bytes(b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + payload)
    seeds = [
        Seed("numpy", folder / "w.npy", "stream"),
        Seed("npz", folder / "w.npz", "zip"),
        Seed("hostile_npy", folder / "evil.npy", "stream"),
    ]
    try:
        import joblib
    except ImportError:  # a dev dependency; the other seeds still run
        return seeds
    joblib.dump({"coef": weights, "bias": np.ones(8)}, folder / "m.joblib")
    joblib.dump({"coef": weights}, folder / "mz.joblib", compress=3)
    seeds += [Seed("joblib", folder / "m.joblib", "stream"),
              Seed("joblib_zlib", folder / "mz.joblib", "stream")]  # fmt: skip
    return seeds


# ---------------------------------------------------------------------------------------------
# mutations: each takes the seed's bytes and a random source, returns new bytes
# ---------------------------------------------------------------------------------------------


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(0, max(1, len(data)))]


def flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    where = rng.choice(("anywhere", "head", "tail"))
    for _ in range(rng.choice((1, 1, 2, 4, 16))):
        if where == "head":
            i = rng.randrange(0, min(len(out), 512))
        elif where == "tail":
            i = rng.randrange(max(0, len(out) - 512), len(out))
        else:
            i = rng.randrange(0, len(out))
        out[i] = rng.choice((out[i] ^ (1 << rng.randrange(8)), rng.randrange(256), 0, 0xFF))
    return bytes(out)


def splice(data: bytes, rng: random.Random) -> bytes:
    """Copy a run of the file over another place of it (lengths, headers out of step)."""
    if len(data) < 4:
        return data + data
    a, b = sorted(rng.randrange(len(data)) for _ in range(2))
    n = rng.randrange(1, min(64, len(data) - a) + 1)
    return data[:b] + data[a : a + n] + data[b + n :]


def member_edit(data: bytes, rng: random.Random) -> bytes:
    """Edit one member of the archive and re-zip with valid checksums."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [(i.filename, zf.read(i)) for i in zf.infolist()]
    except Exception:
        return flip(data, rng)
    index = rng.randrange(len(members))
    name, body = members[index]
    action = rng.choice(
        ("truncate", "flip", "flip", "splice", "swap", "drop", "rename", "random", "empty", "dup")
    )
    if action == "truncate":
        body = truncate(body, rng)
    elif action == "flip" and name.endswith(".json") and rng.random() < 0.7:
        body = _json_poke(body, rng)  # valid JSON, wrong values: reaches the schema reader
    elif action == "flip" and body:
        body = flip(body, rng)
    elif action == "splice":
        body = splice(body, rng)
    elif action == "swap":
        body = members[rng.randrange(len(members))][1]
    elif action == "drop":
        del members[index]
        return _zip(members)
    elif action == "rename":
        name = name + rng.choice(("x", "/", ".pkl", "_"))
    elif action == "random":
        body = rng.randbytes(rng.choice((1, 8, 64, len(body) or 1)))
    elif action == "empty":
        body = b""
    elif action == "dup":
        members.append((name, body))
    members[index] = (name, body)
    return _zip(members)


def json_edit(data: bytes, rng: random.Random) -> bytes:
    """safetensors: rewrite the header with one value changed (and the length updated)."""
    try:
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8 : 8 + n])
        name = rng.choice([k for k in header if k != "__metadata__"])
    except Exception:
        return flip(data, rng)
    entry = header[name]
    action = rng.choice(("shape", "offsets", "dtype", "drop", "rename", "metadata", "nest"))
    if action == "shape":
        entry["shape"] = [rng.choice((0, 1, 3, 2**31, 2**63, -1)) for _ in entry["shape"]] or [7]
    elif action == "offsets":
        entry["data_offsets"][rng.randrange(2)] += rng.choice((-8, -1, 1, 8, 2**40))
    elif action == "dtype":
        entry["dtype"] = rng.choice(("F16", "I8", "BOOL", "F4", "X9", 3))
    elif action == "drop":
        del header[name]
    elif action == "rename":
        header[name + "x"] = header.pop(name)
    elif action == "metadata":
        header["__metadata__"] = rng.choice(({"a": 1}, {"format": "pt"}, [], "x"))
    else:
        entry["shape"] = [[[[1]]]]
    body = json.dumps(header).encode()
    return struct.pack("<Q", len(body)) + body + data[8 + n :]


_ODD_VALUES = (None, -1, 0, 2**70, 1.5, "x", "", [], {}, [[[]]], {"as_int": -5}, True)


def _json_poke(body: bytes, rng: random.Random) -> bytes:
    """Replace one value, somewhere in the document, with an odd one."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    parent, key, node = None, None, doc
    for _ in range(rng.randrange(1, 12)):
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node)) if (
            isinstance(node, list)
        ) else []  # fmt: skip
        if not children:
            break
        parent, (key, node) = node, rng.choice(children)
    if parent is None:
        return json.dumps(rng.choice(_ODD_VALUES)).encode()
    parent[key] = rng.choice(_ODD_VALUES)
    return json.dumps(doc).encode()


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        warnings.simplefilter("ignore")  # "Duplicate name": on purpose
        for name, body in members:
            zf.writestr(zipfile.ZipInfo(name), body)
    return out.getvalue()


def _with_members(data: bytes, extra: dict[str, bytes]) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = [(i.filename, zf.read(i)) for i in zf.infolist()]
    folder = members[0][0].split("/")[0]
    return _zip(members + [(f"{folder}/{k}", v) for k, v in extra.items()])


MUTATIONS: dict[str, list[Callable[[bytes, random.Random], bytes]]] = {
    "zip": [truncate, flip, splice, member_edit, member_edit, member_edit],
    "stream": [truncate, flip, flip, splice],
    "safetensors": [truncate, flip, splice, json_edit, json_edit],
    "onnx": [truncate, flip, flip, splice],
    "onnx_external": [truncate, flip, splice],
}


@dataclass
class Case:
    name: str
    seed: str
    mutation: str
    path: Path


def make_cases(seeds: list[Seed], folder: Path, count: int, seed: int) -> list[Case]:
    """``count`` mutated files, spread evenly over the seeds, deterministic for ``seed``."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for i in range(count):
        s = seeds[i % len(seeds)]
        mutate = rng.choice(MUTATIONS[s.kind])
        data = s.path.read_bytes()
        name = f"{i:05d}_{s.name}_{mutate.__name__}"
        if s.kind == "onnx_external":  # its own folder, beside (sometimes damaged) data
            where = folder / name
            where.mkdir()
            for companion in s.companions:
                shutil.copy(companion, where / companion.name)
            if rng.random() < 0.3:
                target = where / s.companions[0].name
                mutate = rng.choice((truncate, flip))
                target.write_bytes(mutate(target.read_bytes(), rng))
            else:
                data = mutate(data, rng)
            path = where / s.path.name
        else:
            data = mutate(data, rng)
            path = folder / (name + s.path.suffix)
        path.write_bytes(data)
        cases.append(Case(name, s.name, mutate.__name__, path))
    return cases


# ---------------------------------------------------------------------------------------------
# running and judging
# ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    cases: int = 0
    crashes: list[str] = field(default_factory=list)  # "case: what"
    hangs: list[str] = field(default_factory=list)
    wrong_exit: list[str] = field(default_factory=list)
    payload_ran: bool = False
    results: dict[str, int] = field(default_factory=dict)  # passed / MG901 / MG902 / other
    passed: dict[str, bool] = field(default_factory=dict)  # by case name

    @property
    def ok(self) -> bool:
        return not (self.crashes or self.hangs or self.wrong_exit or self.payload_ran)


def command(chunk: list[Case], jobs: int = 2, timeout: float = 30,
            cwd: Path | None = None) -> tuple[list[str], float, Path | None]:  # fmt: skip
    """(argv, the whole batch's time limit: a backstop, cwd) of one batch's run."""
    limit = timeout * len(chunk) / max(1, jobs) + 120
    return ([sys.executable, "-m", "modelgate", "check", "--format", "json", "-j", str(jobs),
             "--timeout", str(timeout), *(str(c.path) for c in chunk)], limit, cwd)  # fmt: skip


def run(cases: list[Case], marker: Path, jobs: int = 2, timeout: float = 30,
        batch: int = 400, cwd: Path | None = None,
        background: str | None = None) -> Outcome:  # fmt: skip
    """``modelgate check`` over the cases in batches (one process each), judged per model.
    ``background``: the name of the tests' background job (tests/background.py) that runs a
    single batch; waited for here (or started) instead of running it now."""
    outcome = Outcome()
    for start in range(0, len(cases), batch):
        chunk = cases[start : start + batch]
        args, limit, where = command(chunk, jobs, timeout, cwd)
        try:
            if background is not None and len(cases) <= batch:
                import background as jobs_ahead

                job = jobs_ahead.Command(args, cwd=where, timeout=limit)
                (done,) = jobs_ahead.run(background, [job])
            else:
                done = subprocess.run(
                    args, capture_output=True, text=True, timeout=limit, cwd=where
                )
        except subprocess.TimeoutExpired:
            outcome.hangs.extend(f"{c.name}: batch timed out" for c in chunk)
            continue
        judge(chunk, done.returncode, done.stdout, done.stderr, outcome)
    outcome.payload_ran = marker.exists()
    return outcome


def judge(chunk: list[Case], code: int, stdout: str, stderr: str, outcome: Outcome) -> None:
    outcome.cases += len(chunk)
    if "Traceback" in stderr or code not in (0, 1):
        outcome.crashes.append(f"{chunk[0].name}..: exit {code}, {stderr.strip()[-300:]}")
        return
    try:
        models = json.loads(stdout)["models"]
    except (ValueError, KeyError) as exc:
        outcome.crashes.append(f"{chunk[0].name}..: no JSON report ({exc})")
        return
    if len(models) != len(chunk):
        outcome.crashes.append(f"{chunk[0].name}..: {len(models)} reports for {len(chunk)}")
        return
    for case, model in zip(chunk, models, strict=True):
        texts = [f["message"] for f in model["findings"]] + list(
            s["reason"] for s in model["skipped"]
        )
        for sign in CRASH_SIGNS:
            hit = next((t for t in texts if sign in t), None)
            if hit:
                outcome.crashes.append(f"{case.name}: {hit[:200]}")
        if any(sign in t for t in texts for sign in HANG_SIGNS):
            outcome.hangs.append(case.name)
        errors = [f for f in model["findings"] if f["severity"] == "error"]
        if model["passed"] == bool(errors):  # default fail_on error: fails iff an error
            outcome.wrong_exit.append(f"{case.name}: passed={model['passed']} errors={errors}")
        outcome.passed[case.name] = model["passed"]
        key = "passed" if model["passed"] else (errors[0]["rule"] if errors else "other")
        outcome.results[key] = outcome.results.get(key, 0) + 1
    if (code == 0) != all(m["passed"] for m in models):
        outcome.wrong_exit.append(f"{chunk[0].name}..: exit {code} disagrees with the report")
