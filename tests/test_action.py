"""The Action's entry point, run as GitHub runs it: a pull request in a real git repository.

The model is defined in a .py file that lives in the repository; it is exported with
torch.export on "another machine" (a different folder), so the recorded stack trace names an
absolute path the runner does not have and the action must map it back to the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import background
import pytest

from modelgate import action, repo

NET_PY = """\
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, pool: int = {pool}) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.head = nn.Linear(8 * pool * pool, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv(x)))
        return self.head(torch.flatten(x, 1))  # HEAD_LINE
"""

EXPORT = """
import importlib, json, sys, torch
sys.dont_write_bytecode = True
folder, jobs = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, folder)
for source, pt2, state_dict in jobs:  # one process: importing torch costs seconds
    with open(folder + "/net.py", "w") as fh:
        fh.write(source)
    importlib.invalidate_caches()
    if "net" in sys.modules:
        net = importlib.reload(sys.modules["net"])
    else:
        net = importlib.import_module("net")
    torch.manual_seed(0)
    model = net.Net().eval()
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 16, 16),)), pt2)
    if state_dict:
        torch.save(net.Net(pool=1).state_dict(), state_dict)
"""

CONFIG = "rules:\n  oversized-linear: {min_parameters: 10000}\n"
LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a21\nsize 4812873401\n"


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def export(machine: Path, jobs: list[tuple[int, Path, Path | None]], job: str = "") -> None:
    """For each (pool, .pt2, state dict): write net.py with that ``pool`` on the exporting
    machine and export it from there. ``job``: the background job (tests/background.py) that
    runs it, if started ahead."""
    done = background.run(job, [_export_run(machine, jobs)])[0] if job else None
    if done is None:
        command = _export_run(machine, jobs)
        done = subprocess.run(command.args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def _export_run(machine: Path, jobs: list[tuple[int, Path, Path | None]]) -> background.Command:
    machine.mkdir(parents=True, exist_ok=True)
    spec = [(NET_PY.format(pool=pool), str(pt2), str(sd) if sd else "") for pool, pt2, sd in jobs]
    return background.Command([sys.executable, "-c", EXPORT, str(machine), json.dumps(spec)])


def start_background(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Start :func:`pull_request`'s export (a torch import) in the background at the start of
    the session (tests/background.py); the fixture waits for it."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    tmp = _AHEAD["pr"] = tmp_path_factory.mktemp("pr")
    background.add(EXPORT_RUN, [_export_run(*_pr_exports(tmp))])


_AHEAD: dict[str, Path] = {}
EXPORT_RUN = f"{__name__}.export"


def _pr_exports(tmp: Path) -> tuple[Path, list[tuple[int, Path, Path | None]]]:
    """(the exporting machine, the exports) of :func:`pull_request` in ``tmp``."""
    models = tmp / "origin" / "models"
    models.mkdir(parents=True, exist_ok=True)
    alice = tmp / "home" / "alice" / "proj" / "models"  # where the model was exported
    return alice, [(1, tmp / "base.pt2", models / "other.pt"), (16, tmp / "head.pt2", None)]


@pytest.fixture(scope="module")
def pull_request(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """origin: main has a clean model; branch feature changes net.py and re-exports it with a
    flattened 16x16 map into the Linear. Returns a clone checked out at feature."""
    pytest.importorskip("torch")
    tmp = _AHEAD.get("pr") or tmp_path_factory.mktemp("pr")
    origin = tmp / "origin"
    models = origin / "models"
    alice, exports = _pr_exports(tmp)
    (origin / "modelgate.yaml").write_text(CONFIG)
    (origin / "README.md").write_text("models\n")
    export(alice, exports, EXPORT_RUN if "pr" in _AHEAD else "")
    (models / "net.py").write_text(NET_PY.format(pool=1))
    (tmp / "base.pt2").rename(models / "net.pt2")
    git(origin, "init", "-q")
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "base")
    git(origin, "checkout", "-q", "-b", "feature")
    (models / "net.py").write_text(NET_PY.format(pool=16))
    (tmp / "head.pt2").rename(models / "net.pt2")
    git(origin, "commit", "-q", "-am", "bigger head")
    checkout = tmp / "checkout"  # as actions/checkout with fetch-depth: 0 leaves it
    git(tmp, "clone", "-q", "--branch", "feature", str(origin), str(checkout))
    return checkout


def run_action(
    workspace: Path, tmp: Path, env_extra: dict[str, str | None] | None = None, **inputs: str
) -> tuple[int, str, dict, str]:
    """Run ``python -m modelgate.action`` as the runner does; (exit code, stdout, outputs,
    summary). ``env_extra``: variables to set (None: to remove) besides the runner's."""
    runner = tmp / "runner"
    runner.mkdir(parents=True, exist_ok=True)
    outputs, summary = runner / "output", runner / "summary.md"
    outputs.write_text("")
    summary.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_"))}
    env.update(
        {
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_OUTPUT": str(outputs),
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_EVENT_NAME": "pull_request",
            "GITHUB_BASE_REF": "main",
            "RUNNER_TEMP": str(runner),
        }
    )
    env.update({f"INPUT_{k.upper()}": v for k, v in inputs.items()})
    for name, value in (env_extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    done = subprocess.run(
        [sys.executable, "-m", "modelgate.action"],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    return done.returncode, done.stdout + done.stderr, values, summary.read_text()


def test_pull_request_gate(pull_request: Path, tmp_path: Path) -> None:
    head_line = (
        NET_PY.splitlines().index(next(line for line in NET_PY.splitlines() if "HEAD_LINE" in line))
        + 1
    )
    code, out, outputs, summary = run_action(
        pull_request, tmp_path, paths="models/**", changed_files_only="true", sarif="true"
    )
    assert code == 1, out
    # the annotation points at the .py line in the repository, not at the exporting machine
    annotations = [line for line in out.splitlines() if line.startswith("::error")]
    assert annotations == [
        f"::error file=models/net.py,line={head_line},title=modelgate (MG001)::models/net.pt2: "
        "head: Linear 10x2048 holds 20.5K parameters (82.0 kB, 99%25 of the model); it is fed "
        "by a flattened 8x16x16 feature map%0Afix: shrink the features before this layer: global "
        "pooling (nn.AdaptiveAvgPool2d(1)) or a 1x1 convolution ahead of Flatten, so the layer "
        "sees channels, not pixels"
    ]
    # only the changed model was checked; the unchanged state dict was not
    assert outputs["passed"] == "false" and outputs["checked"] == "1" and outputs["failed"] == "1"
    report = json.loads(Path(outputs["report"]).read_text())
    (model,) = report["models"]
    assert model["path"] == "models/net.pt2"
    assert model["findings"][0]["location"]["source"]["file"] == "models/net.py"
    base = model["metrics"]["baseline"]
    assert base["path"] == "models/net.pt2" and base["ref"].startswith("main@")
    conv = 8 * 3 * 9 + 8
    assert base["metrics"]["parameters"] == conv + 8 * 10 + 10
    assert base["delta"]["parameters"] == 2048 * 10 - 8 * 10
    assert [f["rule"] for f in base["new_findings"]] == ["MG001"]
    sarif = json.loads(Path(outputs["sarif"]).read_text())
    (result,) = sarif["runs"][0]["results"]
    assert result["locations"][0]["physicalLocation"]["region"] == {"startLine": head_line}
    # the job summary: verdict, the model, deltas against main, the new finding, the chart
    assert summary.startswith("## modelgate: ❌ failed\n")
    assert "| ❌ | `models/net.pt2` | torch export |" in summary
    assert "| parameters | 20,714 | 314 | +20,400 (+6496.8%) |" in summary
    assert "| weights (MB) | 0.083 | 0.001 | +0.082 |" in summary
    assert "| error (new) | MG001 oversized-linear | `head (models/net.py:14)` |" in summary
    assert (
        '```mermaid\npie showData title Weights by layer (83.0 kB)\n    "head (Linear)" : 0.082'
        in summary
    )
    assert "checked the 1 of 2 selected model files that changed against main@" in summary


def test_without_changed_files_only_checks_everything(pull_request: Path, tmp_path: Path) -> None:
    code, out, outputs, _ = run_action(pull_request, tmp_path, paths="models")
    assert code == 1, out
    assert outputs["checked"] == "2" and outputs["sarif"] == ""
    report = json.loads(Path(outputs["report"]).read_text())
    paths = {m["path"]: m for m in report["models"]}
    assert set(paths) == {"models/net.pt2", "models/other.pt"}
    assert "baseline" in paths["models/net.pt2"]["metrics"]  # changed: compared with main
    assert "baseline" not in paths["models/other.pt"]["metrics"]  # unchanged


def test_budget_limits_growth_against_the_base_branch(pull_request: Path, tmp_path: Path) -> None:
    """A relative limit is judged against the base branch's version, as with --baseline."""
    config = tmp_path / "growth.yaml"
    config.write_text(
        CONFIG.replace("10000", "100000") + "budget:\n  parameters: {max_increase_pct: 50}\n"
    )
    code, out, outputs, summary = run_action(
        pull_request, tmp_path, paths="models/*.pt2", changed_files_only="true", config=str(config)
    )
    assert code == 1, out
    (model,) = json.loads(Path(outputs["report"]).read_text())["models"]
    (finding,) = model["findings"]
    assert finding["rule"] == "MG301" and finding["new"] is True
    ref = model["metrics"]["baseline"]["ref"]
    assert finding["message"] == (
        f"parameters grew by 20.4K (+6496.8%) against models/net.pt2 at {ref} "
        "(314 -> 20.7K), more than the 50% allowed"
    )
    limit = model["metrics"]["budget"]["parameters"]
    assert limit["passed"] is False and limit["baseline"] == 8 * 3 * 9 + 8 + 8 * 10 + 10
    assert model["metrics"]["baseline"]["ref"].startswith("main@")
    assert "MG301" in summary


def test_matrix_shards_and_combined_summary(pull_request: Path, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    seen = []
    for index in (1, 2):
        code, out, outputs, summary = run_action(
            pull_request,
            tmp_path / str(index),
            paths="models",
            shard=f"{index}/2",
            report=str(reports / f"shard-{index}.json"),
        )
        assert outputs["checked"] == "1", out
        seen += [m["path"] for m in json.loads(Path(outputs["report"]).read_text())["models"]]
        assert f"shard {index}/2: 1 of 2 model files" in summary
    assert sorted(seen) == ["models/net.pt2", "models/other.pt"]
    # the final job: the action's combine mode over the downloaded reports
    code, out, outputs, summary = run_action(
        pull_request, tmp_path / "final", combine=f"{reports}/*.json"
    )
    assert code == 1, out
    assert outputs["passed"] == "false"
    assert summary.startswith("## modelgate: ❌ failed\n\n2 models checked, 1 failed (1 error)")
    combined = json.loads(Path(outputs["report"]).read_text())
    assert [m["path"] for m in combined["models"]] == ["models/net.pt2", "models/other.pt"]
    code, out, _, _ = run_action(pull_request, tmp_path / "bad", paths="models", shard="3/2")
    assert code == 2 and "shard 3/2: the index must be between 1 and 2" in out


def test_lfs_pointer_says_lfs_true(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    (work / "models" / "big.pt").write_bytes(LFS)
    git(work, "init", "-q")
    code, out, _, summary = run_action(work, tmp_path, paths="models/*.pt")
    assert code == 1
    (annotation,) = [line for line in out.splitlines() if line.startswith("::error")]
    assert annotation.startswith(
        "::error file=models/big.pt,title=modelgate (MG902)::git-lfs pointer"
    )
    assert "lfs: true" in annotation
    assert (
        "1 model file(s) are git-lfs pointers, not models (models/big.pt): check out with lfs: true"
        in summary
    )


def test_bad_input_exits_2_with_an_annotation(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q")
    code, out, outputs, _ = run_action(work, tmp_path, paths="models/*.pt")
    assert code == 2
    assert "::error title=modelgate::paths matched no model files: models/*.pt" in out
    assert outputs == {}
    code, out, _, _ = run_action(work, tmp_path, changed_files_only="true", base_ref="nope")
    assert code == 2
    assert "base ref 'nope' is not in this clone: check out with fetch-depth%3A 0" not in out
    assert "base ref 'nope' is not in this clone: check out with fetch-depth: 0" in out


# ---------------------------------------------------------------------------------------------
# pieces
# ---------------------------------------------------------------------------------------------


def test_map_source_takes_the_longest_tail_in_the_repository(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.py").write_text("")
    (tmp_path / "net.py").write_text("")
    root = str(tmp_path)
    assert repo.map_source("/home/alice/proj/models/net.py", root) == "models/net.py"
    assert repo.map_source("C:\\Users\\bob\\proj\\models\\net.py", root) == "models/net.py"
    assert repo.map_source("/home/alice/other/net.py", root) == "net.py"
    assert repo.map_source("/home/alice/proj/models/missing.py", root) is None
    assert repo.map_source("/x/../../etc/passwd", root) is None
    assert repo.map_source("models/net.py", root, cwd=root) == "models/net.py"


def test_changed_files_follow_renames(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "a.pt").write_bytes(b"x" * 2000)
    (tmp_path / "gone.pt").write_bytes(b"y")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "one")
    base = git(tmp_path, "rev-parse", "HEAD").strip()
    (tmp_path / "a.pt").rename(tmp_path / "b.pt")
    (tmp_path / "gone.pt").unlink()
    (tmp_path / "new.pt").write_bytes(b"z")
    git(tmp_path, "add", "-A")
    changes = repo.changed_files(base, cwd=str(tmp_path))
    assert sorted(changes, key=lambda c: c.path) == [
        repo.Change("b.pt", "a.pt"),
        repo.Change("new.pt", None),
    ]


def test_base_ref_from_input_pull_request_or_push(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    event = tmp_path / "event.json"
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    event.write_text('{"before": "0000000000000000000000000000000000000000"}')
    assert action.base_ref("") is None  # a new branch: nothing to compare with
    event.write_text('{"before": "1234abcd"}')
    assert action.base_ref("") == "1234abcd"
    monkeypatch.setenv("GITHUB_BASE_REF", "main")
    assert action.base_ref("") == "main"
    assert action.base_ref("v1.0") == "v1.0"


def test_nothing_changed_passes_with_a_note(pull_request: Path, tmp_path: Path) -> None:
    code, out, outputs, summary = run_action(
        pull_request, tmp_path, paths="models/*.pt", changed_files_only="true"
    )
    assert code == 0, out
    assert outputs["passed"] == "true" and outputs["checked"] == "0"
    assert summary.startswith("## modelgate: ✅ passed\n\n0 models checked, 0 failed (none)")
    assert "No model files to check." in summary
    assert "checked the 0 of 1 selected model files that changed against main@" in summary


def test_split_paths_and_outputs(tmp_path: Path) -> None:
    assert action.split_paths("models/**/*.pt2, weights/\n# comment\n  other.onnx  # x\n") == [
        "models/**/*.pt2",
        "weights/",
        "other.onnx",
    ]
    out = tmp_path / "out"
    action.write_outputs({"passed": "true", "multi": "a\nb"}, str(out))
    assert out.read_text() == "passed=true\nmulti<<MODELGATE_EOF\na\nb\nMODELGATE_EOF\n"


def test_combine_merges_matrix_reports(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shard = textwrap.dedent("""
        {{"modelgate": "0.1.0", "passed": {passed}, "fail_on": "error", "notes": [],
         "models": [{{"path": "{path}", "format": "safetensors", "passed": {passed},
                      "metrics": {{"size_mb": 1.5, "parameters": 1000}},
                      "findings": {findings}}}]}}
    """)
    finding = (
        '[{"rule": "MG007", "name": "fp64-weights", "severity": "error", "message": "w: float64", '
        '"location": {"path": "b.safetensors", "tensor": "w"}, "fix": null}]'
    )
    (tmp_path / "r1.json").write_text(
        shard.format(passed="true", path="a.safetensors", findings="[]")
    )
    (tmp_path / "r2.json").write_text(
        shard.format(passed="false", path="b.safetensors", findings=finding)
    )
    combined = tmp_path / "all.json"
    code = action.main(["combine", str(tmp_path / "r*.json"), "--output", str(combined)])
    out = capsys.readouterr().out
    assert code == 1
    assert out.startswith("## modelgate: ❌ failed\n\n2 models checked, 1 failed (1 error)")
    assert out.index("`b.safetensors`") < out.index("`a.safetensors`")  # failed first
    assert [m["path"] for m in json.loads(combined.read_text())["models"]] == [
        "a.safetensors",
        "b.safetensors",
    ]
    assert action.main(["combine", str(tmp_path / "missing.json")]) == 2


def test_json_reports_round_trip_finding_identities() -> None:
    """Matrix jobs upload JSON; the combined summary and SARIF fingerprints must see the same
    findings (identity from the rule's key, not from the message) as the jobs did."""
    from modelgate.finding import Finding, Location
    from modelgate.report import ModelReport, Report
    from modelgate.reporters import render

    finding = Finding(
        "MG001", "oversized-linear", "error", "head: big", Location("m.pt", module="head"),
        key="head",
    )  # fmt: skip
    report = Report([ModelReport("m.pt", "state-dict", findings=[finding])])
    back = Report.from_dict(json.loads(render(report, "json")))
    (again,) = back.models[0].findings
    assert again.key == "head" and again.identity == finding.identity == "MG001:head"
    assert again.location == finding.location and again.extra == {}


def _sharded(folder: Path, head: int) -> None:
    """A two-shard safetensors checkpoint with its index; ``head`` rows in the second shard."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    shards = {
        "model-00001-of-00002.safetensors": {"embed.weight": np.ones((32, 8), np.float32)},
        "model-00002-of-00002.safetensors": {"lm_head.weight": np.ones((head, 8), np.float32)},
    }
    weight_map = {}
    for name, tensors in shards.items():
        save_file(tensors, str(folder / name))
        weight_map.update(dict.fromkeys(tensors, name))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


def _external(folder: Path, rows: int) -> None:
    """An ONNX MatMul whose weight (rows x 8) is external data in w.bin."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    weight = numpy_helper.from_array(np.ones((rows, 8), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="MatMul_0")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [weight],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True,
                    location="w.bin", size_threshold=0)  # fmt: skip


def test_a_change_to_shards_or_external_data_changes_the_model(tmp_path: Path) -> None:
    """A pull request that retrains a sharded checkpoint or re-exports an ONNX file's weights
    may leave the index or the .onnx unchanged: the model changed all the same, and its base
    version comes with its shards / external data."""
    pytest.importorskip("safetensors")
    origin = tmp_path / "origin"
    _sharded(origin / "models" / "lm", head=16)
    _external(origin / "models" / "cnn", rows=4)
    git(origin, "init", "-q")
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "base")
    git(origin, "checkout", "-q", "-b", "feature")
    _sharded(origin / "models" / "lm", head=24)  # same index: only shard 2 changes
    index = origin / "models" / "lm" / "model.safetensors.index.json"
    onnx_file = origin / "models" / "cnn" / "model.onnx"
    before = onnx_file.read_bytes()
    (origin / "models" / "cnn" / "w.bin").write_bytes(b"\x00" * (4 * 8 * 4))  # new weights
    assert onnx_file.read_bytes() == before
    git(origin, "commit", "-q", "-am", "retrained")
    changed = git(origin, "diff", "--name-only", "main", "feature").split()
    assert changed == ["models/cnn/w.bin", "models/lm/model-00002-of-00002.safetensors"]
    assert index.exists()
    checkout = tmp_path / "checkout"
    git(tmp_path, "clone", "-q", "--branch", "feature", str(origin), str(checkout))
    code, out, outputs, _ = run_action(
        checkout, tmp_path, paths="models/**", changed_files_only="true"
    )
    assert code == 0, out
    assert outputs["checked"] == "2"
    report = json.loads(Path(outputs["report"]).read_text())
    models = {m["path"]: m for m in report["models"]}
    assert set(models) == {"models/cnn/model.onnx", "models/lm/model.safetensors.index.json"}
    lm = models["models/lm/model.safetensors.index.json"]["metrics"]
    assert (lm["parameters"], lm["baseline"]["metrics"]["parameters"]) == (
        32 * 8 + 24 * 8,
        32 * 8 + 16 * 8,
    )
    cnn = models["models/cnn/model.onnx"]["metrics"]
    assert cnn["baseline"]["metrics"]["parameters"] == cnn["parameters"] == 4 * 8
    assert not any(f["rule"] == "MG902" for m in report["models"] for f in m["findings"])


def test_the_base_branchs_cached_results_serve_its_pull_requests(
    pull_request: Path, tmp_path: Path
) -> None:
    """A push to main stores its models' results; the pull request then checks only its own
    version of the changed model: its base version (exported from git to a temporary path)
    is the file main's run stored, and its result is read back, not checked again."""
    import hashlib

    folder = tmp_path / "cache"
    env = {"MODELGATE_CACHE_DIR": str(folder), "MODELGATE_NO_CACHE": None}
    git(pull_request, "checkout", "-q", "main")  # the same workspace, as on a runner
    try:
        code, out, outputs, _ = run_action(pull_request, tmp_path, env, paths="models/**")
    finally:
        git(pull_request, "checkout", "-q", "feature")
    assert code == 0 and outputs["checked"] == "2", out
    stored = {}
    for entry in (folder / "results-v1").glob("*.json"):
        data = json.loads(entry.read_text())
        data["created"] = "2000-01-01T00:00:00Z"  # a re-check would write a newer one
        entry.write_text(json.dumps(data))
        stored[data["inputs"]["file"]["sha256"]] = entry
    base_bytes = subprocess.run(
        ["git", "show", "main:models/net.pt2"], cwd=pull_request, capture_output=True, check=True
    ).stdout
    base_entry = stored[hashlib.sha256(base_bytes).hexdigest()]

    code, out, outputs, _ = run_action(
        pull_request, tmp_path, env, paths="models/**", changed_files_only="true"
    )
    assert code == 1 and outputs["checked"] == "1", out
    assert json.loads(base_entry.read_text())["created"] == "2000-01-01T00:00:00Z"
    (model,) = json.loads(Path(outputs["report"]).read_text())["models"]
    assert "cached" not in model  # the pull request's own version was checked
    base = model["metrics"]["baseline"]  # the base version's, from the cache, judged anew
    assert base["metrics"]["parameters"] == 8 * 3 * 9 + 8 + 8 * 10 + 10
    assert [f["rule"] for f in base["new_findings"]] == ["MG001"]
    assert len(list((folder / "results-v1").glob("*.json"))) == len(stored) + 1


def _action_steps() -> tuple[dict, dict[str, dict]]:
    import yaml

    action = yaml.safe_load((Path(__file__).resolve().parent.parent / "action.yml").read_text())
    return action, {step["name"]: step for step in action["runs"]["steps"]}


def test_action_yml_restores_the_cache_everywhere_and_saves_it_only_from_the_default_branch():
    """A pull request must never write a cache that a later run (main's, another pull
    request's) reads: restore-only everywhere, save only on a push to the default branch."""
    action, steps = _action_steps()
    assert action["inputs"]["cache"]["default"] == "true"
    uses = [(name, str(step.get("uses", ""))) for name, step in steps.items()]
    assert not [u for _, u in uses if u.startswith("actions/cache@")]  # saves on every event
    (restore,) = [n for n, u in uses if u.startswith("actions/cache/restore@")]
    (save,) = [n for n, u in uses if u.startswith("actions/cache/save@")]
    names = list(steps)
    assert names.index(restore) < names.index("Run modelgate") < names.index(save)
    restore, save = steps[restore], steps[save]
    run_env = steps["Run modelgate"]["env"]
    assert restore["with"]["path"] == save["with"]["path"] == run_env["MODELGATE_CACHE_DIR"]
    assert "inputs.cache" in run_env["MODELGATE_NO_CACHE"]
    assert restore["with"]["key"] == save["with"]["key"]
    prefixes = restore["with"]["restore-keys"].splitlines()
    assert prefixes and all(save["with"]["key"].startswith(p) for p in prefixes)
    assert "${{ github.sha }}" in save["with"]["key"]  # one cache per commit of main
    condition = " ".join(save["if"].split())
    assert "github.event_name == 'push'" in condition
    assert "github.ref == format('refs/heads/{0}', github.event.repository.default_branch)" in (
        condition
    )
    assert "inputs.cache == 'true'" in condition and "inputs.cache == 'true'" in restore["if"]
    assert "event_name" not in restore["if"]  # pull requests restore the base branch's
