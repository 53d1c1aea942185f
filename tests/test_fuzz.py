"""Fuzzing in the suite: a few hundred mutants of real model files of every format.

Every mutant must end in a report that passes or fails as the docs say (exit 0 or 1), with no
traceback, no reader crash, no hang (each model has a time limit, the run a backstop), and no
payload run. ``benchmarks/fuzz.py`` runs thousands of the same cases.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

import fuzzing

CASES = 400
SEED = 20_240_521


def start_background(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build the corpus and the mutants at the start of the session; the run over them goes
    to the background (tests/background.py) until :func:`fuzzed` reads it."""
    import background

    _AHEAD["built"] = built = _build(tmp_path_factory)
    args, limit, cwd = fuzzing.command(built[3], jobs=2, timeout=30, cwd=built[0])
    background.add(JOB, [background.Command(args, cwd=cwd, timeout=limit)])


_AHEAD: dict[str, tuple] = {}
JOB = f"{__name__}.run"


def _build(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("fuzz")
    marker = root / "PAYLOAD_RAN"
    seeds = fuzzing.build_corpus(root / "corpus", marker)
    cases = fuzzing.make_cases(seeds, root / "cases", CASES, SEED)
    return root, marker, seeds, cases


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root, marker, seeds, cases = _AHEAD.get("built") or _build(tmp_path_factory)
    outcome = fuzzing.run(cases, marker, jobs=2, timeout=30, cwd=root, background=JOB)
    return seeds, cases, outcome, marker


def test_every_mutant_ends_in_a_report(fuzzed) -> None:  # type: ignore[no-untyped-def]
    seeds, cases, outcome, _ = fuzzed
    assert outcome.cases == CASES
    assert outcome.crashes == []
    assert outcome.hangs == []
    assert outcome.wrong_exit == []
    assert {c.seed for c in cases} == {s.name for s in seeds}  # every format was fuzzed
    assert outcome.results.get("passed", 0) > 0 and outcome.results.get("MG902", 0) > 0


def test_no_payload_ran(fuzzed) -> None:  # type: ignore[no-untyped-def]
    seeds, _, outcome, marker = fuzzed
    assert not outcome.payload_ran and not marker.exists()
    # the payload is live: plain pickle.loads of the hostile seed does leave the marker
    stream = next(s for s in seeds if s.name == "hostile_stream").path
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.loads(open({str(stream)!r}, "
                    "'rb').read())"], check=True, timeout=60)  # fmt: skip
    assert marker.exists()
    marker.unlink()


def test_a_single_mutant_exits_as_its_report_says(fuzzed) -> None:  # type: ignore[no-untyped-def]
    """The CLI's exit code for one file is 0 when its model passed, 1 when it failed."""
    _, cases, outcome, _ = fuzzed
    passed = [c for c in cases if outcome.passed[c.name]][:3]
    failed = [c for c in cases if not outcome.passed[c.name]][:3]
    for case in passed + failed:
        done = subprocess.run(
            [sys.executable, "-m", "modelgate", "check", str(case.path)],
            capture_output=True, text=True, timeout=120, cwd=case.path.parent,
        )  # fmt: skip
        assert done.returncode == (0 if outcome.passed[case.name] else 1), case.name
        assert "Traceback" not in done.stderr


def test_the_corpus_reads_clean(fuzzed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Unmutated, the real models pass and the hostile seeds fail with MG901."""
    seeds, _, _, marker = fuzzed
    cases = [fuzzing.Case(s.name, s.name, "none", s.path) for s in seeds]
    outcome = fuzzing.run(cases, marker, cwd=tmp_path)
    assert outcome.ok
    expect = {s.name: not s.name.startswith("hostile") for s in seeds}
    expect["pickled_module"] = False  # torchmodels.WithDropout: MG901 without an allow entry
    assert outcome.passed == expect
