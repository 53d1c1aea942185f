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

With ``--peers BIN`` (the ``bin`` folder of a separate venv holding picklescan, modelscan and
fickling; never a project dependency) each built file is also given to each peer, after
modelgate and before any loader, in a child process per file and tool with a timeout:

- picklescan: ``picklescan --path FILE``; caught when it reports a dangerous global (its exit
  1; "suspicious" globals alone exit 0 and are a miss), error on exit 2 with none;
- modelscan: ``modelscan scan -p FILE -r json -o OUT`` in an empty folder (its defaults);
  caught when the report lists an issue of any severity, error when it lists only errors;
- fickling: ``fickling.scan_zip_archive`` for a zip, else ``fickling.scan_file`` (what
  ``fickling --check-safety`` reads; the CLI cannot open a zip); caught when an analysis
  is above ``LIKELY_SAFE``, error when only a parse or analysis error was reported.

A benign file a peer calls unsafe is its false alarm. Peers never change the exit status.
The peers' venv, as scored (fickling 0.1.12 imports typing_extensions without requiring it;
py7zr is picklescan's and fickling's documented extra for 7z; modelscan 0.8.8's numpy
scanner calls ``numpy.lib.format._check_version``, gone in numpy 2.3; no torch needed):

    python3 -m venv /tmp/peers
    /tmp/peers/bin/pip install picklescan==1.0.5 modelscan==0.8.8 fickling==0.1.12
    /tmp/peers/bin/pip install typing-extensions py7zr "numpy<2.3"
    .venv/bin/python benchmarks/bench_pickles.py --peers /tmp/peers/bin

Exit status: 0 when nothing is missed, no benign file fails and no payload ran under
modelgate; 1 otherwise; 2 when the corpus cannot be built or modelgate cannot be run.
Everything is generated into a temporary folder; nothing binary is committed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable
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
    peers: dict[str, dict] = field(default_factory=dict)  # tool -> PeerResult as a dict
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


# ------------------------------------------------------------------------------------------
# Peers: picklescan, modelscan and fickling, run from their own venv on the same files

PEERS = {"picklescan": "1.0.5", "modelscan": "0.8.8", "fickling": "0.1.12"}  # the versions scored

# fickling's CLI reads its argument as a stream of pickles; for a zip it offers only the
# library: this is the split its own Hugging Face scan makes (fickling/cli.py), minus the
# torch-only file-type probe
FICKLING_DRIVER = """
import json, sys, zipfile
import fickling
from fickling.analysis import Severity
path = sys.argv[1]
if zipfile.is_zipfile(path):
    results = list(fickling.scan_zip_archive(path, graceful=True).values())
else:
    results = [fickling.scan_file(path, graceful=True)]
worst = max([a.severity for r in results for a in r.results], default=Severity.LIKELY_SAFE)
notes = [str(a) for r in results for a in r.results if a.severity > Severity.LIKELY_SAFE]
print(json.dumps({
    "unsafe": worst > Severity.LIKELY_SAFE,
    "severity": worst.name,
    "members": len(results),
    "analysis": notes[:2],
    "errors": [e for r in results for e in r.errors][:3],
}))
"""

VERSIONS_DRIVER = """
import importlib.metadata as m, json
out = {}
for name in ("picklescan", "modelscan", "fickling"):
    try:
        out[name] = m.version(name)
    except m.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
"""


@dataclass
class PeerResult:
    verdict: str  # unsafe / clean / error
    detail: str = ""
    seconds: float = 0.0


def _peer_env() -> dict[str, str]:
    env = _env()
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(name, None)
    return env


