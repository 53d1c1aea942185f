"""The budget and baselines through the CLI, on figures that need no converter (file size,
parameters): exit codes, messages with value / limit / difference, growth against a
baseline, new findings, and what cannot be judged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

import modelfactory


@pytest.fixture
def two_versions(models) -> tuple[Path, Path]:
    """old.pt: the clean model; new.pt: the same with a float64 layer and a bigger head."""
    import torch

    old = models.state_dict(modelfactory.build("clean"), name="old.pt")
    bigger = modelfactory.build("flatten_head", pool=(4, 4), out=64)
    bigger.conv.double()  # a new MG007 finding in the new version
    new = models.state_dict(bigger, name="new.pt")
    assert torch.load(new)["conv.weight"].dtype == torch.float64
    return old, new


def _json(out: str) -> dict:
    return json.loads(out)["models"][0]


def test_size_budget_passes_and_fails(run_cli, models, tmp_path: Path) -> None:
    model = models.state_dict(modelfactory.build("clean"))
    size_mb = model.stat().st_size / 1e6
    (tmp_path / "modelgate.yaml").write_text("budget:\n  size_mb: 1\n  parameters: 1000\n")
    code, out, _ = run_cli("check", model, "--format", "json")
    assert code == 0
    result = _json(out)
    assert result["metrics"]["size_from"] == "file"
    assert result["metrics"]["budget"]["size_mb"]["passed"] is True
    assert result["metrics"]["budget"]["parameters"] == {
        "value": 330,
        "rule": "MG301",
        "unit": "",
        "limit": 1000,
        "difference": -670,
        "passed": True,
    }
    (tmp_path / "modelgate.yaml").write_text("budget:\n  size_mb: 0.001\n")
    code, out, _ = run_cli("check", model, "--format", "json")
    assert code == 1
    size_mb = round(size_mb, 3)
    (finding,) = _json(out)["findings"]
    assert (finding["rule"], finding["message"]) == (
        "MG301",
        f"size_mb {size_mb:.3g} MB (file) is over the budget of 0.001 MB by "
        f"{size_mb - 0.001:.3g} MB, +{(size_mb - 0.001) / 0.001:.0%}",
    )
    code, out, _ = run_cli("check", model)
    assert code == 1 and "error   MG301 size-budget" in out
    assert "  size_mb     " in out and "<= 0.001 OVER" in out  # the metrics table


def test_a_budget_that_cannot_be_judged_is_a_warning(run_cli, models, tmp_path: Path) -> None:
    model = models.state_dict(modelfactory.build("clean"))
    (tmp_path / "modelgate.yaml").write_text("budget:\n  drift: 0.01\n  macs: 1000\n")
    code, out, _ = run_cli("check", model, "--format", "json")
    assert code == 0
    found = {(f["rule"], f["message"]) for f in _json(out)["findings"]}
    assert (
        "MG304",
        "the budget for drift was not judged: not measured: a state dict holds "
        "weights only, no architecture to convert or run: add a build recipe (models: in "
        "modelgate.yaml) or save the model with torch.export.save (.pt2) or torch.jit.save",
    ) in found
    assert ("MG304", "the budget for macs was not judged: no graph of ops in this format") in found
    assert run_cli("check", model, "--fail-on", "warning")[0] == 1


def test_static_skips_conversions_and_what_only_they_measure(run_cli, models, tmp_path) -> None:
    """The fast pre-commit hook runs ``--static``: the config's conversions and the limits on
    what they measure are skipped; maxima on what the file shows still hold."""
    model = models.state_dict(modelfactory.build("clean"))
    (tmp_path / "modelgate.yaml").write_text(
        "convert: [coreml, onnx]\ncompress: palettize-4\n"
        "budget:\n  drift: 0.01\n  latency_ms: 1\n  size_mb: 0.000001\n"
        "  parameters: {max: 100, max_increase_pct: 5}\n"
    )
    code, out, _ = run_cli("check", model, "--static", "--format", "json")
    assert code == 1
    result = _json(out)
    assert "conversions" not in result["metrics"]
    assert list(result["metrics"]["budget"]) == ["parameters"]
    (finding,) = result["findings"]
    assert finding["rule"] == "MG301" and finding["message"].startswith("parameters 330 ")
    code, _, err = run_cli("check", model, "--static", "--convert", "onnx")
    assert code == 2 and "--static skips conversions" in err


def test_baseline_deltas_growth_limits_and_new_findings(run_cli, two_versions, tmp_path) -> None:
    old, new = two_versions
    (tmp_path / "modelgate.yaml").write_text(
        "budget:\n  parameters: {max_increase_pct: 10}\n  size_mb: {max: 10, max_increase: 1}\n"
    )
    code, out, _ = run_cli("check", new, "--baseline", old, "--format", "json")
    assert code == 1
    result = _json(out)
    base = result["metrics"]["baseline"]
    assert base["path"] == "old.pt" and base["metrics"]["parameters"] == 330
    params = result["metrics"]["parameters"]
    assert base["delta"]["parameters"] == params - 330
    assert base["delta"]["size_mb"] == pytest.approx(
        result["metrics"]["size_mb"] - base["metrics"]["size_mb"], abs=1e-6
    )
    growth = result["metrics"]["budget"]["parameters"]
    assert growth["passed"] is False and growth["baseline"] == 330
    assert result["metrics"]["budget"]["size_mb"]["passed"] is True
    rules = {f["rule"]: f for f in result["findings"]}
    assert params == 8480  # conv 224 + head 8 * 16 * 64 + 64
    assert rules["MG301"]["message"] == (
        "parameters grew by 8.2K (+2469.7%) against old.pt (330 -> 8.5K), more than the 10% allowed"
    )
    assert rules["MG301"]["new"] is True and rules["MG007"]["new"] is True
    assert {f["rule"] for f in base["new_findings"]} == {"MG007", "MG301"}
    # the same model as its own baseline: nothing new, no growth
    code, out, _ = run_cli("check", new, "--baseline", new, "--format", "json")
    result = _json(out)
    assert result["metrics"]["baseline"]["delta"]["parameters"] == 0
    assert all(f["new"] is False for f in result["findings"])
    assert result["metrics"]["budget"]["parameters"]["passed"] is True


def test_baseline_folders_and_usage_errors(run_cli, models, tmp_path: Path) -> None:
    (tmp_path / "new").mkdir()
    (tmp_path / "old").mkdir()
    models.state_dict(modelfactory.build("clean"), name="new/a.pt")
    models.state_dict(modelfactory.build("clean"), name="new/b.pt")
    models.state_dict(modelfactory.build("clean"), name="old/a.pt")
    code, out, _ = run_cli("check", "new", "--baseline", "old", "--format", "json")
    assert code == 0
    a, b = json.loads(out)["models"]
    assert a["metrics"]["baseline"]["path"] == "old/a.pt"
    assert "baseline" not in b["metrics"]
    assert b["notes"][-1] == f"no baseline: {Path('old', 'b.pt')} does not exist"
    code, _, err = run_cli("check", "new", "--baseline", "old/a.pt")
    assert code == 2 and "is a file, but 2 models are checked" in err


@pytest.mark.parametrize(
    ("args", "config", "message"),
    [
        (["--compress", "palettize-3"], "", "--compress palettize-3: unknown preset"),
        ([], "budget:\n  size: 3\n", 'unknown key "size" under budget'),
        ([], "compress: int2\n", "compress: 'int2' is not valid"),
        ([], "coreml: {group_size: 12}\n", "coreml.group_size: 12 is not one of"),
        ([], "measure: {samples: 0}\n", "measure.samples: 0 is less than the minimum of 1"),
    ],
)
def test_check_settings_errors_exit_2(run_cli, models, tmp_path, args, config, message) -> None:
    model = models.state_dict(modelfactory.build("clean"))
    (tmp_path / "modelgate.yaml").write_text(config)
    code, out, err = run_cli("check", model, *args)
    assert code == 2 and out == ""
    assert message in err


def test_models_that_cannot_run_say_why(run_cli, models) -> None:
    model = models.state_dict(modelfactory.build("clean"))
    code, out, _ = run_cli(
        "check", model, "--convert", "coreml", "--compress", "int8", "--format", "json"
    )
    assert code == 1  # asked-for checks that could not run fail the gate (MG106)
    assert [(f["rule"], f["key"]) for f in _json(out)["findings"]] == [
        ("MG106", "convert:coreml"),
        ("MG106", "compress:int8"),
    ]
    skipped = {s["rule"]: s["reason"] for s in _json(out)["skipped"]}
    reason = (
        "a state dict holds weights only, no architecture to convert or run: add a build "
        "recipe (models: in modelgate.yaml) or save the model with torch.export.save (.pt2) or "
        "torch.jit.save"
    )
    assert skipped["MG101"] == f"not converted: {reason}"
    assert skipped["MG105"] == f"not compressed: {reason}"


def test_unknown_input_shapes_say_how_to_give_them(run_cli, models) -> None:
    import torch

    scripted = torch.jit.script(modelfactory.build("clean").eval())  # records no input shapes
    path = models.path("scripted.pt")
    scripted.save(str(path))
    code, out, _ = run_cli("check", path, "--convert", "onnx", "--select", "MG102",
                           "--format", "json")  # fmt: skip
    assert code == 0
    skipped = {s["rule"]: s["reason"] for s in _json(out)["skipped"]}
    assert skipped["MG102"] == (
        "not converted: the model does not record its input shapes: give input shapes with "
        "--input-shape NAME=1x3x224x224 or inputs: in the config"
    )


def test_a_targets_own_size_over_its_budget(run_cli, models, tmp_path: Path) -> None:
    """``budget.targets``: the ONNX export's own size judged (MG301 naming the target), and
    the limit alone makes the export run; ``--convert onnx`` is asked too, as a user would."""
    pytest.importorskip("onnxruntime")
    model = models.torchscript(modelfactory.build("clean").eval())
    (tmp_path / "modelgate.yaml").write_text("budget:\n  targets:\n    onnx: {size_mb: 0.000001}\n")
    code, out, _ = run_cli("check", model, "--convert", "onnx", "--format", "json")
    assert code == 1
    result = _json(out)
    size_mb = result["metrics"]["conversions"]["onnx"]["size_mb"]
    assert size_mb > 0.001
    over = size_mb - 0.000001
    assert [(f["rule"], f["key"], f["message"]) for f in result["findings"]] == [
        (
            "MG301",
            "budget:onnx.size_mb",
            f"onnx size_mb {size_mb:.3g} MB (ONNX) is over the budget of 1e-06 MB by "
            f"{over:.3g} MB, +{over / 0.000001:.0%}",
        )
    ]
    assert result["metrics"]["budget"]["onnx.size_mb"] == {
        "value": size_mb,
        "rule": "MG301",
        "unit": "MB",
        "measured": "ONNX",
        "limit": 0.000001,
        "difference": pytest.approx(over, rel=1e-5),
        "passed": False,
    }
    code, out, _ = run_cli("check", model)  # no --convert: the budget converts it
    assert code == 1 and "error   MG301 size-budget" in out
    assert "onnx.size_mb" in out and "<= 1e-06 OVER" in out  # the metrics table
