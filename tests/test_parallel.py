"""Many models: worker processes, identical reports whatever -j, crashes and hangs contained,
and start-up that stays free of torch for what does not need it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import background
import modelfactory
import pytest

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _AHEAD.get("folder") or _folder(tmp_path_factory)


def _folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of models in every torch-free format, good and bad, nested one level."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    root = tmp_path_factory.mktemp("many")
    f = modelfactory.Factory(root)
    model = modelfactory.build("dropout").eval()
    f.state_dict(model, "a_state.pt")
    f.state_dict(model, "b_legacy.pt", legacy=True)
    f.pt2(modelfactory.build("dropout").train(), name="c_train.pt2")
    f.safetensors(model.state_dict(), "d.safetensors")
    f.onnx(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.ones((4, 8), np.float32), "w")],
        name="e.onnx",
    )
    f.raw(b"version https://git-lfs.github.com/spec/v1\n", "f_lfs.pt")
    (root / "sub").mkdir()
    modelfactory.Factory(root / "sub").whole_module(model, "g_whole.pt")
    return root


def start_background(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build the folder at the start of the session; the CLI runs over it go to the
    background (tests/background.py), one job at a time, until the tests read them."""
    root = _AHEAD["folder"] = _folder(tmp_path_factory)
    fake = _AHEAD["fake"] = tmp_path_factory.mktemp("fake-torch")
    for name, commands in _jobs(root, fake).items():
        background.add(name, commands)


_AHEAD: dict[str, Path] = {}
JOBS = f"{__name__}.jobs"
IN_PROCESS = f"{__name__}.cli"
RIGGED_RUN = f"{__name__}.rigged"
_ARGS = ("check", "--format", "json")
TORCH_FREE = f"{__name__}.torch_free"


def _jobs(folder: Path, fake: Path) -> dict[str, list[background.Command]]:
    """Every CLI run the tests below read, by job (side by side within one)."""
    env = _torch_free_env(fake)
    return {
        JOBS: [_command(folder, "-j", "1"), _command(folder, "-j", "2")],
        IN_PROCESS: [_command(folder)],
        RIGGED_RUN: [
            background.Command(
                [sys.executable, "-c", RIGGED, *_ARGS, "-j", "2", "--timeout", "3", str(folder)],
                cwd=folder,
                timeout=120,
            )
        ],
        TORCH_FREE: [
            background.Command(
                [sys.executable, "-m", "modelgate", "--version"], env=env, timeout=60
            ),
            _command(folder, "-j", "2", env=env),
        ],
    }


def _results(name: str, folder: Path, fake: Path) -> list[subprocess.CompletedProcess]:
    return background.run(name, _jobs(folder, fake)[name])


def _command(folder: Path, *args: str, env: dict[str, str] | None = None) -> background.Command:
    return background.Command(
        [sys.executable, "-m", "modelgate", "check", "--format", "json", str(folder), *args],
        cwd=folder, env=env, timeout=300,
    )  # fmt: skip


def _check(folder: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "modelgate", "check", "--format", "json", str(folder), *args],
        capture_output=True, text=True, timeout=300, cwd=folder, env=env,
    )  # fmt: skip
    return out.returncode, out.stdout, out.stderr


def _triple(out: subprocess.CompletedProcess) -> tuple[int, str, str]:
    return out.returncode, out.stdout, out.stderr


def test_jobs_do_not_change_the_report(folder: Path, tmp_path: Path) -> None:
    serial, parallel = map(_triple, _results(JOBS, folder, tmp_path))
    assert serial[0] == parallel[0] == 1
    assert serial[1] == parallel[1]
    report = json.loads(serial[1])
    assert [m["path"] for m in report["models"]] == [
        "a_state.pt", "b_legacy.pt", "c_train.pt2", "d.safetensors", "e.onnx", "f_lfs.pt",
        "sub/g_whole.pt",
    ]  # fmt: skip
    assert [m["passed"] for m in report["models"]] == [True, True, False, True, True, False, False]


def test_engine_run_in_process_matches_the_cli(folder: Path, monkeypatch, tmp_path) -> None:
    """The API (a parent that has run torch: workers come from a fork server) agrees too."""
    from modelgate import config, discover, driver

    monkeypatch.chdir(folder)
    found = discover.discover(["."])  # what the CLI does: its folder-scan note too
    paths = found.files
    one = driver.run(paths, config.Config(), jobs=1, found=found).to_dict()
    two = driver.run(paths, config.Config(), jobs=2, found=found).to_dict()
    assert one == two
    (cli,) = _results(IN_PROCESS, folder, tmp_path)
    assert one == json.loads(cli.stdout)


