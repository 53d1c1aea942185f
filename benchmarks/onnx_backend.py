"""The static ONNX verdict against ONNX Runtime, on every model of ONNX's backend test suite.

    python benchmarks/onnx_backend.py [--jobs 2] [--convert] [--limit N] [--cache DIR]

Takes ``onnx/backend/test/data/**`` (node, light, real, simple, pytorch-converted,
pytorch-operator) from the onnx 1.21.0 wheel, which still ships the ``node/`` suite
(``pip download --no-deps onnx==1.21.0`` into the cache folder, extracted once; the test
data sets are left in the wheel). For each model it compares the static
``modelgate check --static --target onnx`` verdict (error-level findings) with whether
``onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])`` loads it. ONNX
Runtime loads run in child processes, a chunk of models each (a crash costs only its chunk,
whose models are then retried one by one); their results are cached per ONNX Runtime
version. Models that fail only for a missing system locale are left out.

Prints the confusion counts and lists the models of the two wrong cells. Goal: at least 90%
of the models ONNX Runtime cannot load are flagged, and no error-level finding on a model it
loads. With ``--convert``, also runs ``modelgate check --convert onnx`` on the models ONNX
Runtime loads and counts those with an error-level finding (false alarms: MG102 etc.).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

# a benchmark times the work: the result cache (on by default) would answer repeat runs
os.environ.setdefault("MODELGATE_NO_CACHE", "1")

ROOT = Path(__file__).resolve().parent.parent
WHEEL_VERSION = "1.21.0"
DEFAULT_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    / "modelgate-bench"
    / "onnx_backend"
)
_PREFIX = "onnx/backend/test/data/"
# Errors that say the machine lacks a locale, not that the model is wrong.
_LOCALE = ("locale", "Locale")

_ORT_CHILD = r"""
import json, sys
import onnxruntime as ort
ort.set_default_logger_severity(4)
for path in sys.argv[1:]:
    try:
        ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        result = {"path": path, "ok": True, "error": ""}
    except Exception as exc:
        result = {"path": path, "ok": False, "error": str(exc)[:400]}
    print(json.dumps(result), flush=True)