def peer_tools(bindir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The peers found in ``bindir``: tool -> version, and tool -> why it is skipped."""
    python = bindir / "python"
    if not python.exists():
        return {}, {t: f"no {python}" for t in PEERS}
    done = subprocess.run(
        [str(python), "-c", VERSIONS_DRIVER],
        capture_output=True,
        text=True,
        env=_peer_env(),
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    try:
        versions = json.loads(done.stdout)
    except ValueError:
        return {}, {t: f"{python} failed: {done.stderr[-300:]}" for t in PEERS}
    found, skipped = {}, {}
    for tool in PEERS:
        exe = bindir / ("python" if tool == "fickling" else tool)
        if not versions.get(tool) or not exe.exists():
            skipped[tool] = f"not installed in {bindir}"
        else:
            found[tool] = versions[tool]
    return found, skipped


def _run_peer(
    cmd: list[str], cwd: Path, timeout: float
) -> tuple[subprocess.CompletedProcess | None, float]:
    started = time.monotonic()
    try:
        done = subprocess.run(
            cmd,
            cwd=cwd,
            env=_peer_env(),
            capture_output=True,
            text=True,
            errors="replace",
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - started
    return done, time.monotonic() - started


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _join(parts: Iterable[str]) -> str:
    """Distinct messages, in order, cut to one line's worth."""
    return "; ".join(dict.fromkeys(p for p in parts if p))[:200]


def scan_picklescan(bindir: Path, path: str, cwd: Path, timeout: float) -> PeerResult:
    done, secs = _run_peer([str(bindir / "picklescan"), "--path", path], cwd, timeout)
    if done is None:
        return PeerResult("error", f"timed out after {timeout:g} s", secs)
    counts = dict(re.findall(r"^(Dangerous|Suspicious) globals: (\d+)", done.stdout, re.M))
    found = [ln.split(": ", 1)[-1] for ln in done.stdout.splitlines() if ln.endswith(" FOUND")]
    if int(counts.get("Dangerous", 0)) > 0:  # exit 1, or 2 when it also hit an error
        return PeerResult("unsafe", _join(found), secs)
    if done.returncode != 0 or "Dangerous" not in counts:
        said = [ln for ln in done.stdout.splitlines() if ln.startswith("ERROR")]
        why = (said[0] if said else _last_line(done.stdout + done.stderr)).replace(
            path, os.path.basename(path)
        )
        return PeerResult("error", f"exit {done.returncode}: {why}"[:200], secs)
    scanned = re.search(r"^Scanned files: (\d+)", done.stdout, re.M)
    if scanned and scanned.group(1) == "0":
        return PeerResult("clean", "not scanned: no file it reads", secs)
    note = (
        f"{counts['Suspicious']} suspicious global(s)" if int(counts.get("Suspicious", 0)) else ""
    )
    return PeerResult("clean", note, secs)


def scan_modelscan(bindir: Path, path: str, cwd: Path, timeout: float) -> PeerResult:
    report = cwd / f"modelscan-{time.monotonic_ns()}.json"
    cmd = [str(bindir / "modelscan"), "scan", "-p", path, "-r", "json", "-o", str(report)]
    done, secs = _run_peer(cmd, cwd, timeout)
    if done is None:
        return PeerResult("error", f"timed out after {timeout:g} s", secs)
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return PeerResult(
            "error", f"exit {done.returncode}: {_last_line(done.stdout + done.stderr)}", secs
        )
    finally:
        report.unlink(missing_ok=True)
    issues, errors = data.get("issues") or [], data.get("errors") or []
    if issues:
        return PeerResult("unsafe", _join(i.get("description", "") for i in issues), secs)
    if errors:
        said = (f"{e.get('category', '')}: {e.get('description', '')}" for e in errors)
        return PeerResult("error", _join(said), secs)
    scanned = (data.get("summary") or {}).get("scanned") or {}
    note = "" if scanned.get("total_scanned") else "not scanned: no supported file"
    return PeerResult("clean", note, secs)


def scan_fickling(bindir: Path, path: str, cwd: Path, timeout: float) -> PeerResult:
    done, secs = _run_peer([str(bindir / "python"), "-c", FICKLING_DRIVER, path], cwd, timeout)
    if done is None:
        return PeerResult("error", f"timed out after {timeout:g} s", secs)
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return PeerResult("error", f"exit {done.returncode}: {_last_line(done.stderr)}", secs)
    if data["unsafe"]:
        return PeerResult("unsafe", f"{data['severity']}: {' '.join(data['analysis'])}"[:200], secs)
    if data["errors"]:
        return PeerResult("error", _join(data["errors"]), secs)
    note = "" if data["members"] else "not scanned: no .pkl/.pickle/.bin member in the zip"
    return PeerResult("clean", note, secs)


SCANNERS = {"picklescan": scan_picklescan, "modelscan": scan_modelscan, "fickling": scan_fickling}


def run_peers(
    items: list[tuple[corpus.Ctx, Outcome]],
    bindir: Path,
    tools: list[str],
    work: Path,
    workers: int,
    timeout: float,
) -> None:
    """Every tool on every file, ``workers`` child processes at once; results on the outcome."""
    cwd = work / "peers"  # empty: modelscan reads ./modelscan-settings.toml, fickling writes here
    cwd.mkdir(exist_ok=True)

    def one(job: tuple[str, Outcome]) -> None:
        tool, o = job
        o.peers[tool] = asdict(SCANNERS[tool](bindir, o.path, cwd, timeout))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, [(t, o) for _, o in items for t in tools]))


