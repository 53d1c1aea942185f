"""Fixtures: small seeded models built by the tests, written in every format modelgate reads.

Nothing binary is committed; each test builds what it checks. torch is imported lazily so
that torch-free tests stay fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


@pytest.fixture(autouse=True)
def _quiet_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTORCH_JIT_LOG_LEVEL", "")
    monkeypatch.setenv("TORCH_CPP_LOG_LEVEL", "ERROR")
    # the suite runs in GitHub Actions too, where the CLI would default to annotations
    for name in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "GITHUB_BASE_REF"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def models(tmp_path: Path):
    """A :class:`modelfactory.Factory` writing into this test's temporary folder."""
    import modelfactory

    return modelfactory.Factory(tmp_path)


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture):
    """Run ``modelgate`` in-process from ``tmp_path``; returns (exit code, stdout, stderr)."""
    from modelgate.cli import main

    def run(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
        monkeypatch.chdir(cwd or tmp_path)
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
