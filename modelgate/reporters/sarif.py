"""``--format sarif``: SARIF 2.1.0 as GitHub code scanning accepts it.

Every rule in the registry is described (id, name, short and full description, help from the
rule's docstring), so ``ruleId`` and ``ruleIndex`` are stable across runs. A result's primary
location is the Python line that created the layer when that file is in the repository, with the
model file as a related location; otherwise the model file, without a region: a model is not
text, and upload-sarif skips line hashing for locations without a line (it would otherwise read
a multi-GB binary). GitHub cannot fingerprint model files, so each result carries our own
``partialFingerprints`` entry: a hash of rule id, model path and the finding's stable key.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import quote

from modelgate.finding import Finding
from modelgate.registry import documentation
from modelgate.repo import in_repo
from modelgate.report import ModelReport, Report

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SRCROOT = "%SRCROOT%"
FINGERPRINT = "modelgateFinding/v1"
LEVELS = {"error": "error", "warning": "warning", "info": "note"}
_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:[-+].*)?$")


def fingerprint(model_path: str, finding: Finding) -> str:
    """Stable across runs while the same rule flags the same thing in the same model file."""
    data = f"{finding.rule}\0{model_path}\0{finding.identity}".encode()
    return hashlib.sha256(data).hexdigest()[:32]


def _section(doc: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", doc, re.S | re.M)
    return " ".join(match.group(1).split()) if match else ""


def rule_descriptor(module: ModuleType) -> dict[str, Any]:
    doc = documentation(module)
    short = doc.splitlines()[0].strip() if doc else module.NAME
    return {
        "id": module.ID,
        "name": module.NAME,
        "shortDescription": {"text": short},
        "fullDescription": {"text": _section(doc, "What it does") or short},
        "help": {"text": doc or short, "markdown": doc or short},
        "defaultConfiguration": {"level": LEVELS[module.SEVERITY]},
        "properties": {"tags": ["modelgate", "model"]},
    }


def _adhoc_descriptor(finding: Finding) -> dict[str, Any]:
    """A finding whose rule is not a registered module (e.g. a budget check in the engine)."""
    return {
        "id": finding.rule,
        "name": finding.name,
        "shortDescription": {"text": finding.name.replace("-", " ")},
        "fullDescription": {"text": finding.name.replace("-", " ")},
        "help": {"text": f"modelgate rule {finding.rule} {finding.name}"},
        "defaultConfiguration": {"level": LEVELS[finding.severity]},
        "properties": {"tags": ["modelgate", "model"]},
    }


def artifact(path: str) -> dict[str, Any]:
    """A repository-relative URI against %SRCROOT%, or a file URI for a path outside it."""
    if in_repo(path):
        return {"uri": quote(PurePosixPath(path).as_posix()), "uriBaseId": SRCROOT}
    if path.startswith("/"):
        return {"uri": "file://" + quote(path)}
    return {"uri": quote(path.replace("\\", "/"))}


def _logical(finding: Finding) -> list[dict[str, Any]]:
    loc = finding.location
    if loc.module:
        return [
            {
                "name": loc.module.rsplit(".", 1)[-1],
                "fullyQualifiedName": loc.module,
                "kind": "module",
            }
        ]
    if loc.op:
        return [{"name": loc.op, "fullyQualifiedName": loc.op, "kind": "function"}]
    return []


def result(model: ModelReport, finding: Finding, index: int) -> dict[str, Any]:
    loc = finding.location
    message = finding.message + (f"\nfix: {finding.fix}" if finding.fix else "")
    model_location: dict[str, Any] = {
        "physicalLocation": {"artifactLocation": artifact(model.path)}
    }
    source = loc.source
    logical = _logical(finding)
    out: dict[str, Any] = {
        "ruleId": finding.rule,
        "ruleIndex": index,
        "level": LEVELS[finding.severity],
    }
    if source is not None and in_repo(source.file) and source.line >= 1:
        primary: dict[str, Any] = {
            "physicalLocation": {
                "artifactLocation": artifact(source.file),
                "region": {"startLine": source.line},
            }
        }
        out["message"] = {"text": f"{model.path}: {message}"}
        related = [{"id": 1, **model_location, "message": {"text": "the model file"}}]
    else:
        primary = model_location
        if source is not None:
            message += f"\ncreated at {source} (not in this repository)"
        out["message"] = {"text": message}
        related = []
    if logical:
        primary["logicalLocations"] = logical
    out["locations"] = [primary]
    if related:
        out["relatedLocations"] = related
    out["partialFingerprints"] = {FINGERPRINT: fingerprint(model.path, finding)}
    props = {k: v for k, v in loc.to_dict().items() if k not in ("path", "source")}
    out["properties"] = {"model": model.path, **props}
    return out


def sarif(report: Report) -> dict[str, Any]:
    """The SARIF log as a dict (``render`` serialises it)."""
    from modelgate.rules import REGISTRY

    rules = [rule_descriptor(module) for module in REGISTRY]
    index = {rule["id"]: i for i, rule in enumerate(rules)}
    results = []
    for model, finding in report.findings():
        if finding.rule not in index:
            index[finding.rule] = len(rules)
            rules.append(_adhoc_descriptor(finding))
        results.append(result(model, finding, index[finding.rule]))
    notes: list[dict[str, Any]] = [
        {"level": "warning", "message": {"text": note}} for note in report.notes
    ]
    for model in report.models:
        for rid, why in sorted(model.skipped.items()):
            notes.append(
                {"level": "note", "message": {"text": f"{model.path}: {rid} not checked: {why}"}}
            )
    driver: dict[str, Any] = {"name": "modelgate", "version": report.version, "rules": rules}
    if _SEMVER.match(report.version):
        driver["semanticVersion"] = report.version
    invocation: dict[str, Any] = {"executionSuccessful": True}
    if notes:
        invocation["toolExecutionNotifications"] = notes
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": driver},
                "invocations": [invocation],
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }


def render(report: Report, color: bool = False) -> str:
    return json.dumps(sarif(report), indent=2, ensure_ascii=False) + "\n"
