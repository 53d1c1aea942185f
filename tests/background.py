"""Slow subprocess work started ahead of the tests that read it.

A few modules need one long run of real tools (a full ``modelgate check`` with conversions, a
batch of real conversions through ``convert_probe``, ``pre-commit try-repo``). The suite runs
in one process on a two-core machine, so while those tools run the tests only wait. A module
that defines ``start_background(tmp_path_factory)`` builds its inputs at the start of the
session and :func:`add`\\ s its commands here; they run one job at a time, next to the
in-process tests, and the module's fixture collects the result with :func:`run`, which waits
for the job (starting it at once if it has not started). Without a head start (the module
run alone, or the job never added) :func:`run` simply runs the commands. The commands and
what the tests assert on their output are the same either way.

Output goes to files, not pipes, so a job nobody reads yet never blocks on a full pipe.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SLOTS = 1  # jobs running at once, next to the test process itself
# what every test runs under (conftest's _quiet_torch); a job may start between tests
# MODELGATE_NO_CACHE: no test reads a result another test stored, or leaves a cache folder
# behind; tests/test_cache.py turns the cache on in its own folders
QUIET = {"PYTORCH_JIT_LOG_LEVEL": "", "TORCH_CPP_LOG_LEVEL": "ERROR", "MODELGATE_NO_CACHE": "1"}
# the suite runs in GitHub Actions too, where the CLI would default to annotations
UNSET = ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "GITHUB_BASE_REF")


@dataclass
class Command:
    args: list[str]
    cwd: Path | str | None = None
    env: dict[str, str] | None = None  # default: environ() when the command is made
    input: str | None = None
    merge_stderr: bool = False  # stderr into stdout, as stderr=subprocess.STDOUT does
    timeout: float = 900

    def __post_init__(self) -> None:
        if self.env is None:
            self.env = environ()


def environ() -> dict[str, str]:
    """This process's environment as a test sees it (conftest's _quiet_torch applied)."""
    env = {**os.environ, **QUIET}
    return {k: v for k, v in env.items() if k not in UNSET}


@dataclass
class _Running:
    command: Command
    process: subprocess.Popen
    out: Path
    err: Path
    started: float


@dataclass
class _Job:
    name: str
    commands: list[Command] | Callable[[], list[Command]]  # a callable: made at launch
    running: list[_Running] = field(default_factory=list)
    results: list[subprocess.CompletedProcess] | None = None


_pending: list[_Job] = []
_active: list[_Job] = []
_done: dict[str, _Job] = {}
_folder: Path | None = None


def _dir() -> Path:
    global _folder
    if _folder is None:
        _folder = Path(tempfile.mkdtemp(prefix="modelgate-background-"))
    return _folder


def _launch(job: _Job) -> None:
    if callable(job.commands):
        job.commands = job.commands()
    for index, command in enumerate(job.commands):
        out, err = _dir() / f"{job.name}.{index}.out", _dir() / f"{job.name}.{index}.err"
        stdin = subprocess.DEVNULL
        if command.input is not None:
            source = _dir() / f"{job.name}.{index}.in"
            source.write_text(command.input)
            stdin = source.open("rb")
        with out.open("wb") as fout, err.open("wb") as ferr:
            process = subprocess.Popen(
                command.args,
                cwd=command.cwd,
                env=command.env,
                stdin=stdin,
                stdout=fout,
                stderr=subprocess.STDOUT if command.merge_stderr else ferr,
                start_new_session=True,  # its own group: stop() ends it and its children
            )
        if stdin is not subprocess.DEVNULL:
            stdin.close()
        job.running.append(_Running(command, process, out, err, time.monotonic()))
    _active.append(job)


def _finish(job: _Job) -> None:
    results = []
    for run_ in job.running:
        left = run_.command.timeout - (time.monotonic() - run_.started)
        try:
            run_.process.wait(timeout=max(left, 0.1))
        except subprocess.TimeoutExpired:
            _kill(run_.process)
            raise
        results.append(
            subprocess.CompletedProcess(
                run_.command.args,
                run_.process.returncode,
                run_.out.read_text(errors="replace"),
                "" if run_.command.merge_stderr else run_.err.read_text(errors="replace"),
            )
        )
    job.results = results
    _active.remove(job)
    _done[job.name] = job


def pump() -> None:
    """Collect finished jobs and start pending ones while a slot is free (cheap: polls)."""
    for job in list(_active):
        if all(r.process.poll() is not None for r in job.running):
            _finish(job)
    while _pending and len(_active) < SLOTS:
        _launch(_pending.pop(0))


def add(name: str, commands: list[Command] | Callable[[], list[Command]]) -> None:
    """Queue ``commands`` (run side by side) as job ``name``; a callable gives them when the
    job starts."""
    _pending.append(_Job(name, commands))
    pump()


def is_pending(name: str) -> bool:
    """Whether job ``name`` is queued and not started yet."""
    return any(j.name == name for j in _pending)


def run(name: str, commands: list[Command]) -> list[subprocess.CompletedProcess]:
    """The results of job ``name``: waited for if it was queued, else ``commands`` run now."""
    job = _done.get(name) or next((j for j in _active if j.name == name), None)
    if job is None:
        job = next((j for j in _pending if j.name == name), None)
        if job is None:
            job = _Job(name, commands)
        else:
            _pending.remove(job)
        _launch(job)
    if job.results is None:
        _finish(job)
    pump()
    assert job.results is not None
    return job.results


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def stop() -> None:
    """End what is still running (a session cut short) and forget the rest."""
    for job in _active:
        for run_ in job.running:
            _kill(run_.process)
    _active.clear()
    _pending.clear()
    global _folder
    if _folder is not None:
        shutil.rmtree(_folder, ignore_errors=True)
        _folder = None
