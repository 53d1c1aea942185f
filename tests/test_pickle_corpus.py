"""A sample of the pickle benchmark's corpus (benchmarks/bench_pickles.py), in the suite.

A few recipes of every family (tests/pickle_corpus.py :data:`SAMPLE`) and a few benign
checkpoints. One ``modelgate check`` reads them all first; no marker may appear. Then each
malicious file goes to its real loader in a fresh child process, whose marker must appear:
the test proves the payload is live, so a catch is a catch of something real. Benign files of
share one child (they run nothing).

These tests state the behaviour issue 12 asks for: every malicious file MG901 or MG903, every
benign file passing with no error finding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("torch")
pytest.importorskip("numpy")

import pickle_corpus as corpus

pytestmark = [pytest.mark.torch, pytest.mark.slow]

RECIPES = [r for r in corpus.sample() if not r.missing()]
MALICIOUS = [r for r in RECIPES if r.malicious]
BENIGN = [r for r in RECIPES if not r.malicious]
CAUGHT_BY = {"MG901", "MG903"}


def _env() -> dict[str, str]:
    env = dict(os.environ, MODELGATE_NO_CACHE="1", PYTHONDONTWRITEBYTECODE="1")
    for name in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("pickle_corpus")
    (work / "files").mkdir()
    (work / "markers").mkdir()
    ctxs: dict[str, corpus.Ctx] = {}
    for r in RECIPES:
        aux = work / "aux" / r.name
        aux.mkdir(parents=True)
        ctx = corpus.Ctx(str(work / "files" / r.filename), str(work / "markers" / r.name), str(aux))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's deprecation notes, not the test's
            r.build(ctx)
        if os.path.exists(ctx.marker):  # building must not count as running
            os.remove(ctx.marker)
        ctxs[r.name] = ctx
    proofs: dict[str, corpus.Proof] = {}
    pool = ThreadPoolExecutor(max_workers=max(3, os.cpu_count() or 2))
    # benign files run nothing: their loader may work while modelgate does
    benign = pool.submit(corpus.prove_benign_batch, [(r, ctxs[r.name]) for r in BENIGN], env=_env())
    # modelgate once over every file, before any malicious file's loader has run
    report = work / "report.json"
    cmd = [sys.executable, "-m", "modelgate", "check", "--format", "json", "--no-cache"]
    cmd += ["-o", str(report), *(c.path for c in ctxs.values())]
    done = subprocess.run(cmd, cwd=work, env=_env(), capture_output=True, text=True)
    assert report.exists(), done.stderr[-2000:]
    models = json.loads(report.read_text())["models"]
    by_path = {os.path.normpath(os.path.join(work, m["path"])): m for m in models}
    reports = {name: by_path.get(os.path.normpath(c.path)) for name, c in ctxs.items()}
    ran_under_modelgate = sorted(n for n, c in ctxs.items() if os.path.exists(c.marker))
    for c in ctxs.values():
        if os.path.exists(c.marker):
            os.remove(c.marker)
    # then each malicious file under its real loader, a fresh child each
    futures = {r.name: pool.submit(corpus.prove, r, ctxs[r.name], env=_env()) for r in MALICIOUS}
    proofs.update({name: f.result() for name, f in futures.items()})
    proofs.update(benign.result())
    pool.shutdown()
    return {"reports": reports, "proofs": proofs, "ran_under_modelgate": ran_under_modelgate}


def _findings(report: dict | None) -> list[str]:
    if report is None:
        return ["(no report for the file)"]
    return [f"{f['rule']} {f['severity']}: {f['message']}" for f in report["findings"]]


def test_the_sample_covers_every_family() -> None:
    assert {r.family for r in corpus.MALICIOUS} <= {r.family for r in corpus.sample()}


def test_no_payload_runs_under_modelgate(corpus_run: dict) -> None:
    assert corpus_run["ran_under_modelgate"] == []


@pytest.mark.parametrize("recipe", MALICIOUS, ids=lambda r: r.name)
def test_payload_runs_under_its_real_loader(recipe: corpus.Recipe, corpus_run: dict) -> None:
    proof = corpus_run["proofs"][recipe.name]
    assert proof.ran, f"{corpus.LOADER_CALLS[recipe.loader]} did not run it: {proof.detail}"


@pytest.mark.parametrize("recipe", MALICIOUS, ids=lambda r: r.name)
def test_modelgate_catches_it(recipe: corpus.Recipe, corpus_run: dict) -> None:
    report = corpus_run["reports"][recipe.name]
    rules = {f["rule"] for f in report["findings"]} if report else set()
    assert report is not None and not report["passed"] and rules & CAUGHT_BY, _findings(report)


@pytest.mark.parametrize("recipe", BENIGN, ids=lambda r: r.name)
def test_benign_file_loads(recipe: corpus.Recipe, corpus_run: dict) -> None:
    proof = corpus_run["proofs"][recipe.name]
    assert proof.ran, f"{corpus.LOADER_CALLS[recipe.loader]}: {proof.detail}"


@pytest.mark.parametrize("recipe", BENIGN, ids=lambda r: r.name)
def test_benign_file_passes(recipe: corpus.Recipe, corpus_run: dict) -> None:
    report = corpus_run["reports"][recipe.name]
    errors = [f for f in report["findings"] if f["severity"] == "error"] if report else [None]
    assert report is not None and report["passed"] and not errors, _findings(report)


def test_recipes_are_unique_and_cited() -> None:
    names = [r.name for r in corpus.all_recipes()]
    assert len(names) == len(set(names))
    assert all(r.source and r.loader in corpus.LOADERS for r in corpus.all_recipes())
    assert len(corpus.MALICIOUS) >= 140 and len(corpus.BENIGN) >= 20
