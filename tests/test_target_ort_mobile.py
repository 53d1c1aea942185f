"""The ort-mobile target against ONNX Runtime's own mobile usability tool, both ways.

ONNX files built here: a CNN with HardSigmoid (NNAPI and the Core ML NeuralNetwork provider
lack it, Core ML MLProgram lacks Flatten: 5/6 nodes each, in two partitions), the same with a
dynamic batch (every node lost to the dynamic shape), and a conv + relu that every provider
takes whole. modelgate's partition counts must be what
``python -m onnxruntime.tools.check_onnx_model_mobile_usability`` prints for each provider,
and MG110 must fire exactly where that tool's figures miss ONNX Runtime's own bar.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
np = pytest.importorskip("numpy")

from onnx import TensorProto, helper, numpy_helper, save  # noqa: E402

EPS = ("NNAPI", "CoreML MLProgram", "CoreML NeuralNetwork")
_TOOL_LINE = re.compile(
    r"(\d+) partitions with a total of (\d+)/(\d+) nodes can be handled by the (.+) EP\."
)


def _cnn(path: Path, batch: int | str = 1, head: bool = True) -> Path:
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["y" if not head else "r0"], name="relu0"),
    ]
    out = [batch, 8, 16, 16]
    if head:
        weights += [
            numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "fw"),
            numpy_helper.from_array(np.zeros(4, np.float32), "fb"),
        ]
        nodes += [
            helper.make_node("HardSigmoid", ["r0"], ["h"], name="hsig"),
            helper.make_node("GlobalAveragePool", ["h"], ["p"], name="pool"),
            helper.make_node("Flatten", ["p"], ["f"], name="flat"),
            helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="fc"),
        ]
        out = [batch, 4]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], weights,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch = pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("ort_mobile")
    torch.manual_seed(0)
    linear = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    program = torch.export.export(linear.eval(), (torch.randn(1, 8),))
    torch.export.save(program, root / "linear.pt2")
    return {
        "cnn": _cnn(root / "cnn.onnx"),
        "dyn": _cnn(root / "dyn.onnx", batch="N"),
        "plain": _cnn(root / "plain.onnx", head=False),
        "linear": root / "linear.pt2",
    }


@pytest.fixture(scope="module")
def report(files: dict[str, Path]) -> dict[str, dict]:
    root = files["cnn"].parent
    done = subprocess.run(
        [sys.executable, "-m", "modelgate", "check", "cnn.onnx", "dyn.onnx", "plain.onnx",
         "linear.pt2",
         "--target", "ort-mobile", "--convert", "ort-mobile", "--format", "json", "-j", "1"],
        cwd=root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]  # MG110 is a warning
    return {m["path"].rsplit(".", 1)[0]: m for m in json.loads(done.stdout)["models"]}


def _tool(path: Path) -> dict[str, tuple[int, int, int]]:
    """The tool's first verdict per provider: (partitions, supported nodes, nodes)."""
    done = subprocess.run(
        [sys.executable, "-m", "onnxruntime.tools.check_onnx_model_mobile_usability",
         "--log_level", "debug", str(path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out: dict[str, tuple[int, int, int]] = {}
    for match in _TOOL_LINE.finditer(done.stdout + done.stderr):
        out.setdefault(match[4], (int(match[1]), int(match[2]), int(match[3])))
    return out


@pytest.mark.parametrize("name", ["cnn", "dyn", "plain"])
def test_partitions_are_the_tools_own(report, files, name: str) -> None:
    theirs = _tool(files[name])
    ours = report[name]["metrics"]["conversions"]["ort-mobile"]["eps"]
    assert set(theirs) == set(EPS) == set(ours)
    for ep in EPS:
        entry = ours[ep]
        assert (entry["partitions"], entry["supported_nodes"], entry["nodes"]) == theirs[ep], ep


def test_mg110_fires_where_the_tools_figures_miss_its_bar(report) -> None:
    assert report["cnn"]["findings"] == [] and report["plain"]["findings"] == []
    found = {f["key"]: f["message"] for f in report["dyn"]["findings"]}
    assert set(found) == {f"ort-mobile:{ep}" for ep in EPS}
    assert found["ort-mobile:NNAPI"] == (
        "the NNAPI execution provider takes 0/6 nodes (0%) in 0 partition(s); unsupported: "
        "HardSigmoid (hsig); 6 node(s) lost to dynamic shapes (with fixed shapes: 5/6 in 2 "
        "partition(s))"
    )
    assert "Flatten (flat)" in found["ort-mobile:CoreML MLProgram"]


def test_the_matrix_row_summarises_each_provider(report) -> None:
    (row,) = report["cnn"]["metrics"]["targets"]
    assert row["target"] == "ort-mobile" and row["result"] == "ok"
    assert row["detail"] == (
        "NNAPI 5/6 in 2 partitions; CoreML MLProgram 5/6 in 2 partitions; "
        "CoreML NeuralNetwork 5/6 in 2 partitions"
    )
    (row,) = report["plain"]["metrics"]["targets"]
    assert row["detail"] == "NNAPI 2/2; CoreML MLProgram 2/2; CoreML NeuralNetwork 2/2"


def test_a_torch_model_is_exported_then_partitioned(report) -> None:
    model = report["linear"]
    result = model["metrics"]["conversions"]["ort-mobile"]
    assert result["ok"] is True and result["exporter"] == "torch.onnx (dynamo exporter)"
    assert set(result["eps"]) == set(EPS)
    assert all(entry["nodes"] >= 3 for entry in result["eps"].values())  # two Gemms and a Relu
    assert model["findings"] == []
