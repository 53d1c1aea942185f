"""ONNX files as real projects have them, built here: control-flow bodies, local functions,
Constant weights, external data; and files ONNX Runtime refuses (cycles, opsets it does not
know, short external data, truncation). Each case asserts the exact findings, and where
modelgate predicts what ONNX Runtime does, a test loads the file both ways."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelgate import budget, engine, onnx_support
from modelgate import config as cfg
from modelgate.finding import severity_rank
from modelgate.report import Report
from modelgate.results import ChecksResult

OPSET = 17
F = TensorProto.FLOAT


def _vi(name: str, shape: list[int] | None = None, elem: int = F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, [2] if shape is None else shape)


def _save(path: Path, nodes: list, inputs: list, outputs: list, inits: list = (),
          opset: int = OPSET, functions: list = (), opsets: list = ()) -> Path:  # type: ignore[assignment]  # fmt: skip
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    imports = [helper.make_opsetid("", opset), *opsets]
    model = helper.make_model(graph, opset_imports=imports, functions=list(functions))
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _check(path: Path, **doc) -> list[tuple[str, str | None, str, str]]:
    """(rule, location, severity, message) of every finding of a static --target onnx check
    (in this process: the worker pool would cost more than these small models)."""
    model = engine.check_file(str(path), cfg.from_dict({"targets": ["onnx"], **doc}))
    found = sorted(model.findings, key=lambda f: (severity_rank(f.severity), f.rule))
    return [(f.rule, f.location.op or f.location.tensor, f.severity, f.message) for f in found]


def _ort_loads(path: Path) -> bool:
    ort = pytest.importorskip("onnxruntime")
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


RT = onnx_support.runtime()


# -- control flow ---------------------------------------------------------------------------
def _if_model(path: Path, then_op: str) -> Path:
    then = helper.make_graph([helper.make_node(then_op, ["x"], ["t"], name="Add_3")], "then",
                             [], [_vi("t")])  # fmt: skip
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"], name="Neg_0")], "else",
                              [], [_vi("e")])  # fmt: skip
    node = helper.make_node("If", ["c"], ["y"], name="If_0", then_branch=then, else_branch=other)
    return _save(path, [node], [_vi("c", [], TensorProto.BOOL), _vi("x")], [_vi("y")])


def test_unknown_op_inside_an_if_branch_is_flagged_at_its_path(tmp_path: Path) -> None:
    path = _if_model(tmp_path / "if.onnx", "Frobnicate")
    assert _check(path) == [
        ("MG003", "If_0/then_branch/Add_3", "error",
         f"If_0/then_branch/Add_3: Frobnicate is not an op {RT.name} knows"),
    ]  # fmt: skip


@pytest.mark.parametrize("then_op", ["Frobnicate", "Identity"])
def test_if_branch_verdict_matches_onnx_runtime_both_ways(tmp_path: Path, then_op: str) -> None:
    path = _if_model(tmp_path / "if.onnx", then_op)
    flagged = any(f[2] == "error" for f in _check(path))
    assert flagged == (then_op == "Frobnicate")
    assert _ort_loads(path) is not flagged


def test_loop_and_scan_bodies_are_read(tmp_path: Path) -> None:
    ratio = numpy_helper.from_array(np.array(0.5, np.float32), "ratio")
    train = numpy_helper.from_array(np.array(True), "train")
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="Identity_0"),
         helper.make_node("Dropout", ["v_in", "ratio", "train"], ["v_out"], name="Dropout_0"),
         helper.make_node("Frobnicate", ["v_out"], ["scan_out"], name="Odd_1")],
        "body",
        [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL), _vi("v_in")],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("v_out"), _vi("scan_out")],
        [ratio, train],
    )  # fmt: skip
    loop = helper.make_node("Loop", ["n", "", "x"], ["v", "scans"], name="Loop_0", body=body)
    scan_body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "e"], ["s_out"], name="Add_0"),
         helper.make_node("Frobnicate", ["s_out"], ["e_out"], name="Odd_2")],
        "scan_body", [_vi("s_in"), _vi("e")], [_vi("s_out"), _vi("e_out")],
    )  # fmt: skip
    scan = helper.make_node("Scan", ["v", "seq"], ["s", "outs"], name="Scan_0", body=scan_body,
                            num_scan_inputs=1)  # fmt: skip
    path = _save(tmp_path / "loop.onnx", [loop, scan],
                 [_vi("n", [], TensorProto.INT64), _vi("x"), _vi("seq", [3, 2])],
                 [_vi("s"), _vi("outs", [3, 2]), _vi("scans", [None, 2])])  # fmt: skip
    assert _check(path) == [
        ("MG003", "Loop_0/body/Odd_1", "error",
         f"Loop_0/body/Odd_1: Frobnicate is not an op {RT.name} knows"),
        ("MG003", "Scan_0/body/Odd_2", "error",
         f"Scan_0/body/Odd_2: Frobnicate is not an op {RT.name} knows"),
        ("MG004", "Loop_0/body/Dropout_0", "error",
         "Loop_0/body/Dropout_0: Dropout has a training_mode input in an inference graph"),
    ]  # fmt: skip


def test_fp64_initializer_inside_a_subgraph_is_mg007_at_its_path(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((4, 2), np.float64), "w64")
    then = helper.make_graph(
        [helper.make_node("Cast", ["w64"], ["w32"], to=F, name="Cast_0"),
         helper.make_node("ReduceSum", ["w32"], ["t"], keepdims=0, name="Sum_0")],
        "then", [], [_vi("t", [])], [w],
    )  # fmt: skip
    other = helper.make_graph([helper.make_node("Constant", [], ["e"], name="C_0",
                               value=numpy_helper.from_array(np.array(1.0, np.float32)))],
                              "else", [], [_vi("e", [])])  # fmt: skip
    node = helper.make_node("If", ["c"], ["y"], name="If_0", then_branch=then, else_branch=other)
    path = _save(tmp_path / "fp64.onnx", [node], [_vi("c", [], TensorProto.BOOL)],
                 [_vi("y", [])])  # fmt: skip
    assert _check(path) == [
        ("MG007", "If_0/then_branch/w64", "warning",
         "1 tensor(s) are float64 (64 B, 94% of the weights); largest: If_0/then_branch/w64 "
         "(4, 2)"),
    ]  # fmt: skip


# -- functions and Constant weights ---------------------------------------------------------
def _function_model(path: Path, inner_op: str) -> Path:
    fn = helper.make_function(
        "local", "MyAct", ["a"], ["b"],
        [helper.make_node("Relu", ["a"], ["r"]), helper.make_node(inner_op, ["r"], ["b"])],
        [helper.make_opsetid("", OPSET)],
    )  # fmt: skip
    node = helper.make_node("MyAct", ["x"], ["y"], name="act", domain="local")
    return _save(path, [node], [_vi("x")], [_vi("y")], functions=[fn],
                 opsets=[helper.make_opsetid("local", 1)])  # fmt: skip


def test_a_local_function_is_not_an_unsupported_op_and_its_ops_are_checked(
    tmp_path: Path,
) -> None:
    clean = _function_model(tmp_path / "fn.onnx", "Neg")
    assert _check(clean) == []
    assert _ort_loads(clean)
    odd = _function_model(tmp_path / "fn_odd.onnx", "Frobnicate")
    assert _check(odd) == [
        ("MG003", "MyAct/Frobnicate_1", "error",
         f"MyAct/Frobnicate_1: Frobnicate is not an op {RT.name} knows"),
    ]  # fmt: skip
    assert not _ort_loads(odd)


def test_constant_node_weights_count_as_parameters(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((8, 2), np.float32), "w")
    nodes = [helper.make_node("Constant", [], ["w"], name="Const_0", value=w),
             helper.make_node("MatMul", ["w", "x"], ["y"], name="MatMul_0")]  # fmt: skip
    path = _save(tmp_path / "const.onnx", nodes, [_vi("x", [2, 3])], [_vi("y", [8, 3])])
    metrics = engine.check_file(str(path), cfg.from_dict({"targets": ["onnx"]})).metrics
    assert (metrics["parameters"], metrics["tensors"], metrics["weights_mb"]) == (16, 1, 0.0)
    assert metrics["largest_layers"][0]["module"] == "MatMul_0"
    assert metrics["largest_layers"][0]["parameters"] == 16


# -- what ONNX Runtime refuses --------------------------------------------------------------
def test_node_cycle_is_mg902_and_onnx_runtime_refuses_it(tmp_path: Path) -> None:
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="Add_0"),
             helper.make_node("Relu", ["a"], ["b"], name="Relu_1"),
             helper.make_node("Identity", ["a"], ["y"], name="Out_2")]  # fmt: skip
    path = _save(tmp_path / "cycle.onnx", nodes, [_vi("x")], [_vi("y")])
    assert _check(path) == [
        ("MG902", None, "error",
         "node cycle: Add_0 -> Relu_1 -> Add_0 (2 nodes feed each other; ONNX Runtime "
         "refuses a graph that is not acyclic)"),
    ]  # fmt: skip
    assert not _ort_loads(path)


def test_opset_newer_than_onnx_runtime_both_ways(tmp_path: Path) -> None:
    newest = RT.max_opsets[""]
    node = helper.make_node("Relu", ["x"], ["y"], name="Relu_0")
    too_new = _save(tmp_path / "new.onnx", [node], [_vi("x")], [_vi("y")], opset=newest + 1)
    assert _check(too_new) == [
        ("MG003", None, "error",
         f"the model imports opset {newest + 1} of ai.onnx; {RT.name} supports up to opset "
         f"{newest}"),
    ]  # fmt: skip
    fine = _save(tmp_path / "ok.onnx", [node], [_vi("x")], [_vi("y")], opset=newest)
    assert _check(fine) == []
    if RT.kernels_known:
        assert not _ort_loads(too_new)
        assert _ort_loads(fine)


def test_missing_kernel_for_a_type_both_ways(tmp_path: Path) -> None:
    """Max has no int16 kernel in ONNX Runtime's CPU provider; int32 has one."""
    if not RT.kernels_known:
        pytest.skip("kernel availability needs onnxruntime")
    for elem, name in ((TensorProto.INT16, "int16"), (TensorProto.INT32, "int32")):
        node = helper.make_node("Max", ["a", "b"], ["y"], name="Max_0")
        path = _save(tmp_path / f"max_{name}.onnx", [node],
                     [_vi("a", [2], elem), _vi("b", [2], elem)], [_vi("y", [2], elem)],
                     opset=13)  # fmt: skip
        expected = [] if name == "int32" else [
            ("MG003", "Max_0", "error",
             f"Max_0: Max has no CPU kernel in {RT.name} for version 13 with T=tensor(int16)"),
        ]  # fmt: skip
        assert _check(path) == expected
        assert _ort_loads(path) is (name == "int32")


