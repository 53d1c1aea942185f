"""The numbers, without converters: drift metrics, near-constant outputs, latency noise,
MACs and peak activations from the graph view, the budget's verdicts, the text table."""

from __future__ import annotations

import time

import numpy as np
import pytest

from modelgate import budget
from modelgate.checks import graphstats, measure
from modelgate.report import ModelReport, Report
from modelgate.reporters import text


def _rows(seed: int = 0, shape: tuple[int, ...] = (8, 10)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        (np.zeros((8, 10)), "output is ~0 (rms 0.0e+00)"),
        (np.tile(_rows(1, (1, 10)), (8, 1)) + 1e-7 * _rows(2), "output is near-constant"),
        (1e-5 * _rows(3), "below FP16's normal range (rms"),
        (np.full((8, 10), np.nan), "not finite"),
        (np.full((8, 10), 1e-41), "output is ~0 (rms 1.0e-41)"),
    ],
    ids=["zeros", "constant", "fp16-tiny", "nan", "denormal"],
)
def test_degenerate_outputs_are_named(ref: np.ndarray, reason: str) -> None:
    flag, _ = measure.degenerate(ref)
    assert flag is not None and reason in flag
    assert measure.compare(ref, ref + 1e-3)["degenerate"] == flag


def test_input_dependent_outputs_are_measured_and_weak_ones_flagged() -> None:
    assert measure.degenerate(_rows())[0] is None
    weak = np.tile(_rows(1, (1, 10)), (8, 1)) + 0.01 * _rows(2)
    flag, stats = measure.degenerate(weak)
    assert flag is None and "rel_l2_centered" in stats["weak"]


def test_drift_metrics() -> None:
    ref = _rows()
    scaled = measure.compare(ref, ref * 1.01)
    assert scaled["rel_l2"] == pytest.approx(0.01, rel=1e-4)
    assert scaled["max_abs"] == pytest.approx(0.01 * np.abs(ref).max(), rel=1e-4)
    assert scaled["cosine_min"] == pytest.approx(1.0)
    assert scaled["top1_agreement"] == 1.0 and scaled["top1_classes"] > 1
    assert scaled["degenerate"] is None
    flipped = ref.copy()
    flipped[0] = -flipped[0]  # a different top-1 class for one sample in eight
    assert measure.compare(ref, flipped)["top1_agreement"] == 0.875
    assert measure.compare(ref, ref)["psnr_db"] is None  # identical: no finite PSNR
    noisy = measure.compare(ref, ref + 0.1 * _rows(5))
    assert 20 < noisy["psnr_db"] < 45
    # an image-like output is not class scores
    assert "top1_agreement" not in measure.compare(_rows(0, (8, 3, 4, 4)), _rows(1, (8, 3, 4, 4)))


def test_several_outputs_report_the_worst() -> None:
    a, b = _rows(0), _rows(1)
    result = measure.compare_outputs([a, b], [a * 1.001, b * 1.1])
    assert result["rel_l2"] == pytest.approx(0.1, rel=1e-4)
    assert result["output_index"] == 1 and len(result["outputs"]) == 2


def test_synthetic_inputs_are_seeded() -> None:
    specs = [((1, 3, 4, 4), "float32"), ((1, 5), "int64"), ((2,), "bool")]
    first = measure.synthetic_inputs(specs, 3, seed=7)
    again = measure.synthetic_inputs(specs, 3, seed=7)
    other = measure.synthetic_inputs(specs, 3, seed=8)
    assert len(first) == 3 and [a.dtype.name for a in first[0]] == ["float32", "int64", "bool"]
    pairs = zip(first, again, strict=True)
    assert all(np.array_equal(x, y) for s, t in pairs for x, y in zip(s, t, strict=True))
    assert not np.array_equal(first[0][0], other[0][0])
    assert not np.array_equal(first[0][0], first[1][0])  # samples differ from each other
    assert first[0][1].min() >= 0 and first[0][1].max() < 10


def test_an_attention_mask_is_all_ones_and_token_ids_stay_small() -> None:
    """Integers 0-9 in a mask make a transformer's additive mask overflow to inf."""
    specs = [((1, 16), "int64"), ((1, 16), "int64"), ((1, 16), "float32")]
    names = ["input_ids", "attention_mask", "mask_like_but_float"]
    (sample,) = measure.synthetic_inputs(specs, 1, seed=0, names=names)
    ids, mask, floats = sample
    assert np.array_equal(mask, np.ones((1, 16), np.int64))
    assert ids.min() >= 0 and ids.max() < 10 and len(set(ids.ravel())) > 1
    assert floats.dtype == np.float32 and len(set(floats.ravel())) > 1  # only integer masks


