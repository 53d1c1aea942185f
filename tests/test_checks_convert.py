"""Real conversions, compressions and measurements on small generated models.

One ``modelgate check`` run (two worker processes) covers every preset, both converters,
both PyTorch formats, an ONNX file, models that fail to convert, a near-constant model and
a baseline; the tests read its JSON report. Crashes and hangs of a converter are checked
in-process with the converter replaced, plus one real conversion under a tiny time limit.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("coremltools")
pytest.importorskip("onnxruntime")

import background
import modelfactory

from modelgate import config as cfg
from modelgate import engine
from modelgate.checks import pipeline

pytestmark = pytest.mark.slow

PRESETS = ["palettize-4", "palettize-8", "palettize-6", "int8", "int4"]
CONFIG = f"""
convert: [coreml, onnx]
compress: [{", ".join(PRESETS)}]
measure: {{samples: 4, warmup: 1, runs: 3}}
budget:
  size_mb: 10
  drift: 0.001
  latency_ms: {{max: 10000, max_increase_pct: 100000}}
"""


def _onnx_gemm(factory: modelfactory.Factory) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32), "w"
    )
    node = helper.make_node("Gemm", ["x", "w"], ["y"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])
    path = factory.onnx([node], [x], [y], [weight], name="new/gemm.onnx")
    model = onnx.load(str(path))
    model.ir_version = 9  # what this onnxruntime reads (onnx writes its newest)
    onnx.save(model, str(path))
    return path


def start_background(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build the models at the start of the session; the two ``modelgate check`` runs below
    go to the background (tests/background.py) until the fixture and test that read them."""
    root = _AHEAD["folder"] = _build(tmp_path_factory)
    background.add(REPORT, [_report_run(root)])
    slow = _AHEAD["time_limit"] = tmp_path_factory.mktemp("time-limit")
    background.add(TIME_LIMIT, [_time_limit_run(root, slow)])


_AHEAD: dict[str, Path] = {}
REPORT, TIME_LIMIT = f"{__name__}.report", f"{__name__}.time_limit"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _AHEAD.get("folder") or _build(tmp_path_factory)


def _build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("checks")
    (root / "new").mkdir()
    (root / "old").mkdir()
    f = modelfactory.Factory(root)
    compressible = modelfactory.build("compressible").eval()
    f.pt2(compressible, name="new/compressible.pt2")
    f.torchscript(compressible, name="new/compressible.ts.pt")
    f.pt2(modelfactory.build("compressible", head=64).eval(), name="old/compressible.pt2")
    two = modelfactory.build("two_unsupported").eval()
    f.torchscript(two, shape=(1, 8), name="new/two.ts.pt")
    f.pt2(two, shape=(1, 8), name="new/two.pt2")
    f.pt2(modelfactory.build("constant").eval(), name="new/constant.pt2")
    _onnx_gemm(f)
    (root / "modelgate.yaml").write_text(CONFIG)
    return root


def _modelgate(cwd: Path, *args: str) -> background.Command:
    env = {**background.environ(), "MODELGATE_NO_PROGRESS": "1"}
    return background.Command(
        [sys.executable, "-m", "modelgate", "check", *args], cwd=cwd, env=env, timeout=600
    )


def _report_run(folder: Path) -> background.Command:
    return _modelgate(folder, "new", "--baseline", "old", "--format", "json", "-j", "2")


@pytest.fixture(scope="module")
def report(folder: Path) -> dict[str, dict]:
    (done,) = background.run(REPORT, [_report_run(folder)])
    assert done.returncode == 1, done.stderr[-3000:]
    return {m["path"].split("/", 1)[1]: m for m in json.loads(done.stdout)["models"]}


def _findings(model: dict, rule: str) -> list[dict]:
    return [f for f in model["findings"] if f["rule"] == rule]


