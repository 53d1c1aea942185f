"""The LiteRT target against litert-torch and the LiteRT interpreter themselves, both ways.

The edge targets' five models (``torchmodels.EDGE``): a CNN with hardswish, a transformer
encoder with a causal mask, an FFT and the CNN with a dynamic batch convert, load and run; the
model using sort / topk / cumsum converts, then the interpreter refuses it ("Didn't find op
for builtin opcode 'STABLEHLO_SORT'"). modelgate's report (one ``modelgate check`` of the five)
is compared with the bare toolchain run on the same files in one fresh process (litert-torch
imported once): whether it converts and loads, the stage and the op a model fails at, MG108
exactly when the interpreter refuses the model, the tensors and the file size.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import background
import pytest

torch = pytest.importorskip("torch")
TOOLCHAIN = (
    "litert_torch",
    "ai_edge_litert",
)  # run in child processes: a broken install fails there, never skips
if not all(importlib.util.find_spec(p) for p in TOOLCHAIN):
    pytest.skip("the toolchain is not installed", allow_module_level=True)

import torchmodels  # noqa: E402  (imports torch)

_AHEAD: dict[str, Path] = {}
RUNS = f"{__name__}.runs"  # modelgate's check and the bare toolchain, side by side
FILES = tuple(torchmodels.EDGE)
RUNS_OK = ("cnn.pt2", "encoder.pt2", "spectrum.pt2", "dynamic.pt2")
LOADING = "loading the model into the LiteRT interpreter"
_MISSING = re.compile(r"Didn't find op for builtin opcode '([^']+)'")

# the bare toolchain on the same files: convert on the saved example inputs (what modelgate
# runs, the dynamic batch filled with its minimum, 2), write, load, run; and the dynamic CNN
# once more with its batch left dynamic, run at another batch
BARE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, tempfile, warnings
    warnings.simplefilter("ignore")
    import litert_torch, numpy as np, torch
    from ai_edge_litert.interpreter import Interpreter

    def convert(program, path, **kwargs):
        sample = tuple(program.example_inputs[0])
        try:
            litert_torch.convert(program.module(), sample, **kwargs).export(path)
        except Exception as exc:
            return {"converts": False, "error": f"{type(exc).__name__}: {exc}"}
        facts = {"converts": True, "bytes": os.path.getsize(path)}
        try:
            interpreter = Interpreter(model_path=path, num_threads=1)
            interpreter.allocate_tensors()
        except Exception as exc:
            return {**facts, "loads": False, "error": f"{type(exc).__name__}: {exc}"}
        inputs = interpreter.get_input_details()
        facts.update(loads=True, tensors=len(interpreter.get_tensor_details()),
                     signature=[d["shape_signature"].tolist() for d in inputs])
        if kwargs:  # the dynamic batch: run at 5
            sample = tuple(torch.randn(5, *s.shape[1:]) for s in sample)
            for d, s in zip(inputs, sample):
                interpreter.resize_tensor_input(d["index"], list(s.shape))
            interpreter.allocate_tensors()
        for d, s in zip(inputs, sample):
            interpreter.set_tensor(d["index"], s.numpy().astype(d["dtype"]))
        interpreter.invoke()
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        want = program.module()(*sample).detach().numpy()
        facts["error_vs_torch"] = float(np.abs(got - want).max() / np.abs(want).max())
        return facts

    scratch = tempfile.TemporaryDirectory()  # not the models' folder: other modules share it
    out, folder = {}, scratch.name
    for path in sys.argv[1:]:
        out[path] = convert(torch.export.load(path), os.path.join(folder, path + ".tflite"))
    dims = ({0: torch.export.Dim("batch", min=2)},)
    out["dynamic.pt2 (dynamic batch)"] = convert(torch.export.load("dynamic.pt2"),
        os.path.join(folder, "dynamic-batch.tflite"), dynamic_shapes=dims)
    print(json.dumps(out))
    """
)


def _build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return torchmodels.edge_models(tmp_path_factory.mktemp)


def _commands(root: Path) -> list[background.Command]:
    env = {**background.environ(), "MODELGATE_NO_PROGRESS": "1"}
    return [
        background.Command(
            [sys.executable, "-m", "modelgate", "check", *FILES, "--target", "litert",
             "--convert", "litert", "--format", "json", "-j", "1"],
            cwd=root, env=env, timeout=600,
        ),
        background.Command([sys.executable, "-c", BARE_SCRIPT, *FILES], cwd=root, timeout=600),
    ]  # fmt: skip