def test_latency_median_p90_and_noise() -> None:
    pauses = iter([0.0] * 2 + [0.002] * 8 + [0.02] * 2)
    result = measure.latency(lambda: time.sleep(next(pauses)), warmup=2, runs=10)
    assert result["runs"] == 10 and result["warmup"] == 2
    assert 2 <= result["median_ms"] < 10 and result["p90_ms"] >= 20
    assert "machine was busy" in result["noisy"]
    steady = measure.latency(lambda: None, warmup=0, runs=5)
    assert "noisy" not in steady or steady["median_ms"] < 0.01


@pytest.mark.torch
def test_macs_and_peak_activations_from_the_graph(models) -> None:
    import modelfactory

    from modelgate import loaders

    graph = loaders.load(str(models.pt2(modelfactory.build("clean").eval())))
    stats = graphstats.stats(graph)
    # conv 3->8, 3x3, on 16x16: 8*16*16 outputs x 27; linear 8->10: 80
    assert stats["macs"] == 8 * 16 * 16 * 27 + 80
    # conv output and batchnorm output (8x16x16 float32 each) alive together
    assert stats["peak_activation_mb"] == pytest.approx(2 * 8 * 16 * 16 * 4 / 1e6, abs=1e-3)
    assert stats["peak_activation_coverage"] == 1.0


def test_budget_evaluation() -> None:
    limits = budget.parse(
        {
            "size_mb": 25,
            "latency_ms": {"max": 30},
            "drift": 0.01,
            "parameters": {"max_increase_pct": 10},
            "macs": {"max": 5, "max_increase": 1},
        }
    )
    metrics = {
        "size_mb": 31.25,
        "size_from": "Core ML, palettize-4",
        "latency_ms": 12.0,
        "drift": None,
        "not_measured": {"drift": "not meaningful: near-constant"},
        "parameters": 1150,
        "macs": 4,
    }
    result = budget.evaluate(metrics, limits, {"parameters": 1000, "macs": 2})
    assert result["size_mb"] == {
        "value": 31.25,
        "rule": "MG301",
        "unit": "MB",
        "measured": "Core ML, palettize-4",
        "limit": 25,
        "difference": 6.25,
        "passed": False,
    }
    assert result["latency_ms"]["passed"] is True and result["latency_ms"]["difference"] == -18
    assert result["drift"]["passed"] is None
    assert result["drift"]["reason"] == "not meaningful: near-constant"
    assert result["parameters"]["passed"] is False and result["parameters"]["increase_pct"] == 15
    assert result["parameters"]["max_increase_pct"] == 10
    assert result["macs"]["passed"] is False and result["macs"]["increase"] == 2
    no_base = budget.evaluate(metrics, limits)
    assert no_base["parameters"]["passed"] is None
    assert "no baseline" in no_base["parameters"]["reason"]
    assert no_base["macs"]["passed"] is True and "no baseline" in no_base["macs"]["note"]


def test_text_report_shows_the_metrics_table() -> None:
    limits = budget.parse({"size_mb": 25, "drift": 0.01, "latency_ms": 30})
    metrics = {
        "size_mb": 6.66,
        "size_from": "Core ML, palettize-4",
        "file_mb": 46.8,
        "parameters": 11_689_512,
        "latency_ms": 56.0,
        "drift": 0.0168,
        "latency": {"median_ms": 56.0, "p90_ms": 62.1, "threads": 1, "runtime": "torch CPU"},
        "drift_detail": {"of": "Core ML, palettize-4"},
    }
    metrics["budget"] = budget.evaluate(metrics, limits)
    metrics["baseline"] = {
        "metrics": {"size_mb": 6.0},
        "delta": {"size_mb": 0.66},
        "delta_pct": {"size_mb": 11.0},
    }
    model = ModelReport("m.pt2", "torch_export", metrics=metrics, passed=False)
    lines = text.render(Report([model])).splitlines()
    assert lines[1:6] == [
        "  metric      value   of                                budget                  vs baseline",  # noqa: E501
        "  size_mb     6.66    Core ML, palettize-4              <= 25 ok                +0.66 (+11.0%)",  # noqa: E501
        "  parameters  11.7M",
        "  latency_ms  56      torch CPU, 1 thread(s), p90 62.1  <= 30 OVER (+26)",
        "  drift       0.0168  Core ML, palettize-4              <= 0.01 OVER (+0.0068)",
    ]
