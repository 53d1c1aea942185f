"""The command as a user runs it: exit codes, output formats, the JSON contract."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from modelgate import __version__


def test_version_and_help_do_not_import_torch() -> None:
    code = (
        "import sys\nfrom modelgate.cli import main\nrc = main(['--version'])\n"
        "print('torch' in sys.modules, 'coremltools' in sys.modules, 'onnx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines() == [f"modelgate {__version__}", "False False False"]


def test_rules_and_rule_docs(run_cli) -> None:
    code, out, _ = run_cli("rules")
    assert code == 0
    assert out.splitlines()[0].startswith("MG001  oversized-linear")
    code, out, _ = run_cli("rule", "oversized-linear")
    assert code == 0
    assert out.startswith("# MG001 oversized-linear")
    for section in ("## What it does", "## Why is this bad?", "## Example", "## Use instead"):
        assert section in out
    code, _, err = run_cli("rule", "MG999")
    assert code == 2 and 'unknown rule "MG999"' in err


def test_schema_is_json(run_cli) -> None:
    code, out, _ = run_cli("schema")
    assert code == 0
    assert json.loads(out)["title"] == "modelgate configuration"


def test_usage_and_config_errors_exit_2(run_cli, tmp_path: Path) -> None:
    assert run_cli("check", "missing.pt")[0] == 2
    assert run_cli("check")[0] == 2
    (tmp_path / "m.pt").write_bytes(b"")
    (tmp_path / "modelgate.yaml").write_text("rules:\n  MG001: {nope: 1}\n")
    code, out, err = run_cli("check", "m.pt")
    assert code == 2
    assert 'unknown option "nope" for rule "MG001"' in err and out == ""
    code, _, err = run_cli("check", "m.pt", "--select", "MG404", "--config", "/dev/null")
    assert code == 2 and 'unknown rule "MG404"' in err


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file (0 bytes)"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12345\n",
         "git-lfs pointer, not the model: run git lfs pull"),
        (b"\x00\x01garbage" * 10, "not a model file"),
        (b"GGUF\x03\x00\x00\x00" + b"\x00" * 20, "a GGUF (llama.cpp) file"),
        (b"PK\x03\x04" + b"\x00" * 40, "broken zip archive"),
    ],
)  # fmt: skip
def test_unreadable_files_fail_with_one_line(
    run_cli, tmp_path: Path, data: bytes, reason: str
) -> None:
    (tmp_path / "model.pt").write_bytes(data)
    code, out, err = run_cli("check", "model.pt", "--format", "json")
    assert code == 1, err
    (model,) = json.loads(out)["models"]
    (finding,) = model["findings"]
    assert finding["rule"] == "MG902" and finding["name"] == "unreadable-model"
    assert reason in finding["message"] and "\n" not in finding["message"]


def test_hostile_pickle_is_reported_and_never_runs(run_cli, tmp_path: Path) -> None:
    """A checkpoint whose pickle would create a file when loaded: reported, and no file."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    data = pickle.dumps({"state_dict": {}, "hook": Payload()}, protocol=2)
    import modelfactory

    path = modelfactory.Factory(tmp_path).torch_zip(data, "ckpt.pt")
    # the payload is live: a plain pickle.loads in a child process does create the file
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.loads({data!r})"], check=True)
    assert marker.exists()
    marker.unlink()

    code, out, _ = run_cli("check", str(path), "--format", "json")
    assert code == 1
    (model,) = json.loads(out)["models"]
    rules = [(f["rule"], f["location"].get("member")) for f in model["findings"]]
    assert ("MG901", "archive/data.pkl") in rules
    assert any(
        "posix.system" in f["message"] or "os.system" in f["message"] for f in model["findings"]
    )
    assert not marker.exists()


def test_json_contract_and_text_output(run_cli, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import modelfactory

    f = modelfactory.Factory(tmp_path)
    good = f.pt2(modelfactory.build("clean").eval(), name="good.pt2")
    bad = f.pt2(modelfactory.build("dropout").train(), name="bad.pt2")
    code, out, _ = run_cli("check", good.name, bad.name, "--format", "json")
    assert code == 1
    doc = json.loads(out)
    assert doc["modelgate"] == __version__ and doc["passed"] is False
    good_m, bad_m = doc["models"]
    assert {k: good_m[k] for k in ("path", "format", "passed", "findings")} == {
        "path": "good.pt2", "format": "torch_export", "passed": True, "findings": [],
    }  # fmt: skip
    assert set(bad_m["findings"][0]) >= {"rule", "name", "severity", "message", "location", "fix"}
    assert isinstance(good_m["metrics"]["size_mb"], float)
    assert good_m["metrics"]["parameters"] == 224 + 16 + 90  # conv, bn affine, fc; no buffers

    code, out, _ = run_cli("check", good.name, bad.name)
    assert code == 1
    assert out.splitlines()[0].startswith("pass  good.pt2  (torch export")
    assert "FAIL  bad.pt2" in out
    assert out.rstrip().endswith("2 models checked: 1 failed; 2 error(s), 0 warning(s), 0 info")
    # severity lowered by flag-free means: --ignore turns the rule off, the gate passes
    assert run_cli("check", bad.name, "--ignore", "dropout-in-eval")[0] == 0
    # --fail-on warning makes warnings fail the gate
    dyn = f.pt2(modelfactory.build("data_dependent").eval(), shape=(2, 4), name="dyn.pt2")
    assert run_cli("check", dyn.name)[0] == 0
    assert run_cli("check", dyn.name, "--fail-on", "warning")[0] == 1


def test_folders_are_walked_in_a_stable_order(run_cli, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import modelfactory

    (tmp_path / "zoo" / "b").mkdir(parents=True)
    f = modelfactory.Factory(tmp_path / "zoo")
    model = modelfactory.build("clean").eval()
    f.state_dict(model, "b/z.pt")
    f.state_dict(model, "a.pth")
    (tmp_path / "zoo" / "notes.txt").write_text("not a model")
    code, out, _ = run_cli("check", "zoo", "--format", "json")
    assert code == 0
    assert [m["path"] for m in json.loads(out)["models"]] == ["zoo/a.pth", "zoo/b/z.pt"]


def test_input_shape_flag_and_unused_ignore_note(run_cli, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import modelfactory

    f = modelfactory.Factory(tmp_path)
    f.state_dict(modelfactory.build("clean").eval(), "m.pt")
    (tmp_path / "modelgate.yaml").write_text('ignore:\n  "*.pt": [MG004]\n')
    _, out, _ = run_cli("check", "m.pt", "--input-shape", "x=1x3x32x32", "--format", "json")
    doc = json.loads(out)
    assert doc["models"][0]["metrics"]["inputs"] == [
        {"name": "x", "shape": [1, 3, 32, 32], "dtype": "float32"}
    ]
    assert doc["notes"] == ['unused ignore: "*.pt" ignores MG004, which found nothing there']