PEER_VERDICTS = {
    True: {"unsafe": "caught", "clean": "missed"},
    False: {"unsafe": "false-alarm", "clean": "ok"},
}


def peer_verdict(o: Outcome, tool: str) -> str:
    r = o.peers.get(tool)
    if r is None:
        return "not-run"
    return PEER_VERDICTS[o.malicious].get(r["verdict"], "error")


def peer_summary(outcomes: list[Outcome], tools: list[str]) -> dict:
    """Per family and in total: caught / missed / error of each tool on the scored files."""
    names = ["modelgate", *tools]
    scored = [
        o for o in outcomes if o.malicious and o.verdict in ("caught", "mg902-only", "missed")
    ]
    benign = [o for o in outcomes if not o.malicious and o.verdict in ("ok", "false-alarm")]

    def verdict(o: Outcome, tool: str) -> str:
        return o.verdict if tool == "modelgate" else peer_verdict(o, tool)

    families: dict[str, dict] = {}
    for o in scored:
        fam = families.setdefault(o.family, {"files": 0, **{t: Counter() for t in names}})
        fam["files"] += 1
        for t in names:
            fam[t][verdict(o, t)] += 1
    totals = {t: Counter(verdict(o, t) for o in scored) for t in names}
    ben = {t: Counter(verdict(o, t) for o in benign) for t in names}
    errors: dict[str, Counter] = {t: Counter() for t in tools}
    for o in scored + benign:
        for t in tools:
            if peer_verdict(o, t) == "error":
                errors[t][o.peers[t]["detail"][:120]] += 1
    unscanned = {
        t: sum(
            1
            for o in scored
            if peer_verdict(o, t) == "missed" and o.peers[t]["detail"].startswith("not scanned")
        )
        for t in tools
    }
    only_mg = [
        o.name
        for o in scored
        if o.verdict == "caught" and not any(peer_verdict(o, t) == "caught" for t in tools)
    ]
    nobody = [
        o.name
        for o in scored
        if o.verdict != "caught" and not any(peer_verdict(o, t) == "caught" for t in tools)
    ]
    peer_not_mg = {
        o.name: [t for t in tools if peer_verdict(o, t) == "caught"]
        for o in scored
        if o.verdict != "caught"
    }
    return {
        "tools": names,
        "scored": len(scored),
        "benign": len(benign),
        "families": {
            f: {k: (dict(v) if isinstance(v, Counter) else v) for k, v in d.items()}
            for f, d in sorted(families.items())
        },
        "totals": {t: dict(c) for t, c in totals.items()},
        "benign_verdicts": {t: dict(c) for t, c in ben.items()},
        "blind_families": {
            t: [f for f, d in sorted(families.items()) if not d[t]["caught"]] for t in names
        },
        "missed_unscanned": unscanned,
        "errors_by_detail": {t: dict(c.most_common()) for t, c in errors.items()},
        "false_alarms": {
            t: [o.name for o in benign if verdict(o, t) == "false-alarm"] for t in names
        },
        "caught_only_by_modelgate": only_mg,
        "caught_by_nobody": nobody,
        "caught_by_a_peer_not_modelgate": {k: v for k, v in peer_not_mg.items() if v},
    }


