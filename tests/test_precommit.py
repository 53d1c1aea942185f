"""The real pre-commit framework runs this repository's hook on model files.

``pre-commit try-repo`` clones the hook repository at a commit (plus changes to tracked files)
and builds the hook's environment with pip: modelgate's core dependencies only, no torch. The
test snapshots the package's files, tracked or not, into a temporary repository so that it
checks the working tree as it is.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import background
import pytest
from modelfactory import build
from test_action import git

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = (
    "pyproject.toml",
    "README.md",
    ".pre-commit-hooks.yaml",
    "modelgate/",
    "rules/",
    "targets/",
)
PRE_COMMIT = [sys.executable, "-m", "pre_commit"]


def test_every_hook_is_in_the_readme_and_matches_model_files() -> None:
    import yaml

    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    readme = (ROOT / "README.md").read_text()
    assert [h["id"] for h in hooks] == ["modelgate", "modelgate-budget"]
    for hook in hooks:
        assert f"id: {hook['id']}" in readme
        assert hook["language"] == "python" and hook["entry"].startswith("modelgate check")
        files = re.compile(hook["files"])
        for name in (
            "m.pt",
            "a/b/M.PT2",
            "x.onnx",
            "w.safetensors",
            "c.ckpt",
            "s.torchscript",
            "hf/pytorch_model-00001-of-00002.bin",
            "m.pth",
            "m.ptl",
        ):
            assert files.search(name), name
        for name in ("notes.txt", "firmware.bin", "pt2.py", "model.pt.md"):
            assert not files.search(name), name


def start_background(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Make both repositories at the start of the session; the two ``try-repo`` runs (a pip
    install each) go to the background (tests/background.py) until the test reads them."""
    try:
        import torch  # noqa: F401  (user_repo skips without it)
    except ImportError:
        return
    _AHEAD.update(hook=_hook_repo(tmp_path_factory), user=_user_repo(tmp_path_factory))
    _AHEAD["home"] = tmp_path_factory.mktemp("pre-commit-home")
    background.add(JOB, _runs(_AHEAD["hook"], _AHEAD["user"], _AHEAD["home"]))


_AHEAD: dict[str, Path] = {}
JOB = f"{__name__}.try-repo"
BACKGROUND_FIRST = True  # two pip installs: the longest job, and independent of the others


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _AHEAD.get("hook") or _hook_repo(tmp_path_factory)


def _hook_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's files as one commit of a fresh repository."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    repo = tmp_path_factory.mktemp("hook-repo")
    for name in listed:
        if name.startswith(PACKAGE) and "__pycache__" not in name and (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "snapshot")
    return repo


@pytest.fixture(scope="module")
def user_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    return _AHEAD.get("user") or _user_repo(tmp_path_factory)


def _user_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository: good files in every torch-free format, a bad state dict, and a
    TorchScript file, whose graph needs torch."""
    import onnx
    from modelfactory import Factory

    work = tmp_path_factory.mktemp("user-repo")
    factory = Factory(work)
    clean = build("clean").eval()
    factory.state_dict(clean, "good.pt")
    factory.safetensors(clean.state_dict(), "good.safetensors")
    factory.pt2(clean, name="good.pt2")
    factory.torchscript(clean, name="good.torchscript")
    relu = onnx.helper.make_node("Relu", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    factory.onnx(
        [relu],
        [value("x", onnx.TensorProto.FLOAT, [1, 4])],
        [value("y", onnx.TensorProto.FLOAT, [1, 4])],
        name="good.onnx",
    )
    factory.state_dict(build("clean").half(), "bad.pt")  # FP16 BatchNorm: MG002
    (work / "notes.txt").write_text("not a model: the hook's files pattern skips it\n")
    git(work, "init", "-q")
    git(work, "add", "-A")
    return work


def try_repo(hook_repo: Path, user_repo: Path, home: Path, *files: str) -> background.Command:
    """``pre-commit try-repo`` on ``files``; each run builds its own hook environment
    (try-repo keeps its store in a temporary folder), so runs go in parallel."""
    env = {**background.environ(), "PRE_COMMIT_HOME": str(home), "PRE_COMMIT_COLOR": "never"}
    env.pop("GITHUB_ACTIONS", None)
    return background.Command(
        [*PRE_COMMIT, "try-repo", str(hook_repo), "modelgate", "--verbose", "--files", *files],
        cwd=user_repo,
        env=env,
        merge_stderr=True,
        timeout=900,
    )


GOOD = ["good.pt", "good.safetensors", "good.pt2", "good.onnx", "good.torchscript", "notes.txt"]


def _runs(hook_repo: Path, user_repo: Path, home: Path) -> list[background.Command]:
    return [
        try_repo(hook_repo, user_repo, home / "a", *GOOD),
        try_repo(hook_repo, user_repo, home / "b", "good.pt", "bad.pt"),
    ]


@pytest.mark.slow
def test_hook_passes_good_models_and_fails_a_bad_one(
    hook_repo: Path, user_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = _AHEAD.get("home") or tmp_path_factory.mktemp("pre-commit-home")
    good = GOOD
    passing, failing = background.run(JOB, _runs(hook_repo, user_repo, home))
    out = passing.stdout
    assert passing.returncode == 0, out
    for name in good[:-1]:
        assert f"pass  {name}" in out, out
    assert "notes.txt" not in out  # the hook's files pattern leaves other files alone
    # the environment has no torch; the TorchScript graph says which extra would read it
    assert "TorchScript ops need torch to read: install modelgate-lint[torch]" in out

    out = failing.stdout
    assert failing.returncode == 1, out
    assert "FAIL  bad.pt" in out and "MG002 fp16-batchnorm" in out
    assert "pass  good.pt" in out
