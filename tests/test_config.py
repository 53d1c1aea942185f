"""Config: discovery, the shipped schema, errors that name the key, ignores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelgate import config as cfg


def test_shipped_schema_matches_the_registry() -> None:
    assert cfg.shipped_schema() == json.loads(json.dumps(cfg.build_schema())), (
        "modelgate/schema.json is stale: run python tools/gen_schema.py"
    )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"rules": {"MG001": {"bogus": 1}}},
         'unknown option "bogus" for rule "MG001" '
         "(options: min_share, min_parameters, max_parameters)"),
        ({"rules": {"MG999": "off"}}, 'unknown rule "MG999" under rules'),
        ({"rules": {"MG001": "loud"}}, "rules.MG001: expected one of off, error, warning, info"),
        ({"rules": {"MG001": {"min_share": "half"}}}, 'option "min_share" of rule "MG001"'),
        ({"targets": ["tflite"]}, "targets.0: 'tflite' is not one of"),
        ({"inputs": [{"name": "x"}]}, "inputs.0: 'shape' is a required property"),
        ({"colour": "red"}, 'unknown key "colour"'),
        ({"ignore": {"*.pt": ["MG777"]}}, 'unknown rule "MG777" under ignore."*.pt"'),
        ({"budget": {"targets": {"tflite": {"size_mb": 1}}}},
         'unknown target "tflite" under budget.targets (known: coreml, onnx, '),
        ({"budget": {"targets": {"onnx": {"macs": 1}}}},
         'unknown figure "macs" for target "onnx" under budget.targets '
         "(a target's own figures: size_mb, latency_ms, drift)"),
        ({"budget": {"targets": {"onnx": {}}}}, "budget.targets.onnx: {} should be non-empty"),
        ({"budget": {"targets": {"litert": {"drift": {"max_drift": 1}}}}},
         "budget.targets.litert.drift: {'max_drift': 1} is not valid under any of the given "
         "schemas"),
    ],
)  # fmt: skip
def test_bad_config_names_the_key(doc: dict, message: str) -> None:
    with pytest.raises(cfg.ConfigError) as err:
        cfg.from_dict(doc)
    assert message in str(err.value)


def test_rules_by_id_or_name_severity_and_options() -> None:
    config = cfg.from_dict(
        {"rules": {"oversized-linear": {"severity": "warning", "min_share": 0.3}, "MG005": "off"}}
    )
    assert config.setting("MG001") == cfg.RuleSetting(True, "warning", {"min_share": 0.3})
    assert config.setting("MG005").enabled is False
    assert config.setting("MG002") == cfg.RuleSetting()


def test_discovery_yaml_then_pyproject_stops_at_repo_root(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "models" / "deep").mkdir(parents=True)
    (tmp_path / "modelgate.yaml").write_text("fail_on: info\n")  # outside the repo: ignored
    assert cfg.discover(str(repo / "models" / "deep")) is None
    (repo / "pyproject.toml").write_text('[tool.modelgate]\nfail_on = "warning"\n')
    found = cfg.discover(str(repo / "models" / "deep"))
    assert found == str(repo / "pyproject.toml")
    assert cfg.load(found).fail_on == "warning"
    (repo / "models" / "modelgate.yaml").write_text("targets: [onnx]\n")
    nearest = cfg.load(None, start=str(repo / "models" / "deep"))
    assert nearest.targets == ("onnx",)


def test_invalid_yaml_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "modelgate.yaml"
    path.write_text("rules:\n  MG001: [unclosed\n")
    with pytest.raises(cfg.ConfigError, match=r"invalid YAML in .*line"):
        cfg.load(str(path))


@pytest.mark.parametrize(
    ("path", "glob", "hit"),
    [
        ("models/legacy/a.pt", "models/legacy/**", True),
        ("models/legacy/x/a.pt", "models/legacy/**", True),
        ("models/a.pt", "models/legacy/**", False),
        ("deep/dir/a.onnx", "*.onnx", True),
        ("a.pt", "models/*.pt", False),
        ("models/a.pt", "models/*.pt", True),
        ("models/sub/a.pt", "models/*.pt", False),
        ("models/sub/a.pt", "**/a.pt", True),
    ],
)
def test_ignore_globs(path: str, glob: str, hit: bool) -> None:
    config = cfg.from_dict({"ignore": {glob: ["MG001"]}})
    assert bool(config.ignored(path)) is hit


def test_parse_input_shape() -> None:
    assert cfg.parse_input_shape("x=1x3x224x224") == cfg.InputSpec("x", (1, 3, 224, 224))
    assert cfg.parse_input_shape("1,3,8,8:float16") == cfg.InputSpec(None, (1, 3, 8, 8), "float16")
    with pytest.raises(cfg.ConfigError, match="expected NAME=1x3x224x224"):
        cfg.parse_input_shape("x=big")


def test_the_schema_lists_every_registered_target_and_only_their_own_figures() -> None:
    from modelgate.targets import REGISTRY

    targets = cfg.build_schema()["properties"]["budget"]["properties"]["targets"]
    assert list(targets["properties"]) == list(REGISTRY.names())
    assert targets["additionalProperties"] is False
    for entry in targets["properties"].values():
        assert list(entry["properties"]) == ["size_mb", "latency_ms", "drift"]
        assert entry["additionalProperties"] is False