def render_peers(summary: dict, info: dict) -> str:
    names = summary["tools"]
    out = ["", "Peers on the same files (caught = reported unsafe; a tool error is not a catch)"]
    out.append(
        "  "
        + ", ".join(f"{t} {v}" for t, v in info["versions"].items())
        + "".join(f"; {t} skipped: {why}" for t, why in info["skipped"].items())
    )
    rows = [["family", "files", *names]]
    for fam, d in summary["families"].items():
        rows.append([fam, str(d["files"]), *(_cell(d[t]) for t in names)])
    tot = summary["totals"]
    n = str(summary["scored"])
    rows.append(["TOTAL caught", n, *(str(tot[t].get("caught", 0)) for t in names)])
    rows.append(["TOTAL missed", n, *(str(tot[t].get("missed", 0)) for t in names)])
    rows.append(["TOTAL error", n, *(_dash(t, tot[t].get("error", 0)) for t in names)])
    rows.append(
        [
            "TOTAL MG902-only",
            n,
            *(str(tot[t].get("mg902-only", 0)) if t == "modelgate" else "-" for t in names),
        ]
    )
    ben = summary["benign_verdicts"]
    b = str(summary["benign"])
    rows.append(["benign false alarms", b, *(str(ben[t].get("false-alarm", 0)) for t in names)])
    rows.append(["benign errors", b, *(_dash(t, ben[t].get("error", 0)) for t in names)])
    out.append(_table(rows))
    out.append("  (a cell is caught, +N err where the tool errored on N more of the family)")
    for t, n_unscanned in summary["missed_unscanned"].items():
        if n_unscanned:
            out.append(f"{t}: {n_unscanned} of its misses it did not scan at all")
    for t in names:
        if summary["blind_families"][t]:
            out.append(f"{t} catches nothing in: {', '.join(summary['blind_families'][t])}")
    for t, errs in summary["errors_by_detail"].items():
        if errs:
            out.append(f"{t} errors:")
            out.extend(f"  {c} x {d}" for d, c in errs.items())
    for t in names:
        if summary["false_alarms"][t]:
            out.append(f"{t} false alarms: {', '.join(summary['false_alarms'][t])}")
    ran = summary.get("ran_payloads", [])
    out.append(f"payloads run by the peers: {len(ran)}" + "".join(f"\n  !! {n}" for n in ran))
    only = summary["caught_only_by_modelgate"]
    out.append(f"caught only by modelgate: {len(only)}" + (f": {', '.join(only)}" if only else ""))
    if summary["caught_by_nobody"]:
        out.append(f"caught by no tool: {', '.join(summary['caught_by_nobody'])}")
    for name, tools in summary["caught_by_a_peer_not_modelgate"].items():
        out.append(f"not caught by modelgate, caught by {', '.join(tools)}: {name}")
    return "\n".join(out)


def _cell(c: dict) -> str:
    err = c.get("error", 0)
    return str(c.get("caught", 0)) + (f" +{err} err" if err else "")


def _dash(tool: str, n: int) -> str:
    return "-" if tool == "modelgate" else str(n)


