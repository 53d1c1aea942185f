"""The ort-mobile target against ONNX Runtime's own mobile usability tool, both ways.

ONNX files built here: a CNN with HardSigmoid (NNAPI and the Core ML NeuralNetwork provider
lack it, Core ML MLProgram lacks Flatten: 5/6 nodes each, in two partitions), the same with a
dynamic batch (every node lost to the dynamic shape), and a conv + relu that every provider
takes whole. And the edge targets' five torch models (``torchmodels.EDGE``: a CNN with
hardswish, a transformer encoder with a causal mask, sort / topk / cumsum, an FFT, the CNN
with a dynamic batch), which modelgate exports to ONNX first. One ``modelgate check`` takes
them all; one child process runs the tool on the same files (the torch models exported as
modelgate exports them): what ``python -m onnxruntime.tools.check_onnx_model_mobile_usability``
logs per provider (partitions, supported / total nodes, partition sizes, unsupported ops and
nodes, nodes lost to dynamic shapes, the verdict with the shapes fixed) must be modelgate's
figures, and MG110 must fire exactly where those figures miss ONNX Runtime's own bar.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import background
import pytest

pytest.importorskip("onnxruntime")
np = pytest.importorskip("numpy")

from onnx import TensorProto, helper, numpy_helper, save  # noqa: E402

EPS = ("NNAPI", "CoreML MLProgram", "CoreML NeuralNetwork")
ONNX_FILES = ("cnn.onnx", "dyn.onnx", "plain.onnx")
TORCH_FILES = ("cnn.pt2", "encoder.pt2", "sorts.pt2", "spectrum.pt2", "dynamic.pt2")
_AHEAD: dict[str, Path] = {}
RUNS = f"{__name__}.runs"  # modelgate's check and the bare tool, side by side

# the tool (check_usability's analyze_model, its log at debug level) on every file; a torch
# model exported first, as modelgate's step exports it
BARE_SCRIPT = textwrap.dedent(
    """
    import io, json, logging, pathlib, sys, tempfile, warnings
    warnings.simplefilter("ignore")
    from onnxruntime.tools.mobile_helpers import usability_checker

    scratch = tempfile.TemporaryDirectory()  # not the models' folder: other modules share it
    out, folder = {}, pathlib.Path(scratch.name)
    for path in sys.argv[1:]:
        model = pathlib.Path(path)
        if path.endswith(".pt2"):
            import torch
            model = folder / (path + ".onnx")
            torch.onnx.export(torch.export.load(path), (), str(model), dynamo=True)
        text = io.StringIO()
        logger = logging.getLogger(f"check_usability.{path}")
        logger.propagate = False
        logger.addHandler(logging.StreamHandler(text))
        logger.setLevel(logging.DEBUG)
        usability_checker.analyze_model(model, skip_optimize=False, logger=logger)
        out[path] = text.getvalue()
    print(json.dumps(out))
    """
)
_VERDICT = re.compile(
    r"(\d+) partitions with a total of (\d+)/(\d+) nodes can be handled by the (.+) EP\."
)
_FIXED = "Partition information if the model was updated to make the shapes fixed:"


def _analysis(text: str) -> dict:
    """One ``print_analysis`` block of the tool's log, in modelgate's terms."""
    verdict = _VERDICT.search(text)
    assert verdict, text

    def number(pattern: str) -> int:
        found = re.search(pattern + r"=(\d+)", text)
        return int(found[1]) if found else 0

    sizes = re.search(r"\tPartition sizes: \[(.*)\]", text)
    ops = re.search(r"\tUnsupported ops: (.*)", text)
    suitability = re.search(r"Model should perform well with .+?: (\w+)$", text, re.M)
    return {
        "nodes": int(verdict[3]),
        "supported_nodes": int(verdict[2]),
        "partitions": int(verdict[1]),
        "partition_sizes": [int(n) for n in sizes[1].split(", ")] if sizes else [],
        "unsupported_ops": ops[1].split(",") if ops else [],
        "unsupported_node_count": number("Unsupported nodes due to operator"),
        "dynamic_shape_nodes": number("Unsupported nodes due to input having a dynamic shape"),
        "rank_nodes": number("Unsupported nodes due to rank of input data"),
        "suitability": suitability[1] if suitability else None,
    }


def _tool(log: str) -> dict[str, dict]:
    """The tool's log, per provider: its verdict, and the one with fixed shapes if it ran."""
    out = {}
    for block in log.split("================"):
        if not _VERDICT.search(block):
            continue
        as_is, _, fixed = block.partition(_FIXED)
        entry = _analysis(as_is)
        if fixed:
            entry["with_fixed_shapes"] = _analysis(fixed)
        out[_VERDICT.search(as_is)[4]] = entry
    return out


