"""Build recipes (issue 11): checkpoints of weights alone get the full check from the repository's
own model code. A small repository is built here (a model module with a build function, a state
dict, a Lightning-style checkpoint, a whole pickled module, a config with recipes) and checked
with ``modelgate check`` as a user runs it, from the repository's folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

NET_PY = """\
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=10, width=8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, image):
        x = torch.relu(self.bn(self.stem(image)))
        x = self.pool(x).flatten(1)
        return self.head(x)  # HEAD_LINE


class Branchy(Net):
    def forward(self, image):
        if image.sum() > 0:  # data-dependent control flow: torch.export refuses it
            return self.head(self.pool(self.stem(image)).flatten(1))
        return image


def build(num_classes=10):
    return Net(num_classes)


def branchy():
    return Branchy()


def not_a_module():
    return {"weights": 1}
"""
HEAD_LINE = next(i for i, line in enumerate(NET_PY.splitlines(), 1) if "HEAD_LINE" in line)
IMAGE = "[{name: image, shape: [1, 3, 32, 32]}]"
CONFIG = f"""\
models:
  - path: "checkpoints/bad.pth"
    build: "models.net:build"
    inputs: {IMAGE}
  - path: "checkpoints/*.pth"
    build: "models.net:build"
    kwargs: {{num_classes: 10}}
    inputs: {IMAGE}
  - path: "checkpoints/*.ckpt"
    build: "models.net:build"
    inputs: {IMAGE}
  - path: "checkpoints/whole.pt"
    inputs: {IMAGE}
  - path: "broken/typo.pth"
    build: "models.net:biuld"
    inputs: {IMAGE}
  - path: "broken/no_module.pth"
    build: "models.nowhere:build"
    inputs: {IMAGE}
  - path: "broken/dict.pth"
    build: "models.net:not_a_module"
    inputs: {IMAGE}
  - path: "broken/no_inputs.pth"
    build: "models.net:build"
  - path: "broken/branchy.pth"
    build: "models.net:branchy"
    inputs: {IMAGE}
rules:
  MG001: {{max_parameters: 50}}
pickle:
  allow: ["models.net.Net"]
"""
HEAD_PARAMS = 8 * 10 + 10
PARAMS = 3 * 8 * 9 + 8 + 2 * 8 + HEAD_PARAMS  # conv, batch norm, head (buffers are not params)


def _make(folder: Path) -> None:
    """The repository: models/net.py, checkpoints of four kinds and broken recipes."""
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "__init__.py").write_text("")
    (folder / "models" / "net.py").write_text(NET_PY)
    (folder / "modelgate.yaml").write_text(CONFIG)
    (folder / "checkpoints").mkdir()
    (folder / "broken").mkdir()
    script = """
import argparse, sys, torch
sys.path.insert(0, ".")
from models.net import Net
torch.manual_seed(0)
net = Net(10)
torch.save(net.state_dict(), "checkpoints/net.pth")
torch.save(Net(5).state_dict(), "checkpoints/bad.pth")
opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
net(torch.randn(2, 3, 32, 32)).sum().backward()
opt.step()
torch.save({"epoch": 3, "global_step": 100, "pytorch-lightning_version": "2.4.0",
            "state_dict": {"model." + k: v for k, v in net.state_dict().items()},
            "optimizer_states": [opt.state_dict()], "lr_schedulers": [],
            "hyper_parameters": {"num_classes": 10, "args": argparse.Namespace(lr=0.1)}},
           "checkpoints/lit.ckpt")
torch.save(net, "checkpoints/whole.pt")
for name in ("typo", "no_module", "dict", "no_inputs", "branchy"):
    torch.save(net.state_dict(), f"broken/{name}.pth")