def _external_model(folder: Path, numel: int) -> Path:
    """An embedding table (numel float32) in an external data file beside the model."""
    w = numpy_helper.from_array(np.ones((numel // 4, 4), np.float32), "w")
    node = helper.make_node("Gather", ["w", "i"], ["y"], name="Gather_0")
    ids = _vi("i", [3], TensorProto.INT64)
    graph = helper.make_graph([node], "g", [ids], [_vi("y", [3, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    path = folder / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)  # fmt: skip
    return path


def test_external_data_shorter_than_its_tensor_is_mg902(tmp_path: Path) -> None:
    path = _external_model(tmp_path, 64)
    model = onnx.load(str(path), load_external_data=False)
    entry = next(e for e in model.graph.initializer[0].external_data if e.key == "length")
    entry.value = "200"  # the tensor holds 16x4 float32 = 256 bytes
    onnx.save(model, str(path))
    assert _check(path) == [
        ("MG902", None, "error",
         "initializer 'w' 16x4 float32 needs 256 bytes but its external data in "
         "'ext.onnx.data' declares length 200"),
    ]  # fmt: skip
    assert not _ort_loads(path)


def test_external_data_file_cut_short_is_mg902(tmp_path: Path) -> None:
    path = _external_model(tmp_path, 64)
    data = tmp_path / "ext.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    assert _check(path) == [
        ("MG902", None, "error",
         "initializer 'w' reads bytes 0..256 of 'ext.onnx.data', which has 100 (truncated?)"),
    ]  # fmt: skip
    assert not _ort_loads(path)


def test_external_data_counts_in_size_and_weights(tmp_path: Path) -> None:
    path = _external_model(tmp_path, 1_600_000)  # 6.4 MB of float32 outside a ~150 B protobuf
    config = cfg.from_dict({"budget": {"size_mb": 5}})
    model = engine.check_file(str(path), config)
    budget.apply(Report([model]), config)
    assert (model.metrics["size_mb"], model.metrics["weights_mb"]) == (6.4, 6.4)
    assert [(f.rule, f.severity, f.message) for f in model.findings] == [
        ("MG301", "error", "size_mb 6.4 MB (file) is over the budget of 5 MB by 1.4 MB, +28%"),
    ]


def test_external_data_size_budget_fails_under_static(run_cli, tmp_path: Path) -> None:
    import json

    path = _external_model(tmp_path, 1_600_000)
    (tmp_path / "modelgate.yaml").write_text("targets: [onnx]\nbudget:\n  size_mb: 5\n")
    code, out, _ = run_cli("check", "--static", "--format", "json", path.name)
    result = json.loads(out)["models"][0]
    assert (code, result["metrics"]["size_mb"]) == (1, 6.4)
    assert [(f["rule"], f["severity"]) for f in result["findings"]] == [("MG301", "error")]


def test_static_does_not_judge_a_converted_size_budget_on_the_file(run_cli, tmp_path: Path) -> None:
    """With convert: in the config, size_mb budgets the converted package: --static (the fast
    hook) makes none, so it does not judge that limit against the file."""
    import json

    path = _external_model(tmp_path, 1_600_000)
    (tmp_path / "modelgate.yaml").write_text("convert: [onnx]\nbudget:\n  size_mb: 5\n")
    code, out, _ = run_cli("check", "--static", "--format", "json", path.name)
    result = json.loads(out)["models"][0]
    assert (code, result["metrics"]["size_mb"], result["findings"]) == (0, 6.4, [])


def test_truncated_onnx_file_is_named_truncated(tmp_path: Path) -> None:
    path = _external_model(tmp_path, 64)  # any model: cut inside its graph
    model = onnx.load(str(path))
    full = tmp_path / "full.onnx"
    onnx.save(model, str(full))
    data = full.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    graph_end = len(data) - sum(2 + len(o.SerializeToString()) for o in model.opset_import)
    assert _check(cut) == [
        ("MG902", None, "error",
         f"truncated ONNX protobuf: graph needs bytes up to {graph_end:,}, the file has "
         f"{len(data) // 2:,} ({graph_end - len(data) // 2:,} missing)"),
    ]  # fmt: skip
    assert not _ort_loads(cut)


def test_without_onnxruntime_the_standard_is_checked_and_kernels_are_noted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime fails
    onnx_support.runtime.cache_clear()
    try:
        odd = _if_model(tmp_path / "if.onnx", "Frobnicate")
        node = helper.make_node("Max", ["a", "b"], ["y"], name="Max_0")
        i16 = TensorProto.INT16
        max16 = _save(tmp_path / "max16.onnx", [node], [_vi("a", [2], i16), _vi("b", [2], i16)],
                      [_vi("y", [2], i16)], opset=13)  # fmt: skip
        config = cfg.from_dict({"targets": ["onnx"]})
        reports = [engine.check_file(str(p), config) for p in (odd, max16)]
    finally:
        onnx_support.runtime.cache_clear()
    standard = f"the ONNX standard (onnx {onnx.__version__})"
    assert [(f.rule, f.location.op, f.message) for f in reports[0].findings] == [
        ("MG003", "If_0/then_branch/Add_3",
         f"If_0/then_branch/Add_3: Frobnicate is not an op {standard} knows"),
    ]  # fmt: skip
    assert reports[1].findings == []  # int16 Max is standard; its kernel is not known here
    note = (
        "MG003: ONNX kernel availability was not checked (onnxruntime is not installed: "
        "pip install onnxruntime); ops were checked against the ONNX standard only"
    )
    assert note in reports[1].notes


def test_truncated_onnx_file_under_another_name_is_named_truncated(tmp_path: Path) -> None:
    path = _save(tmp_path / "m.onnx", [helper.make_node("Relu", ["x"], ["y"], name="Relu_0")],
                 [_vi("x")], [_vi("y")])  # fmt: skip
    data = path.read_bytes()
    cut = tmp_path / "model.bin"
    cut.write_bytes(data[: len(data) - 20])
    ((rule, _, _, message),) = _check(cut)
    assert (rule, message.split(":")[0]) == ("MG902", "truncated ONNX protobuf")


@pytest.mark.parametrize("elem", [TensorProto.INT64, TensorProto.FLOAT])
def test_type_constraint_bound_to_two_types_both_ways(tmp_path: Path, elem: int) -> None:
    node = helper.make_node("Add", ["a", "b"], ["y"], name="Add_0")
    path = _save(tmp_path / "add.onnx", [node], [_vi("a"), _vi("b", [2], elem)], [_vi("y")])
    expected = [] if elem == TensorProto.FLOAT else [
        ("MG003", "Add_0", "error",
         "Add_0: Add binds T to tensor(float) at input 0 and to tensor(int64) at input 1: a "
         f"type error {RT.name} refuses at load"),
    ]  # fmt: skip
    assert _check(path) == expected
    assert _ort_loads(path) is (elem == TensorProto.FLOAT)


# -- Dropout's training_mode ----------------------------------------------------------------
@pytest.mark.parametrize("from_input", [True, False])
def test_dropout_training_mode_from_a_graph_input_is_the_callers_choice(
    tmp_path: Path, from_input: bool
) -> None:
    """A `training_mode` graph input is chosen at run time (ONNX's default is inference): not
    MG004; one fixed by the model itself is."""
    node = helper.make_node("Dropout", ["x", "", "train"], ["y"], name="Dropout_0")
    inputs = [_vi("x")]
    inits = []
    if from_input:
        inputs.append(_vi("train", [], TensorProto.BOOL))
    else:
        inits.append(numpy_helper.from_array(np.array(True), "train"))
    path = _save(tmp_path / "drop.onnx", [node], inputs, [_vi("y")], inits)
    expected = [] if from_input else [
        ("MG004", "Dropout_0", "error",
         "Dropout_0: Dropout has a training_mode input in an inference graph"),
    ]  # fmt: skip
    assert _check(path) == expected
    assert _ort_loads(path)


# -- measured beats predicted; Core ML has no ONNX frontend ---------------------------------
def _mg003(graph, targets: list[str]) -> list:
    from modelgate.rules import mg003_unsupported_op as mg003

    return list(mg003.check(graph, {"targets": targets}))


@pytest.mark.parametrize("session", [True, False, None])
def test_a_session_that_was_created_drops_the_onnx_prediction(
    tmp_path: Path, session: bool | None
) -> None:
    from modelgate.loaders import load
    from modelgate.rule import Note

    graph = load(str(_if_model(tmp_path / "if.onnx", "Frobnicate")))
    if session is not None:
        graph.checks = ChecksResult.from_dict({"onnx": {"ok": session}})
    items = _mg003(graph, ["onnx"])
    if session:
        assert items == [Note(
            "onnx: predicted that 1 node(s) would not load (Frobnicate), but the ONNX Runtime "
            "session was created: the prediction was dropped"
        )]  # fmt: skip
    else:
        assert [(i.key, i.location.op) for i in items] == [
            ("onnx:onnx::Frobnicate:If_0/then_branch/Add_3", "If_0/then_branch/Add_3")
        ]


def test_coreml_on_an_onnx_file_says_why_it_is_not_checked(tmp_path: Path) -> None:
    from modelgate.loaders import load
    from modelgate.rule import Skip

    graph = load(str(_if_model(tmp_path / "if.onnx", "Identity")))
    assert _mg003(graph, ["coreml"]) == [
        Skip("coreml: Core ML has no ONNX frontend (coremltools 6 removed it): check the "
             "PyTorch model"),
    ]  # fmt: skip
    report = engine.check_file(str(tmp_path / "if.onnx"), cfg.from_dict({}))
    assert report.skipped["MG003"].startswith("coreml: Core ML has no ONNX frontend")