def _ours(entry: dict) -> dict:
    """modelgate's entry in the tool's terms: its unsupported nodes counted."""
    out = {k: v for k, v in entry.items() if k not in ("unsupported_nodes", "with_fixed_shapes")}
    out["unsupported_node_count"] = len(entry["unsupported_nodes"])
    if "with_fixed_shapes" in entry:
        out["with_fixed_shapes"] = _ours(entry["with_fixed_shapes"])
    return out


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


def _build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    import torchmodels

    root = torchmodels.edge_models(tmp_path_factory.mktemp)  # shared with test_target_litert
    _cnn(root / "cnn.onnx")
    _cnn(root / "dyn.onnx", batch="N")
    _cnn(root / "plain.onnx", head=False)
    return root


def _commands(root: Path) -> list[background.Command]:
    env = {**background.environ(), "MODELGATE_NO_PROGRESS": "1"}
    files = [*ONNX_FILES, *TORCH_FILES]
    return [
        background.Command(
            [sys.executable, "-m", "modelgate", "check", *files, "--target", "ort-mobile",
             "--convert", "ort-mobile", "--format", "json", "-j", "1"],
            cwd=root, env=env, timeout=600,
        ),
        background.Command([sys.executable, "-c", BARE_SCRIPT, *files], cwd=root, timeout=600),
    ]  # fmt: skip


