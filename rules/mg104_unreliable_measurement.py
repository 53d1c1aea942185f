"""A measurement that cannot be trusted, said instead of reported as a number.

## What it does
Flags figures of the conversion and compression checks that would mislead:
- the original model's output is near-constant, ~0, not finite, or below FP16's normal
  range on the synthetic inputs: a relative error then measures noise around a constant,
  so no drift is reported (`drift: null`) and the budget cannot judge it;
- compressed weights that could not be mapped back onto the torch model, so their error is
  missing from the drift;
- a latency whose 90th percentile is far above its median: the machine was busy.
- an ONNX file that ONNX Runtime loads but that could not be run on synthetic inputs: no
  value can be made for an input (a sparse tensor, a float8 or 4-bit tensor numpy cannot
  hold, a tensor of unknown rank), or the run failed on every set of values made (integer
  inputs random in [0, 10), then all ones, then all zeros: they are often indices, axes or
  divisors). The session check passed; the run and its latency were not measured.

## Why is this bad?
A gate that reports 0.0001 drift for a model that answers every input with the same vector
(common with random weights) passes a compression that may destroy the trained model. A
latency measured while another job ran fails a budget at random.

## Example
```text
drift 1.2e-05   # the original outputs 1e-41 for every input: the number means nothing
```

## Use instead
Check the trained model (real weights give input-dependent outputs), give realistic input
shapes (`inputs:` / `--input-shape`), and time on a quiet machine (`measure.runs`, `-j 1`).

## Options
`max_p90_ratio` (float, default 1.5): the latency's p90 / median above which it is noisy
(when the two are also at least 0.5 ms apart).

## References
- coremltools, compression and accuracy, https://apple.github.io/coremltools/docs-guides/source/opt-overview.html
"""

from __future__ import annotations

from collections.abc import Iterator

from modelgate.finding import Location, Problem
from modelgate.graph import ModelGraph
from modelgate.results import ChecksResult
from modelgate.rule import Note, Option, Skip
from modelgate.target import Target
from modelgate.targets import REGISTRY as TARGETS

ID = "MG104"
NAME = "unreliable-measurement"
SEVERITY = "warning"
NEEDS = "checks"
OPTIONS = {
    "max_p90_ratio": Option(
        float, 1.5, "latency p90 / median above which it is noisy", minimum=1.0
    ),
}


def _drifts(checks: ChecksResult) -> Iterator[tuple[str, dict]]:
    for target in TARGETS:
        result = checks.of(target.name)
        if isinstance(result, dict) and isinstance(result.get("drift"), dict):
            yield target.drift_label, result["drift"]
    for preset, result in (checks.compress or {}).items():
        if isinstance(result, dict) and isinstance(result.get("drift"), dict):
            yield preset, result["drift"]


def check(graph: ModelGraph, options: dict) -> Iterator[Problem | Note | Skip]:
    checks = graph.checks or ChecksResult()
    if checks.skipped:
        yield Skip(f"nothing was measured: {checks.skipped}")
        return
    where = Location(graph.path)
    reference = checks.reference or {}
    if reference.get("degenerate"):
        yield Problem(
            f"drift is not reported: {reference['degenerate']}, so a relative error would "
            "measure noise around a constant",
            where,
            fix="check the trained model, or give realistic input shapes (--input-shape)",
            key="degenerate-output",
        )
    if reference.get("weak") and not reference.get("degenerate"):
        yield Note(reference["weak"])
    if reference.get("top1_classes") == 1:
        yield Note(
            "every synthetic input gets the same top-1 class from the original model, "
            "so top-1 agreement is all or nothing"
        )
    for label, drift in _drifts(checks):
        unmapped = drift.get("unmapped") or []
        if unmapped:
            total = drift.get("weights_compressed") or len(unmapped)
            yield Problem(
                f"{label}: {len(unmapped)} of {total} compressed weights could not be mapped "
                f"back onto the torch model, so their error is missing from the drift: "
                f"{', '.join(unmapped[:5])}",
                where,
                fix="the drift is a lower bound; the weight error (drift_detail.weight_error) "
                "covers every compressed weight",
                key=f"unmapped:{label}",
            )
    for target in TARGETS:
        run = (checks.of(target.name) or {}).get("run")
        if isinstance(run, dict) and run.get("ok") is not True and run.get("error"):
            yield _unrun(graph, target, run)
    latency = checks.latency or {}
    median, p90 = latency.get("median_ms"), latency.get("p90_ms")
    noisy = (
        median and p90 and p90 / median > options["max_p90_ratio"] and p90 - median >= _JITTER_MS
    )
    if noisy:
        yield Problem(
            f"latency is noisy: p90 {p90:.3g} ms is {p90 / median:.1f}x the median "
            f"{median:.3g} ms (the machine was busy while timing)",
            where,
            fix="time on a quiet machine: fewer parallel jobs (-j 1), more runs (measure.runs)",
            key="noisy-latency",
        )


# p90 - median below this is sub-millisecond jitter, not a busy machine (as measure.NOISY_MS)
_JITTER_MS = 0.5


def _unrun(graph: ModelGraph, target: Target, run: dict) -> Problem:
    """A file its target's runtime loads (the session check passed) but could not run, or
    a program whose runtime is not on this machine (``elsewhere``: how to measure it)."""
    if run.get("elsewhere"):
        return Problem(
            f"{target.label}: the converted program was not run here: {run['error']}; its "
            "drift and latency are not measured",
            Location(graph.path), fix=run["elsewhere"], key=f"{target.name}-run",
        )  # fmt: skip
    loads = f"{target.runtime} loads {target.file_formats.get(graph.format, 'the model')}"
    if run.get("ok") is None:
        message = (
            f"{loads}, but it was not run: no synthetic value for {run['error']}; "
            "give sample inputs"
        )
    else:
        message = (
            f"{loads}, but running it on synthetic inputs failed: {run['error']}; "
            "give sample inputs the model accepts"
        )
    fix = (
        "give the input shapes the model expects (--input-shape NAME=1x3x224x224 or inputs: "
        "in the config); the session check itself passed"
    )
    if run.get("ok") is None and "rank" not in str(run["error"]):
        fix = "modelgate cannot feed this input type yet; the session check itself passed"
    return Problem(message, Location(graph.path), fix=fix, key=f"{target.name}-run")
