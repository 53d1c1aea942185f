"""The child-process runner every conversion step goes through: a crash, a hang, running out
of memory or an exception become a Failure with the reason, and what the step reported
before it failed survives."""

from __future__ import annotations

import faulthandler
import os
import sys
import time

import pytest

from modelgate.checks import isolate

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and rlimits")


def _adds(emit: isolate.Emit, n: int) -> dict:
    emit.stage("adding")
    emit("sum", n + 1)
    return {"done": True}


def _aborts(emit: isolate.Emit) -> None:
    emit.stage("converting")
    emit("converted", 1)
    print("terminate called after throwing an instance of 'std::runtime_error'", flush=True)
    faulthandler.disable()  # the crash is the test: keep pytest's traceback dump out of the log
    os.abort()


def _hangs(emit: isolate.Emit) -> None:
    emit.stage("compressing")
    emit("started", True)
    time.sleep(60)


def _allocates(emit: isolate.Emit) -> int:
    emit.stage("allocating")
    hog = bytearray(3_000_000_000)
    return len(hog)


def _raises(emit: isolate.Emit) -> None:
    emit.stage("exporting")
    raise NotImplementedError("PyTorch convert function for op 'kthvalue' not implemented.")


def _exits(emit: isolate.Emit) -> None:
    sys.stdout.write("a library called exit\n")
    os._exit(3)


def test_results_and_stages_come_back() -> None:
    stages: list[str] = []
    outcome = isolate.run(_adds, (41,), timeout=30, on_stage=stages.append)
    assert outcome.ok
    assert outcome.results == {"sum": 42, "return": {"done": True}}
    assert stages == ["adding"]


def test_a_crash_keeps_what_was_sent_and_says_why() -> None:
    outcome = isolate.run(_aborts, timeout=30)
    assert outcome.results == {"converted": 1}
    failure = outcome.failure
    assert failure is not None and failure.kind == "crash" and failure.stage == "converting"
    assert failure.reason.startswith("crashed (SIGABRT): terminate called after throwing")


def test_a_hang_is_killed_at_the_time_limit() -> None:
    start = time.monotonic()
    outcome = isolate.run(_hangs, timeout=1.0)
    assert time.monotonic() - start < 10
    assert outcome.results == {"started": True}
    assert outcome.failure is not None
    assert (outcome.failure.kind, outcome.failure.reason, outcome.failure.stage) == (
        "timeout",
        "timed out after 1 s",
        "compressing",
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is Linux's")
def test_running_out_of_the_memory_limit() -> None:
    outcome = isolate.run(_allocates, timeout=30, memory_mb=1024)
    assert outcome.failure is not None and outcome.failure.kind == "memory"
    assert "memory limit is 1024 MB" in outcome.failure.reason
    assert outcome.failure.stage == "allocating"


def test_an_exception_is_the_reason_and_exit_codes_are_reported() -> None:
    outcome = isolate.run(_raises, timeout=30)
    assert outcome.failure is not None and outcome.failure.kind == "error"
    assert outcome.failure.reason == (
        "NotImplementedError: PyTorch convert function for op 'kthvalue' not implemented."
    )
    assert "Traceback" in outcome.failure.detail
    outcome = isolate.run(_exits, timeout=30)
    assert outcome.failure is not None
    assert outcome.failure.reason == "exited with status 3: a library called exit"
