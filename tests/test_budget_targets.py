"""The budget on each deployment target's own figures (``budget.targets``): the evaluation on
metrics built in memory, the findings it makes, the config's form, and what it converts."""

from __future__ import annotations

from typing import Any

import pytest

from modelgate import budget
from modelgate import config as cfg
from modelgate.checks import plan
from modelgate.options import Options
from modelgate.options import apply as apply_options
from modelgate.report import ModelReport
from modelgate.targets import REGISTRY as TARGETS

NO_BASELINE = "no baseline to compare with (--baseline OLD; in the Action: a new model)"
GROWTH_NOT_JUDGED = (
    "growth limits not judged: no baseline (--baseline OLD; in the Action: a new model)"
)
STATE_DICT = (
    "a state dict holds weights only, no architecture to convert or run: add a build recipe "
    "(models: in modelgate.yaml) or save the model with torch.export.save (.pt2) or "
    "torch.jit.save"
)
XNNPACK = "ExecuTorch 1.5.1 CPU (XNNPACK)"
# what a target's drift and latency are of, as its module declares them
ET_DRIFT = TARGETS.get("executorch").drift_of
LITERT_DRIFT = TARGETS.get("litert").drift_of
COREML_DRIFT = TARGETS.get("coreml").drift_of
ET_RUNTIME = TARGETS.get("executorch").runtime
LITERT_RUNTIME = TARGETS.get("litert").runtime


def _row(target: str, result: str = "ok", detail: str = "", **figures: Any) -> dict[str, Any]:
    """A row of the target matrix, as modelgate.checks.figures writes it."""
    row = {"target": target, "result": result, "size_mb": None, "latency_ms": None}
    return {**row, "drift": None, **figures, "detail": detail}