@pytest.mark.parametrize("name", ["compressible.pt2", "compressible.ts.pt"])
def test_conversions_and_every_preset(report, name) -> None:
    metrics = report[name]["metrics"]
    coreml = metrics["conversions"]["coreml"]
    assert coreml["ok"] is True
    assert (coreml["deployment_target"], coreml["compute_precision"]) == ("iOS18", "float16")
    assert coreml["drift"] < 1e-2  # FP16 weights
    onnx = metrics["conversions"]["onnx"]
    assert onnx["ok"] is True and onnx["checker"] == "passed (full check)"
    assert onnx["drift"] < 1e-4 and onnx["opset"] >= 17
    compression = metrics["compression"]
    assert list(compression) == PRESETS
    for preset, result in compression.items():
        assert result["ok"] is True, (preset, result)
        assert result["size_mb"] < coreml["size_mb"], preset
        assert result["compressed"] >= 2, preset
        assert 0 < result["drift"] < 0.5 and 0 <= result["top1_agreement"] <= 1, preset
    assert compression["palettize-4"]["size_mb"] < compression["palettize-8"]["size_mb"]
    assert compression["int4"]["size_mb"] < compression["int8"]["size_mb"]
    assert compression["palettize-8"]["drift"] < compression["palettize-4"]["drift"]
    assert compression["int8"]["drift"] < compression["int4"]["drift"]
    # what the budget judges: the first preset, ONNX Runtime's latency
    assert metrics["size_mb"] == compression["palettize-4"]["size_mb"]
    assert metrics["size_from"] == "Core ML, palettize-4"
    assert metrics["drift"] == compression["palettize-4"]["drift"]
    assert metrics["drift_detail"]["method"].startswith("Core ML weights (decompressed")
    assert metrics["drift_detail"]["unmapped"] == []
    assert metrics["latency_ms"] > 0 and metrics["latency"]["runtime"].startswith("ONNX Runtime")
    assert metrics["latency"]["device"].startswith("this machine's CPU")
    assert metrics["macs"] > 0 and metrics["peak_activation_mb"] > 0


@pytest.mark.parametrize("name", ["compressible.pt2", "compressible.ts.pt"])
def test_skipped_layers_are_findings_with_the_reason(report, name) -> None:
    model = report[name]
    skipped = {
        (f["message"].split(" ", 1)[0], f["location"].get("tensor")): f
        for f in _findings(model, "MG103")
    }
    assert set(skipped) == {("palettize-4", "fc.weight"), ("int4", "stem.weight")}
    fc = skipped[("palettize-4", "fc.weight")]
    assert fc["message"].startswith("palettize-4 left fc.weight (100x64, 6.4K weights, ")
    assert "not divisible by channel_group_size (16)" in fc["message"]
    assert fc["location"]["module"] == "fc"
    assert fc["fix"].startswith("set coreml.group_size: 4 (4 divides its 100 output channels)")
    stem = skipped[("int4", "stem.weight")]
    assert "is not divisible by block size 32" in stem["message"]  # BN folded in: found by value
    assert stem["fix"] == "give this op its own config in coremltools (op_name_configs)"
    if name.endswith(".pt2"):
        assert fc["location"]["source"]["file"].endswith("torchmodels.py")


def test_drift_budget_fails_with_value_limit_and_difference(report) -> None:
    model = report["compressible.pt2"]
    (finding,) = _findings(model, "MG303")
    drift = model["metrics"]["drift"]
    assert finding["message"].startswith(
        f"drift {drift:.3g} (Core ML, palettize-4) is over the budget of 0.001 by "
    )
    entry = model["metrics"]["budget"]["drift"]
    assert entry["passed"] is False and entry["difference"] == pytest.approx(drift - 0.001)
    assert model["metrics"]["budget"]["size_mb"]["passed"] is True
    assert model["passed"] is False


def test_failed_conversions_name_the_op(report) -> None:
    for name, coreml_error in (
        (
            "two.ts.pt",
            "NotImplementedError: PyTorch convert function for op 'kthvalue' not implemented.",
        ),
        ("two.pt2", "NotImplementedError: Unsupported fx node kthvalue, kind kthvalue"),
    ):
        model = report[name]
        (mg101,) = _findings(model, "MG101")
        assert mg101["message"].startswith("Core ML conversion failed at kthvalue")
        assert mg101["message"].endswith(coreml_error)
        assert mg101["location"]["op"] == "aten::kthvalue"
        assert mg101["location"]["source"]["line"] > 0
        (mg102,) = _findings(model, "MG102")
        assert mg102["message"].startswith("ONNX export failed at kthvalue: ")
        assert "kthvalue" in mg102["message"].split(": ", 1)[1]
        assert model["metrics"]["size_from"] == "file"
        assert not _findings(model, "MG105")  # nothing to compress: not a second finding


def test_near_constant_outputs_are_said_not_measured(report) -> None:
    model = report["constant.pt2"]
    metrics = model["metrics"]
    assert metrics["drift"] is None
    assert "near-constant" in metrics["not_measured"]["drift"]
    assert metrics["compression"]["palettize-4"]["drift"] is None
    (mg104,) = [f for f in _findings(model, "MG104") if f["message"].startswith("drift")]
    assert mg104["message"].startswith(
        "drift is not reported: the original model's output is near-constant"
    )
    (mg304,) = _findings(model, "MG304")
    assert mg304["message"].startswith("the budget for drift was not judged: not meaningful")
    assert not _findings(model, "MG303")