"""
    subprocess.run([sys.executable, "-c", script], cwd=folder, check=True, timeout=120)


def _check(folder: Path, *args: str) -> tuple[int, dict, str]:
    env = {**os.environ, "MODELGATE_NO_CACHE": "1", "MODELGATE_NO_PROGRESS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "modelgate", "check", "--format", "json", *args],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("repo")
    _make(folder)
    return folder


@pytest.fixture(scope="module")
def converted(repo: Path) -> dict[str, dict]:
    """One run as a pull request's check would make it: every checkpoint, Core ML too."""
    pytest.importorskip("coremltools")
    code, report, _ = _check(repo, "checkpoints", "--convert", "coreml")
    assert code == 1
    return {m["path"]: m for m in report["models"]}


def _rules(model: dict) -> list[str]:
    """The rules that fired, but MG104: a warning that the latency was noisy depends on how
    busy the machine was while timing, not on the model."""
    return [f["rule"] for f in model["findings"] if f["rule"] != "MG104"]


def test_a_state_dict_gets_graph_rules_at_the_model_code_and_a_core_ml_conversion(
    converted: dict[str, dict],
) -> None:
    model = converted["checkpoints/net.pth"]
    assert model["format"] == "state_dict"
    assert _rules(model) == ["MG001"]
    (finding,) = [f for f in model["findings"] if f["rule"] == "MG001"]
    assert finding["location"]["module"] == "head"
    assert finding["location"]["source"]["file"] == "models/net.py"
    assert finding["location"]["source"]["line"] == HEAD_LINE
    metrics = model["metrics"]
    assert metrics["parameters"] == PARAMS
    assert metrics["built"] == {
        "kind": "recipe",
        "by": "recipe models.net:build",
        "ok": True,
        "inputs": [{"name": "image", "shape": [1, 3, 32, 32], "dtype": "float32"}],
    }
    (coreml,) = metrics["targets"]
    assert coreml["target"] == "coreml" and coreml["result"] == "ok"
    assert coreml["size_mb"] > 0
    assert isinstance(coreml["drift"], float) and coreml["drift"] < 0.01


def test_a_lightning_checkpoint_is_found_inside_and_its_prefix_stripped(
    converted: dict[str, dict],
) -> None:
    model = converted["checkpoints/lit.ckpt"]
    assert model["format"] == "checkpoint"
    assert _rules(model) == ["MG001", "MG904"]  # MG904: the Namespace in its hyper_parameters
    assert model["findings"][0]["location"]["source"] == {
        "file": "models/net.py", "line": HEAD_LINE, "function": "forward",
    }  # fmt: skip
    built = [n for n in model["notes"] if n.startswith("built from")]
    assert built == [
        "built from the checkpoint (its weights at 'state_dict') with recipe models.net:build "
        f"and exported with torch.export on image 1x3x32x32 float32 ({_seconds(built[0])} s); "
        "the checkpoint's keys carry the prefix 'model.', stripped"
    ]
    assert "also holds training state: optimizer_states: 1 × optimizer state" in model["notes"]
    assert model["metrics"]["targets"][0]["result"] == "ok"


def _seconds(note: str) -> str:
    return note.split(" s)")[0].rsplit("(", 1)[1]


def test_a_checkpoint_that_does_not_match_its_recipe_is_mg111_listing_the_keys(
    converted: dict[str, dict],
) -> None:
    model = converted["checkpoints/bad.pth"]
    assert _rules(model) == ["MG111"]  # not MG106 for the conversion as well: MG111 says it
    mismatch = model["findings"][0]
    assert mismatch["severity"] == "error"
    assert mismatch["message"] == (
        "the weights do not fit the module recipe models.net:build makes (file 9 tensors, "
        "module 9): 2 mis-shaped (head.bias: file 5, module 10, head.weight: file 5x8, module "
        "10x8)"
    )
    skipped = {s["rule"]: s["reason"] for s in model["skipped"]}
    assert skipped["MG101"] == (
        "not converted: recipe models.net:build could not build a model from the file "
        "(MG111 / MG112)"
    )
    assert model["metrics"]["built"]["keys"] == {
        "missing": [],
        "unexpected": [],
        "mismatched": [["head.bias", [5], [10]], ["head.weight", [5, 8], [10, 8]]],
    }


