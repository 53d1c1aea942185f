"""One options merge (modelgate.options): the CLI and the Action lay their options over the
config through it, and it is the only place that happens.

The end-to-end cases run ``modelgate check`` and the Action's entry in-process with the
driver replaced by a recorder, so they compare the very Config each would check models with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelgate import action, cli, driver, verdict
from modelgate import config as cfg
from modelgate.config import ConfigError, RuleSetting
from modelgate.limits import Limit
from modelgate.options import Options, apply, load
from modelgate.registry import UnknownRule
from modelgate.report import ModelReport, Report
from modelgate.rules import REGISTRY
from modelgate.targets import REGISTRY as TARGETS

GATE = """\
targets: [onnx]
fail_on: warning
timeout: 120
rules:
  oversized-linear: {severity: warning, min_parameters: 10000}
  MG004: "off"
ignore:
  "legacy/*.pt": [MG001]
budget:
  file_mb: 50
  weights_mb: {max: 40, max_increase_pct: 10}
"""


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    """What each run hands the driver; a model file and a config in ``tmp_path``, which both
    entries run from (the Action as its workspace, with no base ref and no git)."""
    calls: list[dict[str, Any]] = []

    def run(paths: list[str], config: cfg.Config, cli_inputs=(), jobs=None, timeout=None,
            **_: Any) -> Report:  # fmt: skip
        calls.append({"config": config, "inputs": cli_inputs, "jobs": jobs, "timeout": timeout})
        return verdict.finish(Report([ModelReport(p, "torch state dict") for p in paths]), config)

    monkeypatch.setattr(driver, "run", run)
    for name in ("GITHUB_EVENT_PATH", "GITHUB_BASE_REF", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path))
    (tmp_path / "runner").mkdir()
    monkeypatch.setenv("RUNNER_TEMP", str(tmp_path / "runner"))
    monkeypatch.chdir(tmp_path)  # the Action changes into its workspace; this restores it
    (tmp_path / "m.pt").write_bytes(b"")
    (tmp_path / "gate.yaml").write_text(GATE)
    return calls


def _cli(calls: list[dict[str, Any]], *args: str) -> dict[str, Any]:
    assert cli.main(["check", "m.pt", "--format", "json", *args]) in (0, 1)
    return calls.pop()


def _action(
    calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, **inputs: str
) -> dict[str, Any]:
    for name, value in inputs.items():  # as action.yml passes the inputs
        monkeypatch.setenv(f"INPUT_{name.upper()}", value)
    assert action.main(["run", "--paths", "m.pt"]) in (0, 1)
    return calls.pop()


# (CLI flags, the Action's inputs, the Options both stand for)
SAME = {
    "nothing": ([], {}, Options()),
    "config": (["--config", "gate.yaml"], {"config": "gate.yaml"}, Options(config="gate.yaml")),
    "fail-on": (["--fail-on", "info"], {"fail_level": "info"}, Options(fail_on="info")),
    "both": (
        ["--config", "gate.yaml", "--fail-on", "error"],
        {"config": "gate.yaml", "fail_level": "error"},
        Options(config="gate.yaml", fail_on="error"),
    ),
    "empty inputs": ([], {"config": "", "fail_level": ""}, Options()),
}


@pytest.mark.parametrize(("flags", "inputs", "options"), SAME.values(), ids=SAME)
def test_the_cli_and_the_action_check_with_the_same_config(
    recorded, monkeypatch, flags, inputs, options
) -> None:
    by_cli = _cli(recorded, *flags)
    by_action = _action(recorded, monkeypatch, **inputs)
    assert by_cli == by_action
    expected, shapes = load(options)
    assert by_cli == {"config": expected, "inputs": shapes, "jobs": None, "timeout": None}


def test_the_discovered_config_is_the_same_for_both(recorded, monkeypatch, tmp_path) -> None:
    (tmp_path / "gate.yaml").rename(tmp_path / "modelgate.yaml")
    by_cli, by_action = _cli(recorded), _action(recorded, monkeypatch)
    assert by_cli == by_action
    assert by_cli["config"].fail_on == "warning" and by_cli["config"].targets == ("onnx",)


# CLI flags -> the Options they stand for (the flags the Action has no input for)
FLAGS = {
    "select": (
        ["--select", "MG001, dropout-in-eval"],
        Options(select=("MG001", "dropout-in-eval")),
    ),
    "ignore": (["--ignore", "MG001,MG002"], Options(ignore=("MG001", "MG002"))),
    "target": (["--target", "onnx", "--target", "onnx"], Options(targets=("onnx", "onnx"))),
    "static": (["--static", "--config", "gate.yaml"], Options(config="gate.yaml", static=True)),
    "shapes": (["--input-shape", "x=1x3x8x8"], Options(input_shapes=("x=1x3x8x8",))),
    "jobs": (["-j", "2", "--timeout", "7.5"], Options(jobs=2, timeout=7.5)),
}


@pytest.mark.parametrize(("flags", "options"), FLAGS.values(), ids=FLAGS)
def test_cli_flags_are_options(recorded, flags, options) -> None:
    expected, shapes = load(options)
    assert _cli(recorded, *flags) == {
        "config": expected, "inputs": shapes, "jobs": options.jobs, "timeout": None
    }  # fmt: skip


def test_no_options_change_nothing() -> None:
    """Every default is the config's: options left unset leave it as it was."""
    assert apply(_gate(), Options()) == _gate()
    assert apply(cfg.Config(), Options()) == cfg.Config()


def _gate(**extra: Any) -> cfg.Config:
    import yaml

    return cfg.from_dict({**yaml.safe_load(GATE), **extra})