def evaluate(
    recipes: list[corpus.Recipe],
    work: Path,
    jobs: int,
    workers: int,
    timeout: float,
    peers: dict | None = None,
) -> tuple[list[Outcome], dict]:
    """Build, run modelgate, then the peers (``peers``: bindir, tools, workers, timeout), then
    each file under its loader; the outcomes are classified."""
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
    # 1b. the peers, still before any loader: a marker they leave is a payload they ran
    if peers and peers["tools"]:
        t2 = time.monotonic()
        before = {c.marker for c, _ in ready if os.path.exists(c.marker)}
        run_peers(ready, peers["bindir"], peers["tools"], work, peers["workers"], peers["timeout"])
        timings["peers_s"] = round(time.monotonic() - t2, 1)
        timings["peer_runs"] = len(ready) * len(peers["tools"])
        peers["ran_payloads"] = [
            o.name for c, o in ready if os.path.exists(c.marker) and c.marker not in before
        ]
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


def render(outcomes: list[Outcome], timings: dict, peers: str = "") -> str:
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
    if peers:
        out.append(peers)
    out.append(f"\nTimings: {json.dumps(timings)}")
    return "\n".join(out)


def gate(outcomes: list[Outcome]) -> bool:
    bad = {"missed", "mg902-only", "false-alarm", "load-failed"}
    broken = [o for o in outcomes if not o.malicious and o.verdict == "build-failed"]
    return not broken and not any(o.verdict in bad or o.ran_under_modelgate for o in outcomes)


def peer_setup(args: argparse.Namespace) -> dict:
    """The peers to run, from ``--peers``; a peer not found is skipped and said."""
    if not args.peers:
        note = "\nPeers: skipped (give --peers VENV/bin to score picklescan, modelscan, fickling)"
        return {
            "tools": [],
            "versions": {},
            "skipped": dict.fromkeys(PEERS, "no --peers"),
            "note": note,
        }
    bindir = Path(args.peers).expanduser().resolve()
    versions, skipped = peer_tools(bindir)
    for tool, want in PEERS.items():
        if tool in versions and versions[tool] != want:
            print(
                f"note: {tool} {versions[tool]} in {bindir}, the figures are for {want}",
                file=sys.stderr,
            )
    note = "".join(f"\nPeers: {t} skipped: {why}" for t, why in skipped.items())
    return {
        "tools": list(versions),
        "versions": versions,
        "skipped": skipped,
        "bindir": bindir,
        "workers": args.peer_workers,
        "timeout": args.peer_timeout,
        "note": note,
    }


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
    ap.add_argument(
        "--peers",
        metavar="BIN",
        help="bin folder of a venv with picklescan, modelscan and fickling: score them too",
    )
    ap.add_argument("--peer-timeout", type=float, default=60, help="seconds per peer call")
    ap.add_argument(
        "--peer-workers",
        type=int,
        default=os.cpu_count() or 2,
        help="peer calls at once (default: CPU count)",
    )
    args = ap.parse_args(argv)
    peers = peer_setup(args)
    recipes = corpus.all_recipes()
    if args.only:
        recipes = [r for r in recipes if any(part in r.name for part in args.only)]
    started = time.monotonic()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_pickles_"))
    try:
        outcomes, timings = evaluate(
            recipes, work.resolve(), args.jobs, args.workers, args.timeout, peers
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    timings["total_s"] = round(time.monotonic() - started, 1)
    summary = peer_summary(outcomes, peers["tools"]) if peers["tools"] else None
    if summary is not None:
        summary["ran_payloads"] = peers.get("ran_payloads", [])
    text = render(outcomes, timings, render_peers(summary, peers) if summary else peers["note"])
    print(text)
    if args.text:
        Path(args.text).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "timings": timings,
                    "peers": {
                        "versions": peers["versions"],
                        "skipped": peers["skipped"],
                        "summary": summary,
                    },
                    "files": [asdict(o) for o in outcomes],
                },
                indent=2,
            )
        )
    return 0 if gate(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
