"""A deployment target is one module in ``targets/`` and one registry line.

A toy target (tests/toy_target.py) registered here, and nothing else changed, must appear in
``--target`` / ``--convert``, be judged by MG003, run its conversion in a child, and show in
the JSON report, the text table and the Markdown summary; its failures are MG107's. The
engine, the pipeline, the rules and the reporters name no target themselves.
"""

from __future__ import annotations

import ast
import json
import types
from pathlib import Path

import pytest

from modelgate.target import TargetError, TargetRegistry
from modelgate.targets import REGISTRY

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def toy():
    import toy_target

    target = REGISTRY.register(toy_target)
    try:
        yield target
    finally:
        if "toy" in REGISTRY:
            REGISTRY.unregister("toy")


def _linear():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def test_the_registry_holds_core_ml_and_onnx() -> None:
    assert REGISTRY.names() == ("coreml", "onnx", "executorch", "litert", "ort-mobile")
    assert REGISTRY.defaults() == ("coreml", "onnx")
    assert REGISTRY.preset_owner("palettize-4").name == "coreml"
    assert REGISTRY.preset_owner("bogus") is None


def _module(**attrs) -> types.ModuleType:
    module = types.ModuleType("fake_target")
    base = dict(NAME="fake", LABEL="Fake", EXTRA="fake", REQUIRES=("torch",),
                CONVERSION="Fake conversion", CONVERTING="converting to Fake",
                op_verdict=lambda *a: None, step=lambda *a: None)  # fmt: skip
    for key, value in {**base, **attrs}.items():
        if value is not None:
            setattr(module, key, value)
    return module


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"NAME": "coreml"}, "duplicate target coreml"),
        ({"NAME": "Not-A-Name"}, "NAME must be lower-case"),
        ({"CONVERTING": None}, "declares no CONVERTING"),
        ({"step": None}, "no step()"),
        ({"FILE_FORMATS": {"fake": "the fake file"}}, "FILE_FORMATS without file_step()"),
        ({"PRESETS": {"int8": object()}}, "preset int8 of fake is coreml's already"),
    ],
)
def test_the_registry_refuses_a_malformed_target(attrs: dict, message: str) -> None:
    from modelgate import targets

    registry = TargetRegistry([targets.coreml, targets.onnx])
    with pytest.raises(TargetError, match=message):
        registry.register(_module(**attrs))
    assert registry.names() == ("coreml", "onnx")


def test_a_registered_target_is_in_the_cli_and_the_schema(toy, run_cli) -> None:
    from modelgate import config as cfg

    code, out, _ = run_cli("check", "--help")
    assert code == 0 and "{coreml,onnx,executorch,litert,ort-mobile,toy}" in out
    schema = cfg.build_schema()["properties"]
    assert "toy" in schema["targets"]["items"]["enum"]
    assert "toy" in schema["convert"]["oneOf"][0]["enum"]
    assert cfg.from_dict({"targets": ["toy"]}).targets == ("toy",)
    assert cfg.Config().targets == ("coreml", "onnx")  # added targets are not on by default
    REGISTRY.unregister("toy")
    code, _, err = run_cli("check", "x.pt2", "--target", "toy")
    assert code == 2 and "invalid choice: 'toy'" in err


@pytest.mark.torch
def test_a_toy_target_converts_and_reports_end_to_end(toy, models, run_cli) -> None:
    path = models.pt2(_linear(), shape=(1, 8), name="linear.pt2")
    code, out, err = run_cli("check", path, "--target", "toy", "--convert", "toy",
                             "--format", "json")  # fmt: skip
    assert code == 0, err
    model = json.loads(out)["models"][0]
    metrics = model["metrics"]
    toy_result = metrics["conversions"]["toy"]
    assert toy_result["ok"] is True and toy_result["size_mb"] > 0
    assert metrics["size_from"] == "Toy" and metrics["size_mb"] == toy_result["size_mb"]
    assert metrics["drift_detail"]["of"] == "Toy conversion (FP16 weights)"
    assert 0 < metrics["drift"] < 1e-2  # float16 weights: a small, real drift
    assert not model["findings"]
    code, out, _ = run_cli("check", path, "--target", "toy", "--convert", "toy")
    assert code == 0
    size_row = next(line for line in out.splitlines() if line.strip().startswith("size_mb"))
    assert "Toy" in size_row
    matrix = [
        line.split() for line in out.splitlines() if line.strip().startswith(("target", "toy "))
    ]
    assert matrix[0] == ["target", "result", "size_mb", "latency_ms", "drift", "detail"]
    assert matrix[1][:2] == ["toy", "ok"] and matrix[1][3] == "-"  # no runtime of its own


@pytest.mark.torch
def test_a_toy_target_failure_is_mg107_and_mg003_says_where(toy, models, run_cli) -> None:
    import modelfactory

    path = models.pt2(modelfactory.build("clean").eval(), name="clean.pt2")
    code, out, _ = run_cli("check", path, "--target", "toy", "--convert", "toy",
                           "--format", "json")  # fmt: skip
    assert code == 1
    findings = json.loads(out)["models"][0]["findings"]
    by_rule = {f["rule"]: f for f in findings}
    assert set(by_rule) == {"MG003", "MG107"}, findings
    assert by_rule["MG107"]["message"] == (
        "Toy conversion failed at relu: ToyError: no kernel for 'relu'"
    )
    assert by_rule["MG107"]["location"]["op"] == "aten::relu"
    assert by_rule["MG003"]["message"].endswith(
        "will not convert to Toy: Toy has no kernel for 'relu'; the Toy conversion failed on it"
    )
    assert by_rule["MG003"]["fix"] == "use ops the Toy runtime has kernels for"
    code, out, _ = run_cli("check", path, "--target", "toy", "--convert", "toy",
                           "--format", "markdown")  # fmt: skip
    assert code == 1
    assert "MG107" in out and "will not convert to Toy" in out