def _metrics(conversions: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> dict:
    return {"size_mb": 0.005, "size_from": "file", "conversions": conversions, "targets": rows}


CONVERTED = _metrics(
    {
        "executorch": {"ok": True, "size_mb": 0.03, "latency_ms": 25.3, "drift": 3.0e-07},
        "coreml": {"ok": True, "size_mb": 0.004, "drift": 0.0003},
        "litert": {"ok": True, "size_mb": 0.026, "latency_ms": 0.237, "drift": 3.0e-07},
        "ort-mobile": {"ok": True, "eps": {}},
    },
    [
        _row("coreml", size_mb=0.004, drift=0.0003),
        _row("executorch", size_mb=0.03, latency_ms=25.3, drift=3.0e-07),
        _row("litert", size_mb=0.026, latency_ms=0.237, drift=3.0e-07),
        _row("ort-mobile", detail="NNAPI 5/5"),
    ],
)
FAILED = _metrics(
    {
        "executorch": {"ok": False, "error": "boom at aten::sort", "stage": "lowering"},
        "litert": {"ok": None, "skipped": "ai_edge_litert is not installed: pip install it"},
        "onnx": {"ok": False, "missing_kernels": ["Sort"], "size_mb": 0.002},
        "coreml": {"ok": True, "size_mb": 0.004, "drift": None},
    },
    [
        _row("coreml", size_mb=0.004),
        _row("onnx", "will not load", "needs Sort", size_mb=0.002),
        _row("executorch", "failed", "boom at aten::sort"),
        _row("litert", "not run", "ai_edge_litert is not installed: pip install it"),
    ],
)
TIMED_BADLY = _metrics(
    {"onnx": {"ok": True, "size_mb": 0.002, "run": {"ok": False, "error": "bad input"}}},
    [_row("onnx", size_mb=0.002)],
)


def _entry(value: Any, rule: str, unit: str, measured: str, **fields: Any) -> dict[str, Any]:
    return {"value": value, "rule": rule, "unit": unit, "measured": measured, **fields}


EVALUATIONS = [
    pytest.param(
        CONVERTED,
        {"executorch": {"latency_ms": 20}},
        None,
        _entry(25.3, "MG302", "ms", ET_RUNTIME, limit=20, difference=5.3, passed=False),
        id="over",
    ),
    pytest.param(
        CONVERTED,
        {"executorch": {"size_mb": 10}},
        None,
        _entry(0.03, "MG301", "MB", "ExecuTorch", limit=10, difference=-9.97, passed=True),
        id="under",
    ),
    pytest.param(
        {
            **CONVERTED,
            "conversions": {
                "executorch": {**CONVERTED["conversions"]["executorch"], "runtime": XNNPACK}
            },
        },
        {"executorch": {"latency_ms": 30}},
        None,
        _entry(25.3, "MG302", "ms", XNNPACK, limit=30, difference=-4.7, passed=True),
        id="latency-of-the-runtime-the-target-names",
    ),
    pytest.param(
        CONVERTED,
        {"litert": {"drift": 0.01}},
        None,
        _entry(3.0e-07, "MG303", "", LITERT_DRIFT, limit=0.01, difference=-0.0099997, passed=True),
        id="drift-of-what-the-target-runs",
    ),
    pytest.param(
        {"size_mb": 0.005, "size_from": "file"},
        {"onnx": {"size_mb": 1}},
        None,
        _entry(
            None,
            "MG301",
            "MB",
            "ONNX",
            limit=1,
            passed=None,
            reason="not measured: ONNX was not converted (--convert onnx or convert: [onnx])",
        ),
        id="not-converted-says-how-to",
    ),
    pytest.param(
        {
            "size_mb": 0.005,
            "size_from": "file",
            "not_measured": {"drift": f"not measured: {STATE_DICT}"},
        },
        {"onnx": {"drift": 0.1}},
        None,
        _entry(
            None,
            "MG303",
            "",
            "ONNX Runtime",
            limit=0.1,
            passed=None,
            reason=f"not measured: ONNX was not converted: {STATE_DICT}",
        ),
        id="not-converted-because-nothing-could-run",
    ),
    pytest.param(
        FAILED,
        {"executorch": {"size_mb": 1}},
        None,
        _entry(
            None,
            "MG301",
            "MB",
            "ExecuTorch",
            limit=1,
            passed=None,
            reason="not measured: the ExecuTorch lowering failed: boom at aten::sort",
        ),
        id="conversion-failed",
    ),
    pytest.param(
        FAILED,
        {"onnx": {"latency_ms": 5}},
        None,
        _entry(
            None,
            "MG302",
            "ms",
            "ONNX Runtime",
            limit=5,
            passed=None,
            reason="not measured: ONNX will not load it: needs Sort",
        ),
        id="will-not-load-has-no-latency",
    ),
    pytest.param(
        FAILED,
        {"onnx": {"size_mb": 1}},
        None,
        _entry(0.002, "MG301", "MB", "ONNX", limit=1, difference=-0.998, passed=True),
        id="will-not-load-still-has-its-size",
    ),
    pytest.param(
        FAILED,
        {"litert": {"latency_ms": 5}},
        None,
        _entry(
            None,
            "MG302",
            "ms",
            LITERT_RUNTIME,
            limit=5,
            passed=None,
            reason="not measured: LiteRT was not run: ai_edge_litert is not installed: "
            "pip install it",
        ),
        id="not-run",
    ),
    pytest.param(
        CONVERTED,
        {"coreml": {"latency_ms": 5}},
        None,
        _entry(
            None,
            "MG302",
            "ms",
            "Core ML",
            limit=5,
            passed=None,
            reason="not measured by Core ML: nothing on this machine runs what it makes",
        ),
        id="a-target-nothing-runs-has-no-latency",
    ),
    pytest.param(
        CONVERTED,
        {"ort-mobile": {"size_mb": 5}},
        None,
        _entry(
            None,
            "MG301",
            "MB",
            "ONNX Runtime Mobile",
            limit=5,
            passed=None,
            reason="not measured by ONNX Runtime Mobile: its check gives no size_mb",
        ),
        id="a-figure-the-target-does-not-measure",
    ),
    pytest.param(
        TIMED_BADLY,
        {"onnx": {"latency_ms": 5}},
        None,
        _entry(
            None,
            "MG302",
            "ms",
            "ONNX Runtime",
            limit=5,
            passed=None,
            reason="not measured: ONNX Runtime did not run it: bad input",
        ),
        id="its-runtime-failed-to-run-it",
    ),
    pytest.param(
        _metrics(
            {
                "executorch": {
                    "ok": True,
                    "size_mb": 0.02,
                    "run": {
                        "ok": False,
                        "error": "no CoreMLBackend here",
                        "elsewhere": "measure it on the device",
                    },
                }
            },
            [_row("executorch", size_mb=0.02)],
        ),
        {"executorch": {"drift": 0.01}},
        None,
        _entry(
            None,
            "MG303",
            "",
            ET_DRIFT,
            limit=0.01,
            passed=None,
            reason="not measured: no CoreMLBackend here",
        ),
        id="its-runtime-is-not-on-this-machine",
    ),
    pytest.param(
        FAILED,
        {"coreml": {"drift": 0.01}},
        None,
        _entry(
            None,
            "MG303",
            "",
            COREML_DRIFT,
            limit=0.01,
            passed=None,
            reason="not meaningful: the original model's outputs are near-constant (MG104)",
        ),
        id="degenerate-drift",
    ),
    pytest.param(
        CONVERTED,
        {"litert": {"latency_ms": {"max_increase_pct": 10}}},
        None,
        _entry(0.237, "MG302", "ms", LITERT_RUNTIME, passed=None, reason=NO_BASELINE),
        id="growth-only-without-a-baseline",
    ),
    pytest.param(
        CONVERTED,
        {"litert": {"latency_ms": {"max": 30, "max_increase_pct": 10}}},
        None,
        _entry(
            0.237,
            "MG302",
            "ms",
            LITERT_RUNTIME,
            limit=30,
            difference=-29.763,
            note=GROWTH_NOT_JUDGED,
            passed=True,
        ),
        id="maximum-and-growth-without-a-baseline",
    ),
    pytest.param(
        CONVERTED,
        {"litert": {"latency_ms": {"max": 30, "max_increase_pct": 10}}},
        {"latency_ms": 0.1, "conversions": {"litert": {"latency_ms": 0.2}}},
        _entry(
            0.237,
            "MG302",
            "ms",
            LITERT_RUNTIME,
            limit=30,
            difference=-29.763,
            baseline=0.2,
            increase=0.037,
            increase_pct=18.5,
            max_increase_pct=10,
            passed=False,
        ),
        id="grew-against-the-baselines-same-target",
    ),
    pytest.param(
        CONVERTED,
        {"executorch": {"size_mb": {"max_increase": 0.01}}},
        {"size_mb": 0.5, "conversions": {"executorch": {"size_mb": 0.03}}},
        _entry(
            0.03,
            "MG301",
            "MB",
            "ExecuTorch",
            baseline=0.03,
            increase=0.0,
            increase_pct=0.0,
            max_increase=0.01,
            passed=True,
        ),
        id="no-growth-against-the-baseline",
    ),
    pytest.param(
        CONVERTED,
        {"litert": {"latency_ms": {"max_increase_pct": 10}}},
        {"latency_ms": 0.1},
        _entry(
            0.237,
            "MG302",
            "ms",
            LITERT_RUNTIME,
            passed=None,
            reason="the baseline has no litert latency_ms to compare with",
        ),
        id="a-baseline-without-the-targets-figure",
    ),
]


@pytest.mark.parametrize(("metrics", "targets", "base", "expected"), EVALUATIONS)
def test_evaluate_a_targets_own_figure(metrics, targets, base, expected) -> None:
    limits = budget.parse({"targets": targets})
    ((key, entry),) = budget.evaluate(metrics, limits, base).items()
    (target,) = targets
    ((figure, _),) = targets[target].items()
    assert key == f"{target}.{figure}"
    assert entry == expected


def _judge(metrics: dict[str, Any], doc: dict[str, Any], base: dict | None = None) -> ModelReport:
    model = ModelReport("m.pt2", "torch_export", [], dict(metrics))
    if base is not None:
        model.metrics["baseline"] = {"path": "old.pt2", "ref": None, "metrics": base}
    budget.apply_model(model, cfg.from_dict({"budget": doc}))
    return model


FINDINGS = [
    pytest.param(
        CONVERTED,
        {"size_mb": 25, "targets": {"executorch": {"size_mb": 10, "latency_ms": 20}}},
        None,
        [
            (
                "MG302",
                "budget:executorch.latency_ms",
                f"executorch latency_ms 25.3 ms ({ET_RUNTIME}) is over the budget of 20 ms by "
                "5.3 ms, +26%",
            )
        ],
        id="over-is-the-figures-rule-naming-the-target",
    ),
    pytest.param(
        CONVERTED,
        {"targets": {"executorch": {"drift": 1.0e-07}, "litert": {"size_mb": 0.001}}},
        None,
        [
            (
                "MG301",
                "budget:litert.size_mb",
                "litert size_mb 0.026 MB (LiteRT) is over the budget of 0.001 MB by 0.025 MB, "
                "+2500%",
            ),
            (
                "MG303",
                "budget:executorch.drift",
                f"executorch drift 3e-07 ({ET_DRIFT}) is over the budget of 1e-07 by 2e-07, +200%",
            ),
        ],
        id="each-target-its-own-finding-in-rule-order",
    ),
    pytest.param(
        FAILED,
        {"targets": {"executorch": {"latency_ms": 20}, "ort-mobile": {"size_mb": 1}}},
        None,
        [
            (
                "MG304",
                "budget:executorch.latency_ms:unjudged",
                "the budget for executorch latency_ms was not judged: not measured: the ExecuTorch "
                "lowering failed: boom at aten::sort",
            ),
            (
                "MG304",
                "budget:ort-mobile.size_mb:unjudged",
                "the budget for ort-mobile size_mb was not judged: not measured: ONNX Runtime "
                "Mobile was not converted (--convert ort-mobile or convert: [ort-mobile])",
            ),
        ],
        id="unmeasured-is-never-silent",
    ),
    pytest.param(
        CONVERTED,
        {"targets": {"litert": {"latency_ms": {"max_increase_pct": 10}}}},
        {"conversions": {"litert": {"latency_ms": 0.2}}},
        [
            (
                "MG302",
                "budget:litert.latency_ms:growth",
                "litert latency_ms grew by 0.037 ms (+18.5%) against old.pt2 (0.2 ms -> 0.237 ms), "
                "more than the 10% allowed",
            )
        ],
        id="growth-against-the-baseline",
    ),
    pytest.param(
        CONVERTED,
        {"targets": {"executorch": {"size_mb": 10}, "litert": {"latency_ms": 30}}},
        None,
        [],
        id="every-target-within",
    ),
]


@pytest.mark.parametrize(("metrics", "doc", "base", "expected"), FINDINGS)
def test_apply_model_findings(metrics, doc, base, expected) -> None:
    model = _judge(metrics, doc, base)
    assert [(f.rule, f.key, f.message) for f in model.findings] == expected


def test_the_findings_fix_is_the_figures() -> None:
    model = _judge(CONVERTED, {"targets": {"executorch": {"latency_ms": 20}}})
    (finding,) = model.findings
    assert finding.fix.startswith("reduce MACs (feature-map sizes, channels)")


def test_the_config_form_parses_to_target_keys_in_order() -> None:
    config = cfg.from_dict(
        {
            "budget": {
                "size_mb": 25,
                "targets": {
                    "executorch": {"size_mb": 10, "latency_ms": 20, "drift": 0.01},
                    "litert": {"latency_ms": {"max": 30, "max_increase_pct": 10}},
                },
            }
        }
    )
    assert config.budget == {
        "size_mb": budget.Limit(max=25),
        "executorch.size_mb": budget.Limit(max=10),
        "executorch.latency_ms": budget.Limit(max=20),
        "executorch.drift": budget.Limit(max=0.01),
        "litert.latency_ms": budget.Limit(max=30, max_increase_pct=10),
    }


def test_a_budgeted_target_is_converted_but_not_asked_for() -> None:
    config = cfg.from_dict(
        {"convert": "onnx", "budget": {"targets": {"executorch": {"size_mb": 1}}}}
    )
    assert config.checks.convert == ("onnx",)  # what MG106 holds the run to
    assert [t.name for t in plan.converters(config.checks, config)] == ["onnx", "executorch"]
    only_budget = cfg.from_dict({"budget": {"targets": {"litert": {"drift": 0.1}}}})
    assert plan.needs_run(only_budget) is True
    assert [t.name for t in plan.converters(only_budget.checks, only_budget)] == ["litert"]
    assert plan.needs_run(cfg.from_dict({"budget": {"size_mb": 1}})) is False
    # --convert on the command line replaces convert:, not what the budget converts
    merged = apply_options(config, Options(convert=("coreml",)))
    assert [t.name for t in plan.converters(merged.checks, merged)] == ["coreml", "executorch"]


def test_static_drops_the_targets_figures_and_the_converted_size() -> None:
    """--static converts nothing: a target's figures are not static, and size_mb would be
    the converted model's in the full run, so it is not judged on the file either."""
    config = cfg.from_dict(
        {"budget": {"size_mb": 1, "parameters": 100, "targets": {"onnx": {"size_mb": 1}}}}
    )
    static = apply_options(config, Options(static=True))
    assert list(static.budget) == ["parameters"]
    assert plan.converters(static.checks, static) == []


def test_a_baseline_carries_each_targets_figures_for_growth_limits() -> None:
    """--baseline and the Action attach the old report: a target's growth limit is judged
    against the old report's same target figure."""
    from modelgate import baseline

    old = ModelReport("old.pt2", "torch_export", [], dict(CONVERTED))
    grown = {**CONVERTED["conversions"]["executorch"], "latency_ms": 30.36}
    new = ModelReport("m.pt2", "torch_export", [], {
        **CONVERTED, "conversions": {**CONVERTED["conversions"], "executorch": grown}})  # fmt: skip
    baseline.attach(new, old, "old.pt2")
    assert new.metrics["baseline"]["metrics"]["conversions"]["executorch"] == {
        "size_mb": 0.03, "latency_ms": 25.3, "drift": 3.0e-07}  # fmt: skip
    limit = {"executorch": {"latency_ms": {"max_increase_pct": 10}}}
    budget.apply_model(new, cfg.from_dict({"budget": {"targets": limit}}))
    assert [(f.rule, f.key) for f in new.findings] == [
        ("MG302", "budget:executorch.latency_ms:growth")
    ]
    entry = new.metrics["budget"]["executorch.latency_ms"]
    assert (entry["baseline"], entry["increase_pct"], entry["passed"]) == (25.3, 20.0, False)


def test_a_targets_size_fix_is_about_what_it_converted() -> None:
    """The model-wide size fix names Core ML presets; a target's own size gets its own."""
    model = _judge(CONVERTED, {"targets": {"litert": {"size_mb": 0.001}}})
    (finding,) = model.findings
    assert finding.fix.startswith("shrink the largest layers (metrics.largest_layers), quantize")
    assert _judge(CONVERTED, {"size_mb": 0.001}).findings[0].fix.startswith("compress further")