def test_a_pickled_module_whose_class_is_allowed_is_built(converted: dict[str, dict]) -> None:
    model = converted["checkpoints/whole.pt"]
    assert model["format"] == "pickled_module"
    assert model["metrics"]["built"]["by"] == "its allowed classes (pickle.allow)"
    assert _rules(model) == ["MG001", "MG904"]
    assert model["findings"][0]["location"]["source"]["file"] == "models/net.py"


def test_a_pickled_module_outside_the_allow_list_stays_refused(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "modelgate.yaml").write_text(CONFIG.replace("models.net.Net", "models.net.Other"))
    code, report, _ = _check(
        repo, "--config", str(tmp_path / "modelgate.yaml"), "checkpoints/whole.pt"
    )
    (model,) = report["models"]
    assert code == 1
    assert "MG901" in _rules(model) and "built" not in model["metrics"]


@pytest.mark.parametrize(
    ("name", "stage", "error"),
    [
        ("typo", "calling models.net:biuld", "models.net has no biuld (the recipe)"),
        ("no_module", "calling models.nowhere:build",
         "cannot import models.nowhere for the recipe: No module named 'models.nowhere'"),
        ("dict", "calling models.net:not_a_module",
         "models.net:not_a_module returned dict, not an nn.Module"),
        ("no_inputs", "choosing its inputs",
         "the recipe gives no inputs to export the model with: add inputs: [{name: x, shape: "
         "[1, 3, 224, 224]}] to it"),
        ("branchy", "exporting with torch.export", None),
    ],
)  # fmt: skip
def test_a_recipe_that_cannot_build_is_mg112_at_its_stage(
    broken: dict[str, dict], name: str, stage: str, error: str | None
) -> None:
    model = broken[f"broken/{name}.pth"]
    # the file's own metadata is still checked (MG001 on the state dict's Linear)
    assert _rules(model) == ["MG001", "MG112"]
    message = model["findings"][1]["message"]
    by = "recipe models.net:" + {"typo": "biuld", "no_module": "build", "dict": "not_a_module",
                                 "no_inputs": "build", "branchy": "branchy"}[name]  # fmt: skip
    if name == "no_module":
        by = "recipe models.nowhere:build"
    assert message.startswith(f"{by} could not build the model while {stage}: ")
    if error is not None:
        assert message == f"{by} could not build the model while {stage}: {error}"
    else:  # torch's own words for the data-dependent branch
        assert "data-dependent" in message.lower() or "guard" in message.lower()


@pytest.fixture(scope="module")
def broken(repo: Path) -> dict[str, dict]:
    code, report, _ = _check(repo, "broken")
    assert code == 1
    return {m["path"]: m for m in report["models"]}


def test_static_reads_the_metadata_and_says_it_did_not_build(repo: Path) -> None:
    _, report, _ = _check(repo, "--static", "checkpoints/net.pth")
    (model,) = report["models"]
    assert "built" not in model["metrics"]
    assert _rules(model) == ["MG001"]  # from the state dict's shapes alone: no source line
    assert "source" not in model["findings"][0]["location"]
    assert "not built (recipe models.net:build applies): --static reads the file's metadata " \
        "only" in model["notes"]  # fmt: skip


def test_a_baseline_is_built_by_its_models_recipe(repo: Path, tmp_path: Path) -> None:
    """``--baseline`` with a file outside the recipe's glob: it matches as its model does."""
    script = (
        "import sys, torch; sys.path.insert(0, '.'); from models.net import Net; "
        "torch.manual_seed(1); torch.save({k: v.half() for k, v in Net(10).state_dict().items()}, "
        f"{str(tmp_path / 'old.pth')!r})"
    )
    subprocess.run([sys.executable, "-c", script], cwd=repo, check=True, timeout=60)
    _, report, _ = _check(repo, "checkpoints/net.pth", "--baseline", str(tmp_path / "old.pth"))
    (model,) = report["models"]
    base = model["metrics"]["baseline"]
    assert base["metrics"]["parameters"] == model["metrics"]["parameters"] == PARAMS
    assert base["delta"]["parameters"] == 0
    assert base["delta"]["size_mb"] > 0  # float32 now, float16 before
    assert base["new_findings"] == []  # MG001 was there in the baseline too: it was built


