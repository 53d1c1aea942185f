"""SARIF output: valid against the official SARIF 2.1.0 schema, and shaped as GitHub code
scanning needs it (stable rule ids, repository-relative URIs, regions, our fingerprints)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_github_reporters import sample

from modelgate.finding import Finding, Location
from modelgate.report import ModelReport, Report
from modelgate.reporters import render
from modelgate.reporters.sarif import FINGERPRINT, fingerprint
from modelgate.rules import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / ".." / "shared" / "schemas" / "sarif-schema-2.1.0.json"


@pytest.fixture(scope="module")
def validator():
    import jsonschema

    if not SCHEMA.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"the SARIF 2.1.0 schema is missing: {SCHEMA} (CI downloads it)")
        pytest.skip(f"the SARIF 2.1.0 schema is not beside the checkout: {SCHEMA}")
    schema = json.loads(SCHEMA.read_text("utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def report() -> Report:
    """The reporter sample, plus a model outside the repository and a rule not registered."""
    out = sample()
    stray = Finding(
        "MG998",
        "made-up-budget",
        "error",
        "size 30 MB > 25 MB",
        Location("/data/elsewhere/big model.pt"),
        key="size_mb",
    )
    out.models.append(
        ModelReport("/data/elsewhere/big model.pt", "checkpoint", [stray], passed=False)
    )
    return out


def test_sarif_validates_against_the_schema(validator) -> None:
    doc = json.loads(render(report(), "sarif"))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
    empty = json.loads(render(Report(), "sarif"))
    assert not list(validator.iter_errors(empty))


def test_sarif_is_what_code_scanning_needs() -> None:
    doc = json.loads(render(report(), "sarif"))
    assert doc["version"] == "2.1.0"
    (run,) = doc["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "modelgate" and driver["semanticVersion"] == driver["version"]
    rules = driver["rules"]
    # every registered rule, in id order, documented from its docstring; then ad-hoc ones
    assert [r["id"] for r in rules] == [*REGISTRY.ids(), "MG998"]
    mg001 = rules[0]
    assert mg001["name"] == "oversized-linear"
    assert mg001["shortDescription"]["text"] == "A fully connected layer holds most of the model."
    assert mg001["fullDescription"]["text"].startswith("Flags a `Linear`")
    assert "## Why is this bad?" in mg001["help"]["markdown"]
    by_rule = {r["ruleId"]: r for r in run["results"]}
    # at the .py line in the repository, with the model as a related location
    head = by_rule["MG001"]
    assert head["ruleIndex"] == 0 and head["level"] == "error"
    assert head["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "models/net.py", "uriBaseId": "%SRCROOT%"},
        "region": {"startLine": 41},
    }
    assert head["locations"][0]["logicalLocations"] == [
        {"name": "head", "fullyQualifiedName": "head", "kind": "module"}
    ]
    assert (
        head["relatedLocations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        == "models/net.pt2"
    )
    assert head["message"]["text"].startswith("models/net.pt2: head: Linear 36864x1024")
    # source outside the repository: the model file, no region (upload-sarif must not hash it)
    drop = by_rule["MG004"]
    assert drop["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "models/net.pt2", "uriBaseId": "%SRCROOT%"}
    }
    assert "created at /home/alice/train.py:7 (not in this repository)" in drop["message"]["text"]
    assert by_rule["MG005"]["level"] == "warning"
    stray = by_rule["MG998"]
    assert stray["locations"][0]["physicalLocation"]["artifactLocation"] == {
        "uri": "file:///data/elsewhere/big%20model.pt"
    }
    assert stray["ruleIndex"] == len(rules) - 1
    assert len(run["results"]) == 4
    # notes and rules that could not run are tool notifications
    notes = [n["message"]["text"] for n in run["invocations"][0]["toolExecutionNotifications"]]
    assert notes == [
        'unused ignore: "x/**" ignores MG004, which found nothing there',
        "models/ok.onnx: MG003 not checked: no input shapes: pass --input-shape",
    ]


def test_fingerprints_are_stable_and_distinct() -> None:
    first = json.loads(render(report(), "sarif"))["runs"][0]["results"]
    changed = report()
    # the same finding with other numbers in its message keeps its fingerprint
    net = changed.models[0]
    net.findings[0] = Finding(**{**net.findings[0].__dict__, "message": "head: 40M parameters"})
    second = json.loads(render(changed, "sarif"))["runs"][0]["results"]
    prints = [r["partialFingerprints"][FINGERPRINT] for r in first]
    assert prints == [r["partialFingerprints"][FINGERPRINT] for r in second]
    assert len(set(prints)) == len(prints)
    finding = net.findings[0]
    assert fingerprint("models/net.pt2", finding) != fingerprint("models/other.pt2", finding)
