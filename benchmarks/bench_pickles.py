"""The peer-suite pickle benchmark (issue 12, item 5): malicious files of every family the
peers test, each proven live under its real loader, and benign checkpoints of the shapes real
projects commit; modelgate is scored on both.

    .venv/bin/python benchmarks/bench_pickles.py [--json OUT] [--keep DIR] [-j N] [--only SUBSTR]

Per malicious file, in this order:
1. ``modelgate check --format json --no-cache`` reads it (all files of a kind in one process);
   afterwards no marker may exist: a marker there is a payload modelgate ran;
2. a fresh child process loads it with its real loader (``torch.load(weights_only=False)``,
   ``torch.export.load``, ``torch.jit.load``, ``numpy.load(allow_pickle=True)``,
   ``joblib.load``, ``pickle.load``) with a timeout: the marker must appear, or the recipe is
   reported as payload-not-run and left out of the score.
Classes: caught (MG901 or MG903), MG902-only (the issue counts that only where no loader reads
the file: every file here is read by one, so it is a shortfall), missed (passed, or no MG90x).
A benign file must load with its loader and pass with no error finding.

Exit status: 0 when nothing is missed, no benign file fails and no payload ran under
modelgate; 1 otherwise; 2 when the corpus cannot be built or modelgate cannot be run.
Everything is generated into a temporary folder; nothing binary is committed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import pickle_corpus as corpus  # noqa: E402

GOOD_RULES = {"MG901", "MG903"}


@dataclass
class Outcome:
    name: str
    family: str
    source: str
    loader: str
    malicious: bool
    path: str = ""
    built: bool = False
    build_error: str = ""
    skipped: str = ""  # a module the recipe needs is not installed
    proof: dict | None = None
    mg_passed: bool | None = None
    mg_rules: list[str] = field(default_factory=list)
    mg_findings: list[dict] = field(default_factory=list)
    ran_under_modelgate: bool = False
    verdict: str = ""  # caught / mg902-only / missed / not-run | ok / false-alarm / load-failed


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "MODELGATE_NO_CACHE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "TORCH_CPP_LOG_LEVEL": "ERROR",
            "PYTORCH_JIT_LOG_LEVEL": "",
        }
    )
    for name in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT"):
        env.pop(name, None)
    return env


def build_all(recipes: list[corpus.Recipe], work: Path) -> dict[str, tuple[corpus.Ctx, Outcome]]:
    """Write every recipe's file; a marker left by building is removed and said."""
    (work / "files").mkdir(parents=True, exist_ok=True)
    (work / "markers").mkdir(exist_ok=True)
    out: dict[str, tuple[corpus.Ctx, Outcome]] = {}
    for r in recipes:
        aux = work / "aux" / r.name
        aux.mkdir(parents=True, exist_ok=True)
        ctx = corpus.Ctx(str(work / "files" / r.filename), str(work / "markers" / r.name), str(aux))
        o = Outcome(r.name, r.family, r.source, r.loader, r.malicious, path=ctx.path)
        missing = r.missing()
        if missing:
            o.skipped = "not installed: " + ", ".join(missing)
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch's deprecation notes, not ours
                    r.build(ctx)
                o.built = os.path.exists(ctx.path)
                if not o.built:
                    o.build_error = "the recipe wrote no file"
            except Exception as exc:  # a recipe's failure is reported, not fatal
                o.build_error = f"{type(exc).__name__}: {exc}"[:300]
                if os.environ.get("BENCH_DEBUG"):
                    traceback.print_exc()
            if os.path.exists(ctx.marker):  # building must not count as running
                os.remove(ctx.marker)
        out[r.name] = (ctx, o)
    return out