def start_background(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build the files at the start of the session; both runs go to the background."""
    root = _AHEAD["root"] = _build(tmp_path_factory)
    background.add(RUNS, _commands(root))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _AHEAD.get("root") or _build(tmp_path_factory)


@pytest.fixture(scope="module")
def runs(root: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    ours, bare = background.run(RUNS, _commands(root))
    assert ours.returncode == 0, ours.stderr[-3000:]  # MG110 is a warning
    assert bare.returncode == 0, bare.stderr[-3000:]
    report = {m["path"]: m for m in json.loads(ours.stdout)["models"]}
    logs = json.loads(bare.stdout.strip().splitlines()[-1])
    return report, {path: _tool(log) for path, log in logs.items()}


@pytest.fixture(scope="module")
def report(runs) -> dict[str, dict]:
    return runs[0]


@pytest.mark.parametrize("name", [*ONNX_FILES, *TORCH_FILES])
def test_partitions_are_the_tools_own(runs, name: str) -> None:
    report, tool = runs
    result = report[name]["metrics"]["conversions"]["ort-mobile"]
    assert result["ok"] is True
    ours, theirs = result["eps"], tool[name]
    assert set(theirs) == set(EPS) == set(ours)
    for ep in EPS:
        assert _ours(ours[ep]) == theirs[ep], ep
        bare_ops = {op.split(":")[-1] for op in theirs[ep]["unsupported_ops"]}
        assert {n["op"] for n in ours[ep]["unsupported_nodes"]} == bare_ops, ep
    # the fixed-shape verdict exactly where the tool tried it: dynamic inputs, short of YES
    assert bool(result["dynamic_inputs"]) == any("with_fixed_shapes" in e for e in theirs.values())


@pytest.mark.parametrize("name", [*ONNX_FILES, *TORCH_FILES])
def test_mg110_fires_where_the_tools_figures_miss_its_bar(runs, name: str) -> None:
    """Where the tool's figures are under 75% of the nodes or over two partitions (MG110's
    defaults, ONNX Runtime's own bar), MG110 with those figures; nowhere else."""
    report, tool = runs
    eps = report[name]["metrics"]["conversions"]["ort-mobile"]["eps"]
    expected = {}
    for ep, entry in tool[name].items():
        supported, nodes, partitions = (
            entry["supported_nodes"], entry["nodes"], entry["partitions"]
        )  # fmt: skip
        if supported / nodes >= 0.75 and partitions <= 2:
            continue
        message = (
            f"the {ep} execution provider takes {supported}/{nodes} nodes "
            f"({supported / nodes:.0%}) in {partitions} partition(s)"
        )
        unsupported = eps[ep]["unsupported_nodes"]  # checked against the tool's count above
        if unsupported:
            message += "; unsupported: " + ", ".join(
                f"{n['op']} ({n['node']})" for n in unsupported[:5]
            )
            message += f" and {len(unsupported) - 5} more" if len(unsupported) > 5 else ""
        if entry["dynamic_shape_nodes"]:
            message += f"; {entry['dynamic_shape_nodes']} node(s) lost to dynamic shapes"
            fixed = entry.get("with_fixed_shapes")
            if fixed:
                message += (
                    f" (with fixed shapes: {fixed['supported_nodes']}/{fixed['nodes']} in "
                    f"{fixed['partitions']} partition(s))"
                )
        expected[f"ort-mobile:{ep}"] = message
    # the findings but a noisy latency (MG104: the machine was busy timing the torch model)
    found = {f["key"]: f for f in report[name]["findings"] if f["key"] != "noisy-latency"}
    assert {k: (f["rule"], f["message"]) for k, f in found.items()} == {
        k: ("MG110", message) for k, message in expected.items()
    }


def test_mg110_names_the_unsupported_nodes(report) -> None:
    found = {f["key"]: f["message"] for f in report["dyn.onnx"]["findings"]}
    assert found["ort-mobile:NNAPI"] == (
        "the NNAPI execution provider takes 0/6 nodes (0%) in 0 partition(s); unsupported: "
        "HardSigmoid (hsig); 6 node(s) lost to dynamic shapes (with fixed shapes: 5/6 in 2 "
        "partition(s))"
    )
    assert "Flatten (flat)" in found["ort-mobile:CoreML MLProgram"]
    # the optimizer inlines HardSwish into nodes without names: named by their output
    found = {f["key"]: f["message"] for f in report["cnn.pt2"]["findings"]}
    assert found["ort-mobile:CoreML NeuralNetwork"] == (
        "the CoreML NeuralNetwork execution provider takes 3/5 nodes (60%) in 3 partition(s); "
        "unsupported: HardSigmoid (output _inlfunc_HardSwish_HS_X), ReduceMean (node_mean)"
    )


@pytest.mark.parametrize("name", [*ONNX_FILES, *TORCH_FILES])
def test_the_matrix_row_summarises_each_provider(runs, name: str) -> None:
    report, tool = runs
    (row,) = report[name]["metrics"]["targets"]
    assert row["target"] == "ort-mobile" and row["result"] == "ok"
    parts = []
    for ep in EPS:
        entry = tool[name][ep]
        parts.append(f"{ep} {entry['supported_nodes']}/{entry['nodes']}")
        if entry["partitions"] != 1:
            parts[-1] += f" in {entry['partitions']} partitions"
    assert row["detail"] == "; ".join(parts)


def test_a_torch_model_is_exported_then_partitioned(report) -> None:
    for name in TORCH_FILES:
        result = report[name]["metrics"]["conversions"]["ort-mobile"]
        assert result["exporter"] == "torch.onnx (dynamo exporter)", name
        assert result["dynamic_inputs"] == (["x"] if name == "dynamic.pt2" else []), name
    assert report["cnn.onnx"]["metrics"]["conversions"]["ort-mobile"]["exporter"] is None
