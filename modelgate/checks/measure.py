"""The numbers: seeded synthetic inputs, output drift, near-constant outputs, latency.

numpy only, so that the same code judges torch, ONNX Runtime and decompressed Core ML
weights. Outputs are compared per output tensor over a batch of samples (one row per
synthetic input); the worst output is the model's figure.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

FP16_TINY = 6.1e-5  # the smallest normal float16: Core ML's FP16 flushes what is below it
ZERO_RMS = 1e-6  # outputs quieter than this are zero for the purpose of a relative error
CONSTANT_SPREAD = 1e-3  # spread across inputs / rms below this: the output ignores its input
WEAK_SPREAD = 0.1  # below this the relative error is mostly the constant part's
NOISY_P90 = 1.5  # p90 / median above this: the machine was busy, the latency is unreliable
NOISY_MS = 0.5  # ... and p90 - median at least this: sub-millisecond jitter is no news

_INT_HIGH = 10  # integer inputs (token ids, indices) are drawn from [0, 10)


def synthetic_inputs(
    specs: Sequence[tuple[tuple[int, ...], str]],
    samples: int,
    seed: int,
    names: Sequence[str] = (),
) -> list[list[np.ndarray]]:
    """``samples`` seeded input sets, one array per model input: standard normal floats,
    integers in [0, 10), random booleans; an integer input named like an attention mask
    (``*mask``) is all ones, as an unpadded sequence sends it (other values are not a mask)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(samples):
        one = []
        for index, (shape, dtype) in enumerate(specs):
            name = names[index] if index < len(names) else ""
            if dtype.startswith(("int", "uint")) and name.lower().endswith("mask"):
                one.append(np.ones(shape, dtype=np.dtype(dtype)))
            elif dtype.startswith(("float", "bfloat")):
                one.append(rng.standard_normal(shape).astype(np.float32))
            elif dtype == "bool":
                one.append(rng.integers(0, 2, shape).astype(bool))
            else:
                one.append(rng.integers(0, _INT_HIGH, shape).astype(np.dtype(dtype)))
        out.append(one)
    return out


def degenerate(ref: np.ndarray) -> tuple[str | None, dict[str, Any]]:
    """Why a relative error of ``ref`` (rows: samples) would mean nothing, or None.

    Random-weight models often answer every input with the same vector, or with ~0: a
    relative error then measures noise around a constant, not what compression did."""
    r = np.asarray(ref, np.float64).reshape(len(ref), -1)
    stats: dict[str, Any] = {"finite": bool(np.isfinite(r).all())}
    if not stats["finite"]:
        return "the original model's output is not finite (NaN or inf)", stats
    rms = float(np.sqrt(np.mean(r**2))) if r.size else 0.0
    spread = float(np.sqrt(np.mean(r.var(axis=0)))) if len(r) > 1 else math.nan
    stats.update(rms=rms, spread=spread, rel_spread=spread / rms if rms > 0 else 0.0)
    if rms < ZERO_RMS:
        return f"the original model's output is ~0 (rms {rms:.1e})", stats
    if len(r) > 1 and spread / rms < CONSTANT_SPREAD:
        return (
            f"the original model's output is near-constant: it barely depends on the input "
            f"(spread across inputs / rms {spread / rms:.1e}; random weights?)",
            stats,
        )
    if rms < FP16_TINY:
        return f"the original model's output is below FP16's normal range (rms {rms:.1e})", stats
    if len(r) > 1 and spread / rms < WEAK_SPREAD:
        stats["weak"] = (
            f"the output depends weakly on the input (spread / rms {spread / rms:.2g}): the "
            "relative error is dominated by its constant part; see rel_l2_centered"
        )
    return None, stats


