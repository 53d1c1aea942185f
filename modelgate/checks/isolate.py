"""Run one step (a conversion, a compression) in a child process with a time and memory limit.

Converters crash (a C++ abort), hang, run out of memory, and a failed ``torch.export`` can
poison a later ``coremltools.convert`` in the same process. Each step therefore runs in its
own child; whatever happens there becomes a :class:`Failure` with the reason, and what the
step reported before it failed survives (it sends results as it goes, through :class:`Emit`).

On Linux children are forked from the calling process (the per-model worker), so torch and
coremltools, imported there once by :func:`preload` without running anything, cost nothing
per step. Elsewhere they are spawned. The child's stdout and stderr go to a log file whose
tail explains a crash; converter progress bars never reach the user's terminal.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

LOG_TAIL = 2000  # characters of the child's output kept with a crash


@dataclass
class Failure:
    kind: str  # error | timeout | crash | memory
    reason: str  # one line a person can act on
    stage: str | None = None  # what the step was doing when it failed
    detail: str = ""  # the exception's own text, or the tail of the child's output


@dataclass
class Outcome:
    results: dict[str, Any] = field(default_factory=dict)  # key -> value, as emitted
    failure: Failure | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None


class Emit:
    """Handed to the step: ``emit(key, value)`` sends a result now, ``emit.stage(name)``
    says what it is doing (for progress lines and for the reason of a failure)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def __call__(self, key: str, value: Any) -> None:
        self._conn.send(("result", key, value))

    def stage(self, name: str) -> None:
        self._conn.send(("stage", name, None))


def preload(modules: Iterable[str]) -> list[str]:
    """Import ``modules`` here, quietly, so that forked steps find them loaded; returns the
    ones that are not installed. Importing runs no model code and starts no compute threads."""
    missing = []
    with quiet_fds(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in modules:
            if name in sys.modules:
                continue
            try:
                importlib.import_module(name)
            except ImportError:
                missing.append(name)
    return missing


@contextlib.contextmanager
def quiet_fds() -> Any:
    """Silence what libraries print on import (coremltools' version warnings) at the fd
    level; Python's logging last-resort handler writes to sys.stderr, which follows."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _context() -> Any:
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def run(
    step: Callable[..., Any],
    args: tuple[Any, ...] = (),
    *,
    timeout: float,
    memory_mb: int | None = None,
    on_stage: Callable[[str], None] | None = None,
    name: str = "step",
) -> Outcome:
    """``step(emit, *args)`` in a child process; its return value (if any) is result "return".

    ``timeout`` seconds, then the child is killed; ``memory_mb`` limits its address space.
    ``on_stage`` is called in this process with each stage the child announces."""
    context = _context()
    parent, child = context.Pipe(duplex=False)
    handle, log_path = tempfile.mkstemp(prefix="modelgate-step-", suffix=".log")
    os.close(handle)
    process = context.Process(
        target=_child, args=(child, log_path, memory_mb, step, args), name=f"modelgate-{name}"
    )
    state = _State(Outcome(), on_stage)
    start = time.monotonic()
    deadline = start + timeout
    try:
        process.start()
        child.close()
        while not state.done:
            left = deadline - time.monotonic()
            if left <= 0:
                state.fail(
                    Failure("timeout", f"timed out after {timeout:.3g} s", detail=_tail(log_path))
                )
                break
            ready = wait([parent, process.sentinel], left)
            gone = process.sentinel in ready
            while not state.done and parent.poll():  # also what it sent just before exiting
                try:
                    state.handle(parent.recv())
                except (EOFError, OSError):  # it closed the pipe or died mid-message
                    gone = True
                    break
            if gone and not state.done:
                process.join(5)
                state.fail(_died(process.exitcode, memory_mb, log_path))
    finally:
        if process.is_alive():
            with contextlib.suppress(OSError, AttributeError):
                process.kill()
        with contextlib.suppress(Exception):
            process.join(5)
        parent.close()
        with contextlib.suppress(OSError):
            os.unlink(log_path)
    state.outcome.seconds = round(time.monotonic() - start, 3)
    return state.outcome


@dataclass
class _State:
    outcome: Outcome
    on_stage: Callable[[str], None] | None
    stage: str | None = None
    done: bool = False

    def handle(self, message: tuple[str, Any, Any]) -> None:
        kind, key, value = message
        if kind == "stage":
            self.stage = key
            if self.on_stage is not None:
                self.on_stage(key)
        elif kind == "result":
            self.outcome.results[key] = value
        elif kind == "error":
            self.fail(Failure(value[0], value[1], detail=value[2]))
        elif kind == "done":
            self.done = True

    def fail(self, failure: Failure) -> None:
        failure.stage = failure.stage or self.stage
        self.outcome.failure = failure
        self.done = True


def _died(exitcode: int | None, memory_mb: int | None, log: str) -> Failure:
    tail = _tail(log)
    limit = f" (the memory limit is {memory_mb} MB: isolation.memory_mb)" if memory_mb else ""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if -exitcode == signal.SIGKILL:
            return Failure("memory", f"killed ({name}): out of memory?{limit}", detail=tail)
        if memory_mb and ("bad_alloc" in tail or "memory" in tail.lower()):
            return Failure("memory", f"ran out of memory ({name}){limit}", detail=tail)
        return Failure("crash", f"crashed ({name}){_last_line(tail)}", detail=tail)
    return Failure("crash", f"exited with status {exitcode}{_last_line(tail)}", detail=tail)


def _last_line(tail: str) -> str:
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return f": {lines[-1][:200]}" if lines else ""


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - LOG_TAIL))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _child(
    conn: Connection,
    log: str,
    memory_mb: int | None,
    step: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    """The child: limits, output to the log file, run the step, report how it ended."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # Python-level writers too (the parent's may be a capture object, not fd 1 and 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.environ.setdefault("TQDM_DISABLE", "1")
    if memory_mb:
        import resource

        limit = memory_mb * 1024 * 1024
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        value = step(Emit(conn), *args)
        if value is not None:
            conn.send(("result", "return", value))
        conn.send(("done", None, None))
    except MemoryError:
        limit = f" (the memory limit is {memory_mb} MB: isolation.memory_mb)" if memory_mb else ""
        conn.send(("error", None, ("memory", f"ran out of memory{limit}", "")))
    except BaseException as exc:  # the step's own failure, reported with its reason
        detail = "".join(traceback.format_exception(exc))[-LOG_TAIL:]
        conn.send(("error", None, ("error", f"{type(exc).__name__}: {exc}", detail)))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        conn.close()
        os._exit(0)
