"""The LiteRT target against litert-torch and the LiteRT interpreter themselves, both ways.

A CNN with hardswish converts, loads and runs; a model using ``topk`` converts, then the
interpreter refuses it ("Didn't find op for builtin opcode 'STABLEHLO_SORT'"). modelgate's
report is compared with the bare toolchain run on the same files in a fresh process: MG108
exactly when the interpreter refuses the model, the same file size, and none when it runs.
"""

from __future__ import annotations

import importlib.util
import json
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

_AHEAD: dict[str, Path] = {}
RUNS = f"{__name__}.runs"  # modelgate's check and the bare toolchain, side by side

BARE_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    import litert_torch, torch
    from ai_edge_litert.interpreter import Interpreter

    out = {}
    for path in sys.argv[1:]:
        program = torch.export.load(path)
        model = litert_torch.convert(program.module(), tuple(program.example_inputs[0]))
        model.export(path + ".tflite")
        try:
            interpreter = Interpreter(model_path=path + ".tflite", num_threads=1)
            interpreter.allocate_tensors()
            interpreter.invoke()
            loads, error = True, None
        except Exception as exc:
            loads, error = False, str(exc)
        import os
        out[path] = {"loads": loads, "error": error, "bytes": os.path.getsize(path + ".tflite")}
    print(json.dumps(out))
    """
)


class CNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.act = torch.nn.Hardswish()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


class TopK(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.topk(x, 2, dim=1).values


def _build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("litert")
    torch.manual_seed(0)
    for name, model, shape in [("cnn", CNN(), (1, 3, 16, 16)), ("topk", TopK(), (1, 8))]:
        program = torch.export.export(model.eval(), (torch.randn(*shape),))
        torch.export.save(program, root / f"{name}.pt2")
    return root


def _commands(root: Path) -> list[background.Command]:
    env = {**background.environ(), "MODELGATE_NO_PROGRESS": "1"}
    return [
        background.Command(
            [sys.executable, "-m", "modelgate", "check", "cnn.pt2", "topk.pt2", "--target",
             "litert", "--convert", "litert", "--format", "json", "-j", "1"],
            cwd=root, env=env, timeout=600,
        ),
        background.Command(
            [sys.executable, "-c", BARE_SCRIPT, "cnn.pt2", "topk.pt2"], cwd=root, timeout=600
        ),
    ]  # fmt: skip


def start_background(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build the models at the start of the session; both runs go to the background."""
    root = _AHEAD["root"] = _build(tmp_path_factory)
    background.add(RUNS, _commands(root))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _AHEAD.get("root") or _build(tmp_path_factory)


@pytest.fixture(scope="module")
def runs(root: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    ours, bare = background.run(RUNS, _commands(root))
    assert ours.returncode == 1, ours.stderr[-3000:]  # topk.pt2 will not load
    assert bare.returncode == 0, bare.stderr[-3000:]
    report = {m["path"]: m for m in json.loads(ours.stdout)["models"]}
    return report, json.loads(bare.stdout.strip().splitlines()[-1])


def test_a_model_the_interpreter_runs_passes_with_its_figures(runs) -> None:
    report, bare = runs
    model = report["cnn.pt2"]
    assert bare["cnn.pt2"]["loads"] is True
    assert model["passed"] is True and model["findings"] == []
    ours = model["metrics"]["conversions"]["litert"]
    assert ours["ok"] is True and ours["drift"] < 1e-4
    assert ours["size_mb"] == round(bare["cnn.pt2"]["bytes"] / 1e6, 3)
    (row,) = model["metrics"]["targets"]
    assert (row["target"], row["result"]) == ("litert", "ok")
    assert row["latency_ms"] == model["metrics"]["latency_ms"] > 0


def test_a_model_the_interpreter_refuses_is_mg108(runs) -> None:
    report, bare = runs
    model = report["topk.pt2"]
    assert bare["topk.pt2"]["loads"] is False
    assert "STABLEHLO_SORT" in bare["topk.pt2"]["error"]
    assert [(f["rule"], f["key"]) for f in model["findings"]] == [
        ("MG108", "litert:STABLEHLO_SORT")
    ]
    assert model["findings"][0]["message"] == (
        "the LiteRT interpreter has no kernel for STABLEHLO_SORT: the converted program will "
        "not load"
    )
    (row,) = model["metrics"]["targets"]
    assert row["result"] == "will not load"