def test_the_cache_key_follows_the_model_code(repo: Path, tmp_path: Path) -> None:
    from modelgate import cache_key
    from modelgate import config as cfg

    copy = tmp_path / "repo"
    subprocess.run(["cp", "-r", str(repo), str(copy)], check=True)
    config = cfg.load(str(copy / "modelgate.yaml"))
    path = str(copy / "checkpoints" / "net.pth")
    before = cache_key.key_inputs(path, config)
    (copy / "models" / "net.py").write_text(NET_PY.replace("width=8", "width=16"))
    after = cache_key.key_inputs(path, config)
    assert before is not None and after is not None
    assert before.inputs["build"]["recipe"]["build"] == "models.net:build"
    assert before.inputs["build"]["code"] != after.inputs["build"]["code"]
    assert before.key != after.key


def test_a_pull_request_that_retrains_a_checkpoint_gets_deltas_against_the_base(
    tmp_path: Path,
) -> None:
    """The Action on a pull request: the base branch's checkpoint is built by the same recipe,
    so the retrained one is compared with it, and annotations land on the model code."""
    from test_action import git, run_action

    origin = tmp_path / "origin"
    origin.mkdir()
    _make(origin)
    for extra in ("bad.pth", "lit.ckpt", "whole.pt"):
        (origin / "checkpoints" / extra).unlink()
    (origin / ".gitignore").write_text("broken/\n.modelgate_cache/\n")
    git(origin, "init", "-q")
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "base")
    git(origin, "checkout", "-q", "-b", "retrain")
    retrain = (
        "import sys, torch; sys.path.insert(0, '.'); from models.net import Net; "
        "torch.manual_seed(7); net = Net(10); "
        "torch.save({k: v.half() for k, v in net.state_dict().items()}, 'checkpoints/net.pth')"
    )
    subprocess.run([sys.executable, "-c", retrain], cwd=origin, check=True, timeout=60)
    git(origin, "commit", "-q", "-am", "retrained, stored in float16")
    checkout = tmp_path / "checkout"
    git(tmp_path, "clone", "-q", "--branch", "retrain", str(origin), str(checkout))
    code, out, outputs, summary = run_action(
        checkout, tmp_path, {"MODELGATE_NO_CACHE": "1"}, paths="checkpoints/**",
        changed_files_only="true",
    )  # fmt: skip
    assert code == 1, out
    assert outputs["checked"] == "1"
    report = json.loads(Path(outputs["report"]).read_text())
    (model,) = report["models"]
    assert model["path"] == "checkpoints/net.pth"
    assert model["metrics"]["built"]["ok"] is True, (model["findings"], model["notes"])
    base = model["metrics"]["baseline"]
    assert base["path"] == "checkpoints/net.pth" and base["ref"].startswith("main@")
    assert base["metrics"]["parameters"] == model["metrics"]["parameters"] == PARAMS
    assert base["delta"]["size_mb"] < 0  # float16 now
    assert base["new_findings"] == []  # the base checkpoint was built and had MG001 too
    annotations = [line for line in out.splitlines() if line.startswith("::error")]
    assert len(annotations) == 1
    assert annotations[0].startswith(
        f"::error file=models/net.py,line={HEAD_LINE},title=modelgate (MG001)::"
        "checkpoints/net.pth: head: Linear 10x8"
    )
    assert "| ❌ | `checkpoints/net.pth` | state dict, built by recipe models.net:build |" in (
        summary
    )
