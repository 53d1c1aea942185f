"""Fixtures: small seeded models built by the tests, written in every format modelgate reads.

Nothing binary is committed; each test builds what it checks. torch is imported lazily so
that torch-free tests stay fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import background  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in background.QUIET.items():
        monkeypatch.setenv(name, value)
    for name in background.UNSET:  # the CLI would default to annotations in GitHub Actions
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
    # modules whose slow tool runs start in the background (tests/background.py) go last, in
    # file order, so that the other modules' tests run while those tools work; each module's
    # tests stay together and in their own order
    late = [i for i in items if _starts_background(i)]
    items[:] = [i for i in items if not _starts_background(i)] + late


def _starts_background(item: pytest.Item) -> bool:
    return hasattr(getattr(item, "module", None), "start_background")


@pytest.fixture(scope="session", autouse=True)
def _background_jobs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Each selected module's ``start_background``: its inputs built, its tool runs queued."""
    modules = {}
    for item in request.session.items:
        if _starts_background(item):
            modules.setdefault(item.module.__name__, item.module)
    # the longest jobs first (BACKGROUND_FIRST): they are done before their tests come
    first = sorted(modules.values(), key=lambda m: not getattr(m, "BACKGROUND_FIRST", False))
    try:
        for module in first:
            # a failure to build is left to the module's own fixtures, which build and say why
            with contextlib.suppress(Exception, pytest.skip.Exception):
                module.start_background(tmp_path_factory)
        yield
    finally:
        background.stop()


def pytest_runtest_setup(item: pytest.Item) -> None:
    background.pump()


def pytest_runtest_teardown(item: pytest.Item) -> None:
    background.pump()