"""


def prepare(cache: Path) -> Path:
    """The extracted test data folder, downloading and extracting the wheel if needed."""
    data = cache / f"onnx-{WHEEL_VERSION}" / "data"
    done = data / ".complete"
    if done.exists():
        return data
    wheels = cache / "wheels"
    found = sorted(wheels.glob(f"onnx-{WHEEL_VERSION}-*.whl")) if wheels.exists() else []
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q",
             f"onnx=={WHEEL_VERSION}", "-d", str(wheels)],
            check=True,
        )  # fmt: skip
        found = sorted(wheels.glob(f"onnx-{WHEEL_VERSION}-*.whl"))
    with zipfile.ZipFile(found[0]) as zf:
        for name in zf.namelist():
            if not name.startswith(_PREFIX) or name.endswith("/") or "/test_data_set_" in name:
                continue
            target = data / name[len(_PREFIX) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
    done.write_text("")
    return data


def ort_results(models: list[Path], cache: Path, jobs: int, chunk: int = 80) -> dict[str, dict]:
    """Whether ONNX Runtime's CPU session loads each model, cached per ORT version."""
    import onnxruntime

    store = cache / f"ort-{onnxruntime.__version__}.json"
    known: dict[str, dict] = json.loads(store.read_text()) if store.exists() else {}
    todo = [str(m) for m in models if str(m) not in known]
    chunks = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]
    running: list[tuple[subprocess.Popen, list[str]]] = []
    while chunks or running:
        while chunks and len(running) < jobs:
            paths = chunks.pop()
            proc = subprocess.Popen(
                [sys.executable, "-c", _ORT_CHILD, *paths],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            running.append((proc, paths))
        proc, paths = running.pop(0)
        out, _ = proc.communicate()
        got = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        for result in got:
            known[result["path"]] = result
        missing = [p for p in paths if p not in known]
        if missing and len(paths) == 1:  # this model crashed the runtime
            known[paths[0]] = {"path": paths[0], "ok": False, "error": f"crash ({proc.returncode})"}
        elif missing:
            chunks.extend([p] for p in missing)
    store.write_text(json.dumps(known, indent=0, sort_keys=True))
    return known


def static_results(models: list[Path], jobs: int, convert: bool = False) -> dict[str, list]:
    """Error-level findings of modelgate on each model: (rule, location, message)."""
    from modelgate import config as config_mod
    from modelgate import driver

    doc: dict = {"targets": ["onnx"]}
    if convert:
        doc["convert"] = ["onnx"]
    config = config_mod.from_dict(doc)
    report = driver.run([str(m) for m in models], config, jobs=jobs)
    out: dict[str, list] = {}
    for model, path in zip(report.models, models, strict=True):
        out[str(path)] = [
            (f.rule, f.location.describe(), f.message)
            for f in model.findings
            if f.severity == "error"
        ]
    return out


_LOAD_RULES = {"MG003", "MG902"}  # what the static check predicts about loading the file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--limit", type=int, default=0, help="first N models only")
    parser.add_argument("--filter", default="", help="only models whose path holds this")
    parser.add_argument("--convert", action="store_true", help="also --convert onnx on loads")
    parser.add_argument("--verbose", action="store_true", help="list every missed model")
    args = parser.parse_args(argv)
    data = prepare(args.cache)
    started = time.monotonic()
    models = sorted(p for p in data.rglob("*.onnx") if args.filter in str(p))
    if args.limit:
        models = models[: args.limit]
    ort = ort_results(models, args.cache, args.jobs)
    locale = [m for m in models if not ort[str(m)]["ok"] and any(
        w in ort[str(m)]["error"] for w in _LOCALE)]  # fmt: skip
    models = [m for m in models if m not in locale]
    t_ort = time.monotonic() - started
    static = static_results(models, args.jobs)
    t_static = time.monotonic() - started - t_ort
    cells: dict[str, list[Path]] = {"caught": [], "missed": [], "false_alarm": [], "clean": []}
    for m in models:
        rejects, flagged = not ort[str(m)]["ok"], bool(static[str(m)])
        cell = ("caught" if flagged else "missed") if rejects else (
            "false_alarm" if flagged else "clean")  # fmt: skip
        cells[cell].append(m)
    rel = {m: str(m.relative_to(data)) for m in models}
    rejected = len(cells["caught"]) + len(cells["missed"])
    print(f"{len(models)} models ({len(locale)} left out: missing system locale), "
          f"onnx {WHEEL_VERSION} backend test data")  # fmt: skip
    print(f"  ORT rejects & flagged (error): {len(cells['caught'])}")
    print(f"  ORT rejects & not flagged:     {len(cells['missed'])}")
    print(f"  ORT loads & error-flagged:     {len(cells['false_alarm'])}")
    print(f"  ORT loads & clean:             {len(cells['clean'])}")
    share = len(cells["caught"]) / rejected if rejected else 1.0
    # the rules that predict whether a runtime loads the file; others (MG004: BatchNormalization
    # with training_mode=1 computes batch statistics at inference) find true deployment bugs
    # in files ORT loads and runs anyway, and are listed, not counted as wrong predictions
    wrong = [m for m in cells["false_alarm"] if any(f[0] in _LOAD_RULES for f in static[str(m)])]
    print(f"  flagged {share:.1%} of the models ORT rejects (goal >= 90%); of the models it "
          f"loads, {len(wrong)} with an error from the load checks {sorted(_LOAD_RULES)} "
          f"(goal 0), {len(cells['false_alarm']) - len(wrong)} with another error-level "
          "finding (listed below)")  # fmt: skip
    rules = Counter(
        f[0] for m in cells["caught"] for f in {x[0]: x for x in static[str(m)]}.values()
    )
    print(f"  rules on caught models: {dict(sorted(rules.items()))}")
    for m in cells["false_alarm"]:
        label = "FALSE ALARM" if m in wrong else "error on a model ORT loads"
        print(f"  {label} {rel[m]}: {static[str(m)][0]}")
    if args.verbose:
        for m in cells["caught"]:
            print(f"  caught {rel[m]}: {static[str(m)][0][2][:150]}")
    for m in cells["missed"][: None if args.verbose else 15]:
        print(f"  missed {rel[m]}: ORT says {ort[str(m)]['error'][:200]}")
    print(f"  time: ORT {t_ort:.1f} s, static {t_static:.1f} s ({args.jobs} jobs)")
    if args.convert:
        t0 = time.monotonic()
        loads = cells["false_alarm"] + cells["clean"]
        converted = static_results(loads, args.jobs, convert=True)
        alarms = [m for m in loads if converted[str(m)]]
        by_rule = Counter(
            f[0] for m in alarms for f in {x[0]: x for x in converted[str(m)]}.values()
        )
        counts = dict(sorted(by_rule.items()))
        print(f"--convert onnx on the {len(loads)} models ORT loads: "
              f"{len(alarms)} with an error-level finding {counts}")  # fmt: skip
        for m in alarms[: None if args.verbose else 25]:
            print(f"  CONVERT ALARM {rel[m]}: {converted[str(m)][0]}")
        print(f"  time: {time.monotonic() - t0:.1f} s")
    return 0 if share >= 0.9 and not wrong else 1


if __name__ == "__main__":
    raise SystemExit(main())