def compare(ref: np.ndarray, out: np.ndarray) -> dict[str, Any]:
    """Drift of ``out`` against ``ref`` (rows: samples): relative L2, max abs, cosine, PSNR,
    top-1 agreement for class-score-like outputs; ``degenerate`` says when not to trust it."""
    r = np.asarray(ref, np.float64).reshape(len(ref), -1)
    o = np.asarray(out, np.float64).reshape(len(out), -1)
    d = o - r
    rc, oc = r - r.mean(0), o - o.mean(0)
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1)
    cos = (r * o).sum(1) / np.maximum(norms, 1e-30)
    mse = float(np.mean(d**2))
    peak = float(r.max() - r.min()) if r.size else 0.0
    if mse == 0:
        psnr: float | None = None  # identical: infinite, which JSON cannot hold
    else:
        psnr = 10 * math.log10(peak**2 / mse) if peak > 0 else None
    metrics: dict[str, Any] = {
        "rel_l2": _f(np.linalg.norm(d) / max(float(np.linalg.norm(r)), 1e-30)),
        "rel_l2_centered": _f(np.linalg.norm(oc - rc) / max(float(np.linalg.norm(rc)), 1e-30)),
        "max_abs": _f(np.abs(d).max()) if d.size else 0.0,
        "cosine_min": _f(cos.min()) if cos.size else None,
        "cosine_mean": _f(cos.mean()) if cos.size else None,
        "psnr_db": _f(psnr) if psnr is not None else None,
    }
    if class_scores(ref):
        ref_top = r.argmax(1)
        metrics["top1_agreement"] = _f((ref_top == o.argmax(1)).mean())
        metrics["top1_classes"] = top1_classes(ref)  # 1: agreement is all or nothing
    flag, stats = degenerate(r)
    metrics["degenerate"] = flag
    if stats.get("weak"):
        metrics["weak"] = stats["weak"]
    return metrics


def class_scores(ref: np.ndarray) -> bool:
    """Outputs that look like class scores: one vector of more than one score per sample."""
    shape = np.asarray(ref).shape
    return len(shape) >= 2 and shape[-1] > 1 and math.prod(shape[1:-1]) == 1


def top1_classes(ref: np.ndarray) -> int | None:
    """How many different top-1 classes the samples get (None: not class scores)."""
    if not class_scores(ref):
        return None
    return len(np.unique(np.asarray(ref).reshape(len(ref), -1).argmax(1)))


def compare_outputs(refs: list[np.ndarray], outs: list[np.ndarray]) -> dict[str, Any]:
    """:func:`compare` for each output tensor; the worst (largest rel_l2) speaks for the
    model, and ``outputs`` lists every one when there are several."""
    if len(refs) != len(outs):
        raise ValueError(f"{len(outs)} outputs to compare with {len(refs)}")
    each = [compare(r, o) for r, o in zip(refs, outs, strict=True)]
    if not each:
        raise ValueError("the model has no tensor outputs")
    usable = [m for m in each if not m["degenerate"]]
    worst = max(usable or each, key=lambda m: m["rel_l2"])
    result = dict(worst)
    if len(each) > 1:
        result["outputs"] = each
        result["output_index"] = each.index(worst)
        if usable and len(usable) < len(each):
            result["degenerate"] = None  # judged on the outputs that mean something
    return result


def latency(call: Callable[[], Any], warmup: int, runs: int) -> dict[str, Any]:
    """Median, p90 and min of ``runs`` timed calls after ``warmup`` untimed ones, in ms."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - start) / 1e6)
    times.sort()
    median = statistics.median(times)
    p90 = times[min(len(times) - 1, math.ceil(0.9 * len(times)) - 1)]
    out = {
        "median_ms": round(median, 3),
        "p90_ms": round(p90, 3),
        "min_ms": round(times[0], 3),
        "runs": runs,
        "warmup": warmup,
    }
    if median > 0 and p90 / median > NOISY_P90 and p90 - median >= NOISY_MS:
        out["noisy"] = (
            f"p90 is {p90 / median:.1f}x the median: the machine was busy while measuring"
        )
    return out


def _f(value: Any) -> float:
    return float(f"{float(value):.6g}")


def stack(rows: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Per-sample output lists -> one array per output, samples along the first axis."""
    if not rows:
        return []
    return [np.stack([np.asarray(row[i]) for row in rows]) for i in range(len(rows[0]))]