def run_modelgate(
    paths: list[str], jobs: int, cwd: Path
) -> tuple[int, dict[str, dict], float, str]:
    """One ``modelgate check`` over ``paths``: exit code, the JSON report per path, seconds."""
    if not paths:
        return 0, {}, 0.0, ""
    exe = shutil.which("modelgate", path=str(Path(sys.executable).parent)) or "modelgate"
    report = cwd / f"report-{time.monotonic_ns()}.json"
    cmd = [
        exe,
        "check",
        "--format",
        "json",
        "--no-cache",
        "-j",
        str(jobs),
        "-o",
        str(report),
        *paths,
    ]
    started = time.monotonic()
    done = subprocess.run(
        cmd, cwd=cwd, env=_env(), capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    seconds = time.monotonic() - started
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return done.returncode, {}, seconds, (done.stderr or done.stdout)[-2000:]
    by_path = {os.path.normpath(os.path.join(cwd, m["path"])): m for m in data.get("models", [])}
    return done.returncode, by_path, seconds, done.stderr[-2000:]


def classify(o: Outcome) -> None:
    if o.skipped or not o.built:
        o.verdict = "skipped" if o.skipped else "build-failed"
        return
    if o.malicious:
        if not (o.proof and o.proof["ran"]):
            o.verdict = "not-run"
        elif o.mg_passed is None:
            o.verdict = "missed"  # modelgate reported nothing for it
        elif GOOD_RULES & set(o.mg_rules) and not o.mg_passed:
            o.verdict = "caught"
        elif "MG902" in o.mg_rules and not o.mg_passed:
            o.verdict = "mg902-only"
        else:
            o.verdict = "missed"
    else:
        errors = [f for f in o.mg_findings if f.get("severity") == "error"]
        if not (o.proof and o.proof["ran"]):
            o.verdict = "load-failed"
        elif o.mg_passed is not True or errors:
            o.verdict = "false-alarm"
        else:
            o.verdict = "ok"


def evaluate(
    recipes: list[corpus.Recipe], work: Path, jobs: int, workers: int, timeout: float
) -> tuple[list[Outcome], dict]:
    timings: dict = {}
    t0 = time.monotonic()
    built = build_all(recipes, work)
    timings["build_s"] = round(time.monotonic() - t0, 1)
    ready = [(c, o) for c, o in built.values() if o.built]
    # 1. modelgate first, on untouched files: no marker exists yet
    ran_codes = {}
    for kind in (True, False):
        paths = [c.path for c, o in ready if o.malicious is kind]
        code, reports, secs, err = run_modelgate(paths, jobs, work)
        ran_codes["malicious" if kind else "benign"] = code
        timings[f"modelgate_{'malicious' if kind else 'benign'}_s"] = round(secs, 1)
        if paths and not reports:
            raise SystemExit(f"modelgate produced no report (exit {code}):\n{err}")
        for c, o in ready:
            if o.malicious is not kind:
                continue
            rep = reports.get(os.path.normpath(c.path))
            if rep is not None:
                o.mg_passed = bool(rep.get("passed"))
                o.mg_findings = [
                    {k: f.get(k) for k in ("rule", "severity", "message")}
                    for f in rep.get("findings", [])
                ]
                o.mg_rules = sorted({f["rule"] for f in o.mg_findings})
            o.ran_under_modelgate = os.path.exists(c.marker)
    timings["modelgate_exit"] = ran_codes
    # 2. then each file under its real loader, in a fresh process each
    t1 = time.monotonic()
    by_name = {r.name: r for r in recipes}

    def one(item: tuple[corpus.Ctx, Outcome]) -> None:
        ctx, o = item
        if os.path.exists(ctx.marker):
            os.remove(ctx.marker)  # counted above as run by modelgate
        p = corpus.prove(by_name[o.name], ctx, timeout=timeout, env=_env())
        o.proof = asdict(p)

    def benign(items: list[tuple[corpus.Ctx, Outcome]]) -> None:
        # benign files run nothing: one child loads them all; a failure is retried alone
        batch = [(by_name[o.name], c) for c, o in items]
        proofs = corpus.prove_benign_batch(batch, timeout=timeout * 4, env=_env())
        for c, o in items:
            p = proofs[o.name]
            if not p.ran:
                p = corpus.prove(by_name[o.name], c, timeout=timeout, env=_env())
            o.proof = asdict(p)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        waits = [pool.submit(benign, [(c, o) for c, o in ready if not o.malicious])]
        waits += [pool.submit(one, (c, o)) for c, o in ready if o.malicious]
        for w in waits:
            w.result()
    timings["loaders_s"] = round(time.monotonic() - t1, 1)
    outcomes = [o for _, o in built.values()]
    for o in outcomes:
        classify(o)
    return outcomes, timings


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(outcomes: list[Outcome], timings: dict) -> str:
    out: list[str] = []
    mal = [o for o in outcomes if o.malicious]
    ben = [o for o in outcomes if not o.malicious]
    fams: dict[str, Counter] = defaultdict(Counter)
    for o in mal:
        fams[o.family][o.verdict] += 1
    cols = ["caught", "mg902-only", "missed", "not-run", "skipped", "build-failed"]
    rows = [["family", "files", *cols]]
    total: Counter = Counter()
    for fam in sorted(fams):
        c = fams[fam]
        total.update(c)
        rows.append([fam, str(sum(c.values())), *(str(c[k]) for k in cols)])
    rows.append(["TOTAL", str(sum(total.values())), *(str(total[k]) for k in cols)])
    out.append("Malicious files (caught = MG901/MG903; scored only where the payload ran)")
    out.append(_table(rows))
    scored = total["caught"] + total["mg902-only"] + total["missed"]
    out.append(
        f"\nscored {scored}: caught {total['caught']}, MG902-only {total['mg902-only']}, "
        f"missed {total['missed']}; payload not run {total['not-run']}"
    )
    ran = [o for o in outcomes if o.ran_under_modelgate]
    out.append(
        f"payloads run by modelgate: {len(ran)}" + ("".join(f"\n  !! {o.name}" for o in ran))
    )
    for verdict, title in (
        ("missed", "MISSED"),
        ("mg902-only", "MG902 ONLY"),
        ("not-run", "PAYLOAD NOT RUN under the real loader (excluded)"),
        ("build-failed", "RECIPE FAILED TO BUILD"),
        ("skipped", "SKIPPED"),
    ):
        items = [o for o in mal if o.verdict == verdict]
        if not items:
            continue
        out.append(f"\n{title}:")
        for o in items:
            out.append(f"  {o.family}/{o.name} [{corpus.LOADER_CALLS[o.loader]}]")
            if verdict in ("missed", "mg902-only"):
                found = (
                    "; ".join(f"{f['rule']} {f['severity']}: {f['message']}" for f in o.mg_findings)
                    or "no finding"
                )
                out.append(
                    f"      modelgate {'passed' if o.mg_passed else 'failed'}: {found[:300]}"
                )
            elif verdict == "not-run":
                out.append(f"      loader: {o.proof['detail'] if o.proof else ''}")
            elif verdict == "build-failed":
                out.append(f"      {o.build_error}")
            else:
                out.append(f"      {o.skipped}")
    bc = Counter(o.verdict for o in ben)
    out.append(
        f"\nBenign files: {len(ben)}: ok {bc['ok']}, false alarms {bc['false-alarm']}, "
        f"not loadable {bc['load-failed']}, skipped {bc['skipped']}, "
        f"build failed {bc['build-failed']}"
    )
    for o in ben:
        if o.verdict == "ok":
            continue
        out.append(f"  {o.verdict}: {o.name} [{corpus.LOADER_CALLS[o.loader]}]")
        if o.verdict == "false-alarm":
            for f in o.mg_findings:
                out.append(f"      {f['rule']} {f['severity']}: {f['message'][:240]}")
        elif o.verdict == "load-failed":
            out.append(f"      loader: {o.proof['detail'] if o.proof else ''}")
        else:
            out.append(f"      {o.skipped or o.build_error}")
    out.append(f"\nTimings: {json.dumps(timings)}")
    return "\n".join(out)


def gate(outcomes: list[Outcome]) -> bool:
    bad = {"missed", "mg902-only", "false-alarm", "load-failed"}
    broken = [o for o in outcomes if not o.malicious and o.verdict == "build-failed"]
    return not broken and not any(o.verdict in bad or o.ran_under_modelgate for o in outcomes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="OUT", help="write every file's result here")
    ap.add_argument("--keep", metavar="DIR", help="build into DIR and keep it")
    ap.add_argument(
        "--only",
        metavar="SUBSTR",
        action="append",
        help="only recipes whose name contains this (repeatable)",
    )
    ap.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=os.cpu_count() or 2,
        help="modelgate's -j (default: CPU count)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=max(2, os.cpu_count() or 2),
        help="loader child processes at once",
    )
    ap.add_argument("--timeout", type=float, default=120, help="seconds per loader child")
    ap.add_argument("--text", metavar="FILE", help="also write the printed report here")
    args = ap.parse_args(argv)
    recipes = corpus.all_recipes()
    if args.only:
        recipes = [r for r in recipes if any(part in r.name for part in args.only)]
    started = time.monotonic()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_pickles_"))
    try:
        outcomes, timings = evaluate(recipes, work.resolve(), args.jobs, args.workers, args.timeout)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    timings["total_s"] = round(time.monotonic() - started, 1)
    text = render(outcomes, timings)
    print(text)
    if args.text:
        Path(args.text).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"timings": timings, "files": [asdict(o) for o in outcomes]}, indent=2)
        )
    return 0 if gate(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
