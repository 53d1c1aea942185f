"""Reports read back: ``from_dict`` is the inverse of ``to_dict`` (bandit's issue.py shape)."""

from __future__ import annotations

import json

from modelgate.finding import Finding, Location, SourceLocation
from modelgate.report import ModelReport, Report


def _report() -> Report:
    source = SourceLocation("models/net.py", 41, "forward")
    where = Location("m.pt2", module="head.2", op="aten::linear", source=source)
    big = Finding("MG001", "oversized-linear", "error", "head.2: Linear 36864x1024", where,
                  fix="shrink it", key="head.2", extra={"new": True})  # fmt: skip
    unreadable = Finding("MG902", "unreadable-model", "warning", "cannot read", Location("x.onnx"))
    skipped = {"MG101": "not converted: nothing asked"}
    metrics = {"size_mb": 1.5, "budget": {}}
    good = ModelReport("m.pt2", "torch_export", [big], metrics, skipped, ["a note"], False)
    bad = ModelReport("x.onnx", "onnx", [unreadable], passed=True)
    return Report([good, bad], notes=["unused ignore"], fail_on="warning", version="9.9")


def test_a_report_survives_json_and_back() -> None:
    report = _report()
    text = json.dumps(report.to_dict())
    back = Report.from_dict(json.loads(text))
    assert back.to_dict() == report.to_dict()
    assert back.models[0].findings == report.models[0].findings
    assert back.models[0].findings[0].location.source == SourceLocation(
        "models/net.py", 41, "forward"
    )


def test_passed_and_counts_come_from_the_models_not_the_file() -> None:
    doc = _report().to_dict()
    doc["passed"], doc["counts"] = True, {"error": 0, "warning": 0, "info": 0}
    back = Report.from_dict(doc)
    assert back.passed is False and back.counts() == {"error": 1, "warning": 1, "info": 0}


def test_unknown_location_keys_are_dropped() -> None:
    data = {"rule": "MG001", "location": {"path": "m.pt", "module": "fc", "colour": "red"}}
    assert Finding.from_dict(data).location == Location("m.pt", module="fc")


def test_checks_results_round_trip_with_every_target_beside_the_shared_keys() -> None:
    from modelgate.results import ChecksResult

    flat = {
        "requested": {"convert": ["coreml", "onnx"], "compress": ["int8"], "asked": ["onnx"]},
        "graph": {"macs": 10, "peak_activation_mb": 0.1},
        "inputs": [{"name": "x", "shape": [1, 8], "dtype": "float32"}],
        "coreml": {"ok": True, "bytes": 100},
        "onnx": {"ok": False, "error": "boom", "kind": "error", "stage": "exporting to ONNX"},
        "compress": {"int8": {"ok": True, "bytes": 50}},
        "latency": {"median_ms": 1.0},
    }
    checks = ChecksResult.from_dict(flat)
    assert checks.of("onnx")["error"] == "boom" and checks.preset("int8")["bytes"] == 50
    assert checks.requested.asked == ["onnx"] and checks.skip_reason() is None
    assert checks.to_dict() == flat
    checks.skip("no shapes", "give --input-shape")
    assert checks.skip_reason() == ("no shapes", "give --input-shape")
    assert checks.skipped == "no shapes: give --input-shape"


def test_a_budget_entry_keeps_the_reports_form_and_order() -> None:
    from modelgate import budget
    from modelgate.results import BudgetEntry

    limits = budget.parse({"size_mb": 25, "parameters": {"max_increase_pct": 10}, "drift": 0.1})
    metrics = {"size_mb": 30.0, "size_from": "Core ML", "parameters": 1100, "drift": None}
    for base in ({"parameters": 1000}, {"parameters": 0}, None):
        for key, entry in budget.evaluate(metrics, limits, base).items():
            back = BudgetEntry.from_dict(entry).to_dict()
            assert list(back.items()) == list(entry.items()), key


def test_a_targets_budget_entry_keeps_the_reports_form_and_order() -> None:
    from modelgate import budget
    from modelgate.results import BudgetEntry

    limits = budget.parse(
        {"targets": {"onnx": {"size_mb": {"max": 1, "max_increase_pct": 10}, "latency_ms": 5}}}
    )
    metrics = {"conversions": {"onnx": {"ok": True, "size_mb": 2.0}}, "targets": []}
    for base in ({"conversions": {"onnx": {"size_mb": 1.0}}}, {}, None):
        evaluation = budget.evaluate(metrics, limits, base)
        assert list(evaluation) == ["onnx.size_mb", "onnx.latency_ms"]
        for key, entry in evaluation.items():
            back = BudgetEntry.from_dict(entry).to_dict()
            assert list(back.items()) == list(entry.items()), key