def test_options_over_the_config() -> None:
    config = apply(
        _gate(),
        Options(
            select=("oversized-linear", "MG002"),
            ignore=("MG002",),
            targets=("coreml", "onnx", "coreml"),
            fail_on="info",
            convert=("onnx", "onnx"),
            compress=("int8",),
            timeout=9.0,
        ),
    )
    assert config.setting("MG001") == RuleSetting(True, "warning", {"min_parameters": 10000})
    assert {rid for rid, s in config.rules.items() if s.enabled} == {"MG001"}
    assert len(config.rules) == len(REGISTRY.ids())
    assert config.targets == ("coreml", "onnx", "coreml")
    assert config.asked_targets == ("coreml", "onnx")
    assert (config.fail_on, config.timeout) == ("info", 9.0)
    assert (config.checks.convert, config.checks.compress) == (("onnx",), ("int8",))
    assert config.ignore == {"legacy/*.pt": ("MG001",)}  # what no option touches stays


# config (YAML budget and convert), baseline compared -> the budget --static keeps
STATIC = {
    "file figures only": (
        {"budget": {"file_mb": 5, "latency_ms": 3, "drift": 0.01, "macs": 100}},
        False,
        {"file_mb": Limit(5)},
    ),
    "size_mb is the file's when nothing converts": (
        {"budget": {"size_mb": 9, "file_mb": 5, "parameters": 1000}},
        False,
        {"size_mb": Limit(9), "file_mb": Limit(5), "parameters": Limit(1000)},
    ),
    "size_mb is a converted package's when the config converts": (
        {"convert": ["onnx"], "budget": {"size_mb": 9, "weights_mb": 4}},
        False,
        {"weights_mb": Limit(4)},
    ),
    "compression converts too": (
        {"compress": "palettize-8", "budget": {"size_mb": 9, "file_mb": 5}},
        False,
        {"file_mb": Limit(5)},
    ),
    "growth limits need a baseline": (
        {"budget": {"file_mb": {"max": 5, "max_increase": 1}, "weights_mb": {"max_increase": 2}}},
        False,
        {"file_mb": Limit(5)},
    ),
    "with a baseline they stay": (
        {"budget": {"file_mb": {"max": 5, "max_increase": 1}, "weights_mb": {"max_increase": 2}}},
        True,
        {"file_mb": Limit(5, 1), "weights_mb": Limit(max_increase=2)},
    ),
}


@pytest.mark.parametrize(("doc", "baseline", "budget"), STATIC.values(), ids=STATIC)
def test_static_drops_conversions_and_keeps_the_static_budget(doc, baseline, budget) -> None:
    config = cfg.from_dict(doc)
    static = apply(config, Options(static=True, baseline=baseline))
    assert static.budget == budget
    assert (static.checks.convert, static.checks.compress) == ((), ())
    assert static.checks.converters == ()
    assert apply(config, Options(baseline=baseline)).budget == config.budget  # only --static


@pytest.mark.parametrize("asked", [{"convert": ("onnx",)}, {"compress": ("int8",)}])
def test_static_refuses_conversions(asked: dict[str, tuple[str, ...]]) -> None:
    with pytest.raises(ConfigError) as exc:
        apply(cfg.Config(), Options(static=True, **asked))
    assert str(exc.value) == "--static skips conversions: drop --convert / --compress"


def test_unknown_preset_is_named() -> None:
    with pytest.raises(ConfigError) as exc:
        apply(cfg.Config(), Options(compress=("int8", "palettize-3")))
    known = ", ".join(TARGETS.presets())
    assert str(exc.value) == f"--compress palettize-3: unknown preset (known: {known})"


# options -> the rule the error names (the first unknown, select before ignore)
UNKNOWN = {
    "an id in select": (Options(select=("MG001", "MG404")), "MG404"),
    "a name in select": (Options(select=("no-such-rule",)), "no-such-rule"),
    "select before ignore": (Options(select=("MG405",), ignore=("MG406",)), "MG405"),
    "an id in ignore": (Options(ignore=("MG001", "MG406")), "MG406"),
}


@pytest.mark.parametrize(("options", "key"), UNKNOWN.values(), ids=UNKNOWN)
def test_unknown_rules_are_named(options: Options, key: str) -> None:
    with pytest.raises(UnknownRule) as exc:
        apply(cfg.Config(), options)
    assert str(exc.value) == f'unknown rule "{key}" (known: {", ".join(REGISTRY.ids())})'


def test_errors_exit_2_with_the_message(recorded, capsys) -> None:
    assert cli.main(["check", "m.pt", "--select", "MG001,MG404"]) == 2
    assert 'modelgate: unknown rule "MG404" (known: MG001, ' in capsys.readouterr().err
    assert cli.main(["check", "m.pt", "--static", "--compress", "int8"]) == 2
    assert "--static skips conversions" in capsys.readouterr().err
    assert cli.main(["check", "m.pt", "--input-shape", "x=oops"]) == 2
    assert "--input-shape x=oops: expected NAME=1x3x224x224" in capsys.readouterr().err
    assert recorded == []  # nothing was checked


def test_options_sit_below_the_entries() -> None:
    """cli / action -> options -> config: the merge imports no entry and no stage."""
    from test_import_graph import _imports, _modules

    known = _modules()
    below = _imports("modelgate.options", known["modelgate.options"], known)
    entries = {"modelgate.cli", "modelgate.action", "modelgate.driver", "modelgate.engine"}
    assert "modelgate.config" in below and not below & entries
    for entry in ("modelgate.cli", "modelgate.action"):
        assert "modelgate.options" in _imports(entry, known[entry], known)