RIGGED = """
import os, signal, sys, time
from modelgate import engine
real = engine.check_file
def rigged(path, *args, **kwargs):
    if path.endswith("d.safetensors"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if path.endswith("e.onnx"):
        time.sleep(60)
    return real(path, *args, **kwargs)
engine.check_file = rigged
from modelgate.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_crash_or_a_hang_costs_one_model_not_the_run(folder: Path, tmp_path: Path) -> None:
    """A reader that segfaults, and one that never returns: MG902 each, the rest checked."""
    (out,) = _results(RIGGED_RUN, folder, tmp_path)
    assert out.returncode == 1, out.stderr
    models = {m["path"]: m for m in json.loads(out.stdout)["models"]}
    assert len(models) == 7
    crashed = models["d.safetensors"]["findings"]
    assert [f["rule"] for f in crashed] == ["MG902"]
    assert "crashed on this file (signal 11, SIGSEGV)" in crashed[0]["message"]
    hung = models["e.onnx"]["findings"]
    assert [f["rule"] for f in hung] == ["MG902"]
    assert hung[0]["message"].startswith("timed out after 3 s")
    assert models["a_state.pt"]["passed"] and models["b_legacy.pt"]["passed"]
    assert "Traceback" not in out.stderr


def test_hash_collision_bomb_is_refused_at_once(tmp_path: Path) -> None:
    """A dict keyed by 200k integers sharing one hash takes minutes to build: not built."""
    from modelgate.loaders import load

    prime = 2**61 - 1
    parts = [b"\x80\x02}("]
    for k in range(1, 200_001):
        raw = (k * prime).to_bytes(12, "little", signed=True)
        parts.append(b"\x8a\x0c" + raw + b"K\x00")  # LONG1 key, BININT1 0
    path = modelfactory.Factory(tmp_path).torch_zip(b"".join(parts) + b"u.")
    graph = load(str(path))
    assert [i.detail for i in graph.pickle_issues] == [
        "cannot follow the pickle: more than 10,000 integers over 2**61"
    ]


def _torch_free_env(where: Path) -> dict[str, str]:
    """A torch that records being imported, in front of the real one on PYTHONPATH."""
    fake = where / "fake" / "torch"
    fake.mkdir(parents=True, exist_ok=True)
    marker = where / "torch-imported"
    fake.joinpath("__init__.py").write_text(
        textwrap.dedent(f"""
        open({str(marker)!r}, "a").write("imported\\n")
        raise ImportError("torch must not be imported here")
        """)
    )
    return {"PYTHONPATH": str(where / "fake"), "PATH": "/usr/bin:/bin"}


def test_torch_free_checks_never_import_torch(folder: Path, tmp_path: Path) -> None:
    """Start-up and torch-free formats, in the CLI process and its workers: a torch that
    records being imported stands in front of the real one on PYTHONPATH."""
    where = _AHEAD.get("fake", tmp_path)  # where the fake is, if the runs started ahead
    version, check = _results(TORCH_FREE, folder, where)
    marker = where / "torch-imported"
    assert version.returncode == 0 and version.stdout.startswith("modelgate ")
    code, out, err = _triple(check)
    assert code == 1, err
    assert [m["format"] for m in json.loads(out)["models"]] == [
        "state_dict", "state_dict", "torch_export", "safetensors", "onnx", "lfs-pointer",
        "pickled_module",
    ]  # fmt: skip
    assert not marker.exists()


@pytest.mark.parametrize("args", [("-j", "0"), ("-j", "two"), ("--timeout", "0")])
def test_jobs_and_timeout_must_be_positive(run_cli, args: tuple[str, str]) -> None:
    code, _, err = run_cli("check", ".", *args)
    assert code == 2
    assert "must be more than 0" in err or "expected a number" in err


NOTHING_HEAVY = textwrap.dedent("""
    import json, sys
    from modelgate import engine, options, parallel
    mode, paths = sys.argv[1], sys.argv[2:]
    config, inputs = options.load(options.Options(static=mode == "static"))
    if mode == "workers":  # two workers forked from here: what did this process import?
        reports = parallel.check_all(paths, config, inputs, jobs=2)
    else:
        reports = [engine.check_file(p, config, inputs) for p in paths]
    heavy = ("torch", "coremltools", "onnxruntime", "executorch", "litert_torch")
    print(json.dumps([sorted(m for m in heavy if m in sys.modules), [r.format for r in reports]]))
""")


@pytest.mark.parametrize(
    ("mode", "formats"),
    [("static", ["torch_export"]), ("weights", ["state_dict"]),
     ("workers", ["safetensors", "onnx"])],
)  # fmt: skip
def test_toolchains_load_only_for_models_that_use_them(tmp_path: Path, mode, formats) -> None:
    """With Core ML and ONNX conversions and a compression preset in the config: ``--static``
    loads no toolchain for a .pt2; a state dict, which has no graph to convert, loads none;
    and a -j 2 run of files no toolchain converts (safetensors, ONNX: checked as given, in
    the workers) does not import the toolchains into the parent to share with its workers."""
    (tmp_path / "modelgate.yaml").write_text("convert: [coreml, onnx]\ncompress: palettize-8\n")
    f = modelfactory.Factory(tmp_path)
    model = modelfactory.build("clean").eval()
    if mode == "static":
        paths = [f.pt2(model, name="net.pt2")]
    elif mode == "weights":
        paths = [f.state_dict(model, "weights.pt")]
    else:
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper

        paths = [f.safetensors(model.state_dict(), "w.safetensors"), f.onnx(
            [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
            [numpy_helper.from_array(np.ones((4, 8), np.float32), "w")],
        )]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", NOTHING_HEAVY, mode, *map(str, paths)],
        cwd=tmp_path, env=background.environ(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [[], formats]
