"""Checking many models at once, each model's whole check in a worker process.

The process that prints the report never reads a model file. A native reader that crashes on
a hostile file (torch's zip and TorchScript readers, protobuf) or a check that hangs takes
down one worker; the model is reported MG902 with what happened and the run goes on. Workers
live for the whole run, so heavy imports (torch, coremltools) are paid once per worker, not
per model. Results come back in the order of the paths, so a report is the same whatever the
number of workers.

Parallelism is across models: each worker runs torch's kernels on one thread (unless the user
set ``OMP_NUM_THREADS``). N workers then use N cores without fighting over them (OpenMP
threads spin while they wait), and numbers computed by a check (conversion drift) do not
depend on how many workers there were.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import stat
import sys
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from modelgate.config import Config, InputSpec
from modelgate.report import ModelReport
from modelgate.targets import REGISTRY as TARGETS

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def default_jobs() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass
class _Worker:
    process: Any  # multiprocessing Process of whichever start method
    conn: Connection
    task: int | None = None
    deadline: float = 0.0


def check_all(
    paths: list[str],
    config: Config,
    cli_inputs: tuple[InputSpec, ...] = (),
    jobs: int | None = None,
    timeout: float | None = None,
) -> list[ModelReport]:
    """:func:`modelgate.engine.check_file` for every path, ``jobs`` at a time, in order."""
    if not paths:
        return []
    jobs = max(1, min(jobs or default_jobs(), len(paths)))
    timeout = config.timeout if timeout is None else timeout  # the merged setting (options)
    results: list[ModelReport | None] = [None] * len(paths)
    pending = deque(_largest_first(paths) if jobs > 1 else range(len(paths)))
    workers: list[_Worker] = []
    context = _context()
    if jobs > 1 and context.get_start_method() == "fork" and any(map(_archive, paths)):
        _warm(config)
    setup = (config, cli_inputs, os.getcwd(), dict(os.environ), TARGETS.added())
    try:
        while pending or any(w.task is not None for w in workers):
            for worker in [w for w in workers if w.task is None and not w.process.is_alive()]:
                workers.remove(worker)  # died idle; replaced below
            idle = [w for w in workers if w.task is None]
            while pending and (idle or len(workers) < jobs):
                try:
                    worker = idle.pop() if idle else _start(context, setup, workers)
                except OSError:  # no processes to be had: check the rest here, unisolated
                    if workers:
                        raise
                    return _serially(paths, results, pending, config, cli_inputs)
                try:
                    worker.conn.send(paths[pending[0]])
                except OSError:  # it died between tasks: not this model's doing
                    _stop(worker, workers)
                    continue
                worker.task = pending.popleft()
                worker.deadline = time.monotonic() + timeout
            busy = [w for w in workers if w.task is not None]
            left = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], left))
            for worker in busy:
                index = worker.task
                assert index is not None
                if worker.conn in ready:
                    results[index] = _receive(worker, paths[index], config)
                elif worker.process.sentinel in ready:
                    worker.process.join()
                    results[index] = failed_report(
                        paths[index], config, _crash(worker.process.exitcode)
                    )
                    _stop(worker, workers)
                elif time.monotonic() >= worker.deadline:
                    results[index] = failed_report(
                        paths[index],
                        config,
                        f"timed out after {timeout:g} s (the time limit per model: "
                        "--timeout or timeout: in the config)",
                    )
                    _stop(worker, workers)
    finally:
        for worker in workers:  # tell them all first: they exit together
            if worker.task is None:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
        for worker in list(workers):
            _stop(worker, workers, graceful=True)
    return _collect(paths, results, config)


def _largest_first(paths: list[str]) -> list[int]:
    """Indices of ``paths``, largest file first (ties in path order). A model's check costs
    roughly what its file weighs, so handing out the big ones first keeps one worker from
    finishing the largest model alone while the others idle (longest-processing-time first).
    Results are still reported in path order."""

    def size(index: int) -> int:
        try:
            return os.path.getsize(paths[index])
        except OSError:
            return 0

    return sorted(range(len(paths)), key=lambda i: -size(i))


def _serially(
    paths: list[str],
    results: list[ModelReport | None],
    pending: deque[int],
    config: Config,
    cli_inputs: tuple[InputSpec, ...],
) -> list[ModelReport]:
    from modelgate import engine

    for index in pending:
        results[index] = engine.check_file(paths[index], config, cli_inputs)
    return _collect(paths, results, config)


def _collect(
    paths: list[str], results: list[ModelReport | None], config: Config
) -> list[ModelReport]:
    return [
        r or failed_report(p, config, "not checked") for p, r in zip(paths, results, strict=True)
    ]


def _context() -> Any:
    """fork where it is safe (Linux, one thread: the CLI), else a fork server (a parent with
    threads, such as one that ran torch: OpenMP's pool does not survive fork), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods and _single_threaded():
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        # a parent that uses torch will check models that need it: import it once, up front
        heavy = ["torch"] if "torch" in sys.modules else []
        context.set_forkserver_preload(["modelgate.engine", "modelgate.rules", *heavy])
        return context
    return multiprocessing.get_context("spawn")


def _warm(config: Config) -> None:
    """Import what the configured conversions need once, here, before the workers fork: N
    workers then share one import of torch and coremltools (seconds each) instead of paying
    it N times over on the same cores. Only imports; no model code or compute runs here."""
    from modelgate.checks import isolate, plan

    modules = plan.modules_for(config.checks)
    if modules:
        isolate.preload(dict.fromkeys(modules))


def _archive(path: str) -> bool:
    """Whether ``path`` is a zip archive, the container of every model a toolchain converts
    (TorchScript, ``torch.export``; a state dict too, which the workers then skip): a run of
    ONNX files, safetensors and pickles imports no toolchain here. Only the first bytes are
    read, and nothing but a regular file is opened."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as fh:
            return fh.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    except OSError:
        return False


def _single_threaded() -> bool:
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _start(context: Any, setup: tuple[Any, ...], workers: list[_Worker]) -> _Worker:
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(child, *setup), name="modelgate-worker")
    process.start()
    child.close()
    worker = _Worker(process, parent)
    workers.append(worker)
    return worker


def _receive(worker: _Worker, path: str, config: Config) -> ModelReport:
    worker.task = None
    try:
        status, payload = worker.conn.recv()
    except Exception as exc:  # died mid-message, or a message that does not unpickle
        worker.process.join(5)
        return failed_report(path, config, _crash(worker.process.exitcode, exc))
    if status == "ok":
        return payload
    return failed_report(path, config, f"modelgate failed on this file ({payload})")


def _stop(worker: _Worker, workers: list[_Worker], graceful: bool = False) -> None:
    """End a worker and whatever it started (it leads its own process group)."""
    if graceful and worker.task is None:  # told to stop (check_all tells them all at once)
        worker.process.join(2)
    if worker.process.is_alive() and worker.process.pid:
        with contextlib.suppress(OSError):
            os.killpg(worker.process.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            worker.process.kill()
    worker.process.join(5)
    worker.conn.close()
    worker.task = None
    if worker in workers:
        workers.remove(worker)


def _crash(exitcode: int | None, exc: BaseException | None = None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        hint = ", out of memory?" if -exitcode == signal.SIGKILL else ""
        return f"modelgate's reader crashed on this file (signal {-exitcode}, {name}{hint})"
    if exitcode:
        return f"modelgate's reader exited on this file with status {exitcode}"
    detail = f" ({type(exc).__name__})" if exc is not None else ""
    return f"modelgate's reader stopped answering on this file{detail}"


def failed_report(path: str, config: Config, reason: str) -> ModelReport:
    """The report of a model whose check could not finish: MG902 with ``reason``."""
    from modelgate import engine
    from modelgate.graph import ModelGraph

    graph = ModelGraph(path)
    graph.unreadable = reason
    with contextlib.suppress(OSError):
        graph.file_size = os.path.getsize(path)
    report = engine.graph_report(graph, config, engine.display_path(path))
    report.transient = reason  # what happened to this run, not what the file is: not cached
    return report


def _serve(
    conn: Connection,
    config: Config,
    cli_inputs: tuple[InputSpec, ...],
    cwd: str,
    env: dict[str, str],
    targets: tuple[str, ...] = (),
) -> None:
    """A worker: check the paths it is sent, one at a time, until told to stop. ``targets``
    are the target modules the parent registered at run time (a fork server or spawn starts
    without them)."""
    os.setpgrp()  # so that a timeout also ends what a check started (converter processes)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.dup2(2, 1)  # libraries that print must not corrupt the report on stdout
    sys.stdout = sys.stderr
    if os.environ != env:  # a fork server started earlier: take the caller's environment
        os.environ.clear()
        os.environ.update(env)
    if os.getcwd() != cwd:
        os.chdir(cwd)
    for variable in _THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")
    torch = sys.modules.get("torch")
    if torch is not None:  # already imported (fork server, warm parent): pool size was read
        with contextlib.suppress(Exception):
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from modelgate import engine

    TARGETS.ensure(targets)
    while True:
        try:
            path = conn.recv()
        except (EOFError, OSError):
            return
        if path is None:
            return
        try:
            result: tuple[str, Any] = ("ok", engine.check_file(path, config, cli_inputs))
        except BaseException as exc:  # a bug (or a library's sys.exit) ends this model only
            result = ("error", f"{type(exc).__name__}: {str(exc)[:200]}")
        try:
            conn.send(result)
        except Exception as exc:  # a report that does not pickle
            conn.send(("error", f"{type(exc).__name__} sending the report"))