# the modules that run every target and must name none (targets/ and their helpers may)
_NEUTRAL = [
    "modelgate/engine.py", "modelgate/driver.py", "modelgate/parallel.py",
    "modelgate/budget.py", "modelgate/baseline.py", "modelgate/verdict.py",
    "modelgate/report.py", "modelgate/options.py", "modelgate/config.py", "modelgate/cli.py",
    "modelgate/rule.py", "modelgate/conversion_findings.py",
    "modelgate/checks/pipeline.py", "modelgate/checks/plan.py", "modelgate/checks/figures.py",
    "modelgate/checks/steps.py", "modelgate/checks/settings.py",
]  # fmt: skip
_NEUTRAL += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "rules").glob("mg*.py"))
_NEUTRAL += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "modelgate").glob("action*.py"))
_NEUTRAL += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "modelgate/reporters").glob("*.py"))
# what only a target's own module imports: its converter's helpers
_HELPERS = {
    "modelgate.checks.coreml", "modelgate.checks.compress", "modelgate.checks.weightmap",
    "modelgate.checks.onnx_export", "modelgate.checks.onnx_inputs", "modelgate.onnx_support",
}  # fmt: skip


def _named(path: Path) -> tuple[list[str], set[str]]:
    """(string constants that are a target's name or label, helper modules imported). Names
    that are also file formats ("onnx") are the loaders' and not counted; messages that cite
    a toolchain ("coremltools cannot convert half precision") are facts, not branches."""
    names = {t.name for t in REGISTRY} - {"onnx"}
    labels = {t.label for t in REGISTRY} | {t.runtime for t in REGISTRY if t.runtime}
    tree = ast.parse(path.read_text("utf-8"))
    constants = [
        n.value for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and n.value in names | labels
    ]  # fmt: skip
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    return constants, imported & _HELPERS


@pytest.mark.parametrize("path", _NEUTRAL)
def test_no_target_is_named_outside_targets(path: str) -> None:
    assert _named(ROOT / path) == ([], set())


def test_the_name_check_sees_a_target_named() -> None:
    constants, helpers = _named(ROOT / "targets/coreml.py")
    assert "coreml" in constants and "Core ML" in constants
    assert helpers == {"modelgate.checks.coreml", "modelgate.checks.compress",
                       "modelgate.checks.weightmap"}  # fmt: skip
    assert "modelgate.onnx_support" in _named(ROOT / "targets/onnx.py")[1]


def test_modelgate_targets_lists_each_with_what_it_needs(toy, run_cli) -> None:
    missing = REGISTRY.register(_module(NAME="fake", REQUIRES=("no_such_package_mg",)))
    try:
        code, out, _ = run_cli("targets")
    finally:
        REGISTRY.unregister(missing.name)
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert code == 0
    assert list(lines) == ["coreml", "onnx", "executorch", "litert", "ort-mobile", "toy", "fake"]
    assert "default" in lines["coreml"] and "compress: palettize-8" in lines["coreml"]
    assert lines["toy"].split()[2] == "opt-in"
    assert lines["fake"].endswith("needs no_such_package_mg: pip install 'modelgate-lint[fake]'")


def test_a_targets_one_time_setup_runs_once_per_worker(toy, monkeypatch) -> None:
    """ExecuTorch's XNNPACK patterns cost seconds: built once in the worker, then inherited by
    every step forked from it; a failing setup is left for the step to report."""
    from modelgate.checks import isolate, pipeline
    from modelgate.checks.settings import CheckSettings
    from modelgate.checks.steps import Job

    calls: list[str] = []
    monkeypatch.setattr(toy.module, "warm", lambda: calls.append("warm"), raising=False)
    monkeypatch.setattr(pipeline, "_WARMED", set())
    monkeypatch.setattr(isolate, "preload", lambda modules: [])
    job = Job(path="m.pt2", format="torch_export", target="toy", inputs=(),
              settings=CheckSettings())  # fmt: skip
    assert pipeline._preload("toy", job) is None and pipeline._preload("toy", job) is None
    assert calls == ["warm"]

    def broken() -> None:
        raise RuntimeError("no patterns today")

    monkeypatch.setattr(toy.module, "warm", broken)
    monkeypatch.setattr(pipeline, "_WARMED", set())
    assert pipeline._preload("toy", job) is None  # the step will say what is wrong


def test_every_targets_toolchain_is_installed_where_all_is() -> None:
    """`make test` installs `.[all]`: each target's packages must be there, so the target
    tests never skip in CI (they run the toolchains in child processes, which fail loudly on
    a toolchain that installs and then does not import, like ExecuTorch 1.3.1 beside torch
    2.13)."""
    import importlib.util

    missing = sorted({p for t in REGISTRY for p in t.requires if not importlib.util.find_spec(p)})
    assert missing == []


def test_the_extras_install_together_without_a_broken_requirement() -> None:
    """`.[all]` brings coremltools, ExecuTorch and LiteRT: their requirements must hold
    together (litert-converter's xdsl wants typing-extensions<4.13, the cattrs coremltools
    pulls wants >=4.14 from 25.3 on: the litert extra caps cattrs)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