def start_background(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build the models at the start of the session; both runs go to the background."""
    root = _AHEAD["root"] = _build(tmp_path_factory)
    background.add(RUNS, _commands(root))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _AHEAD.get("root") or _build(tmp_path_factory)


@pytest.fixture(scope="module")
def done(root: Path) -> list[subprocess.CompletedProcess]:
    return background.run(RUNS, _commands(root))


@pytest.fixture(scope="module")
def runs(done) -> tuple[dict[str, dict], dict[str, dict]]:
    ours, bare = done
    assert ours.returncode in (0, 1), ours.stderr[-3000:]  # 1: an error finding
    assert bare.returncode == 0, bare.stderr[-3000:]
    report = {m["path"]: m for m in json.loads(ours.stdout)["models"]}
    return report, json.loads(bare.stdout.strip().splitlines()[-1])


def _findings(model: dict) -> list[dict]:
    """The model's findings but a noisy latency (MG104: the machine was busy while timing)."""
    return [f for f in model["findings"] if f["key"] != "noisy-latency"]


@pytest.mark.parametrize("name", FILES)
def test_conversion_facts_are_the_toolchains(runs, name: str) -> None:
    report, bare = runs
    ours, theirs = report[name]["metrics"]["conversions"]["litert"], bare[name]
    assert theirs["converts"] is True  # the FFT too: litert-torch lowers rfft on this install
    assert ours["ok"] is theirs["loads"]
    assert ours["size_mb"] == round(theirs["bytes"] / 1e6, 3)
    assert ours.get("tensors") == theirs.get("tensors")
    if theirs["loads"]:
        assert "stage" not in ours and "missing_kernels" not in ours
    else:  # converted, then refused by the interpreter: the op it names
        assert ours["stage"] == LOADING
        assert ours["error"] == theirs["error"].splitlines()[0]
        assert ours["missing_kernels"] == _MISSING.findall(theirs["error"])


@pytest.mark.parametrize("name", RUNS_OK)
def test_a_model_the_interpreter_runs_passes_with_its_figures(runs, name: str) -> None:
    report, bare = runs
    model = report[name]
    assert bare[name]["loads"] is True and bare[name]["error_vs_torch"] < 1e-4
    assert model["passed"] is True and _findings(model) == []
    ours = model["metrics"]["conversions"]["litert"]
    assert ours["ok"] is True and ours["drift"] < 1e-4
    (row,) = model["metrics"]["targets"]
    assert (row["target"], row["result"]) == ("litert", "ok")
    shapes = ", ".join("x".join(map(str, s)) for s in bare[name]["signature"])
    assert row["detail"] == f".tflite flatbuffer, {bare[name]['tensors']} tensors, inputs {shapes}"
    assert row["latency_ms"] == model["metrics"]["latency_ms"] > 0


def test_a_model_the_interpreter_refuses_is_mg108(runs, done) -> None:
    report, bare = runs
    model = report["sorts.pt2"]
    assert bare["sorts.pt2"]["loads"] is False
    assert _MISSING.findall(bare["sorts.pt2"]["error"]) == ["STABLEHLO_SORT"]
    assert done[0].returncode == 1  # sorts.pt2's MG108 is an error; the others pass
    (finding,) = _findings(model)
    assert (finding["rule"], finding["key"]) == ("MG108", "litert:STABLEHLO_SORT")
    assert finding["message"].endswith(  # after the module it locates, if it finds one
        "the LiteRT interpreter has no kernel for STABLEHLO_SORT: the converted program will "
        "not load"
    )
    assert model["metrics"]["conversions"]["litert"]["op"] == "sort"
    assert finding["location"]["op"] == "aten::sort"  # located at the op, with its line
    assert finding["location"]["source"]["line"] > 0
    (row,) = model["metrics"]["targets"]
    assert (row["result"], row["detail"]) == (
        "will not load", "the interpreter has no kernel for STABLEHLO_SORT"
    )  # fmt: skip


def test_the_dynamic_batch_is_converted_at_its_minimum(runs) -> None:
    """modelgate converts the dynamic CNN at the batch it fills in (2, the minimum), as the
    bare call on the saved example input does; litert-torch also converts it with the batch
    left dynamic, and that model runs at batch 5: the verdict holds either way."""
    report, bare = runs
    metrics = report["dynamic.pt2"]["metrics"]
    (saved,) = [i["shape"] for i in metrics["inputs"]]
    assert isinstance(saved[0], str) and saved[1:] == [3, 16, 16]  # the batch as a symbol
    assert [i["shape"] for i in metrics["measured_inputs"]] == [[2, 3, 16, 16]]
    assert bare["dynamic.pt2"]["signature"] == [[2, 3, 16, 16]]
    dynamic = bare["dynamic.pt2 (dynamic batch)"]
    assert dynamic["signature"] == [[-1, 3, 16, 16]] and dynamic["error_vs_torch"] < 1e-4
    ours = report["dynamic.pt2"]["metrics"]["conversions"]["litert"]
    assert ours["tensors"] == dynamic["tensors"] == bare["cnn.pt2"]["tensors"]