def test_an_onnx_file_is_checked_and_timed(report) -> None:
    model = report["gemm.onnx"]
    metrics = model["metrics"]
    assert metrics["conversions"]["onnx"]["ok"] is True
    assert metrics["latency"]["runtime"].startswith("ONNX Runtime")
    skipped = {s["rule"]: s["reason"] for s in model["skipped"]}
    assert skipped["MG101"].startswith("not converted: Core ML has no ONNX frontend")
    assert skipped["MG105"].startswith("not compressed: Core ML has no ONNX frontend")


def test_baseline_deltas_cover_the_measured_figures(report) -> None:
    metrics = report["compressible.pt2"]["metrics"]
    base = metrics["baseline"]
    assert base["path"] == "old/compressible.pt2"
    assert base["delta"]["parameters"] == (64 * 100 + 100) - (64 * 64 + 64)
    for key in ("size_mb", "latency_ms", "drift", "macs", "file_mb"):
        assert key in base["delta"], key
        assert base["delta"][key] == pytest.approx(metrics[key] - base["metrics"][key], abs=1e-5)
    assert metrics["budget"]["latency_ms"]["baseline"] == base["metrics"]["latency_ms"]
    assert "baseline" not in report["compressible.ts.pt"]["metrics"]  # no old version of it


def _time_limit_run(folder: Path, cwd: Path) -> background.Command:
    (cwd / "modelgate.yaml").write_text("isolation: {timeout: 0.2}\n")
    model = folder / "new" / "compressible.pt2"
    return _modelgate(cwd, str(model), "--convert", "coreml", "--format", "json")


def test_a_real_conversion_over_its_time_limit(folder: Path, tmp_path: Path) -> None:
    cwd = _AHEAD.get("time_limit", tmp_path)  # the folder it ran in, if it started ahead
    (done,) = background.run(TIME_LIMIT, [_time_limit_run(folder, cwd)])
    assert done.returncode == 1, done.stderr[-2000:]
    (result,) = json.loads(done.stdout)["models"]
    (mg101,) = _findings(result, "MG101")
    assert mg101["message"].startswith("Core ML conversion timed out while ")
    assert mg101["message"].endswith(": timed out after 0.2 s")
    assert result["metrics"]["parameters"] > 0 and result["metrics"]["size_from"] == "file"


# ---------------------------------------------------------------------------------------------
# a converter that crashes, hangs or eats memory, in-process with the converter replaced
# ---------------------------------------------------------------------------------------------


def _abort(*args: object, **kwargs: object) -> None:
    faulthandler.disable()  # the crash is the test: keep pytest's traceback dump out of the log
    os.abort()


def _hang(*args: object, **kwargs: object) -> None:
    import time

    time.sleep(120)


def _hog(*args: object, **kwargs: object) -> None:
    hog = [bytearray(256 * 1024 * 1024) for _ in range(64)]
    print(len(hog))


def _vm_mb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) // 1024
    return 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and RLIMIT_AS")
@pytest.mark.parametrize(
    ("converter", "limits", "says"),
    [
        (
            _abort,
            {},
            "Core ML conversion crashed while converting to Core ML (iOS16, float16): "
            "crashed (SIGABRT)",
        ),
        (
            _hang,
            {"timeout": 8},  # the real ONNX export after it takes about 3 s here
            "Core ML conversion timed out while converting to Core ML "
            "(iOS16, float16): timed out after 8 s",
        ),
        (
            _hog,
            {"memory_mb": "vm+1024"},
            "Core ML conversion ran out of memory while converting "
            "to Core ML (iOS16, float16): ran out of memory",
        ),
    ],
    ids=["crash", "hang", "memory"],
)
def test_a_converter_failure_is_isolated(folder, monkeypatch, converter, limits, says) -> None:
    from modelgate.checks import coreml

    monkeypatch.setattr(coreml, "convert", converter)
    monkeypatch.setattr(pipeline, "_preload", lambda target, job: None)  # no import needed
    if limits.get("memory_mb") == "vm+1024":
        limits = {"memory_mb": _vm_mb() + 1024}
    config = cfg.from_dict(
        {
            "convert": ["coreml", "onnx"],
            "measure": {"samples": 2, "runs": 2, "warmup": 0},
            "isolation": limits,
        }
    )
    result = engine.check_file(str(folder / "new" / "compressible.pt2"), config)
    (mg101,) = [f for f in result.findings if f.rule == "MG101"]
    assert mg101.message.startswith(says)
    # the rest of the report survives: the ONNX step after it, the latency before it
    assert result.metrics["conversions"]["onnx"]["ok"] is True
    assert result.metrics["latency_ms"] > 0
    assert not [f for f in result.findings if f.rule == "MG102"]
