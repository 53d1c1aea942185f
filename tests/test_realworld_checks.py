"""Verdicts on files as real projects have them: asked-for checks that cannot run (MG106),
explicit targets against the defaults, baseline deltas in text, and the ONNX Runtime session
check of ONNX files whose inputs are strings, sequences, optionals, maps or nothing.

Each file is built here once per module; the state dict cases need no converter (nothing can
run, which is the point), the ONNX files share one ``modelgate check --convert onnx`` run in a
fresh process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import background
import pytest

from modelgate.finding import Finding, Location
from modelgate.report import ModelReport, Report
from modelgate.reporters import text

SAVE = (
    "add a build recipe (models: in modelgate.yaml) or save the model with "
    "torch.export.save (.pt2) or torch.jit.save"
)
WEIGHTS_ONLY = "a state dict holds weights only, no architecture to convert or run"


def _findings(model: dict) -> list[tuple[str, str, str, str | None]]:
    return [
        (f["rule"], f["severity"], f["location"]["path"], f.get("key")) for f in model["findings"]
    ]


def start_background(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build the folder at the start of the session; the ``--convert onnx`` run over its ONNX
    files goes to the background (tests/background.py) until :func:`onnx_report` reads it."""
    try:
        import onnxruntime  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return
    root = _AHEAD["folder"] = _folder(tmp_path_factory)
    background.add(ONNX_RUN, [_onnx_run(root)])


_AHEAD: dict[str, Path] = {}
ONNX_RUN = f"{__name__}.onnx"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _AHEAD.get("folder") or _folder(tmp_path_factory)


def _folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("realworld")
    torch.manual_seed(0)
    torch.save(torch.nn.Linear(4, 4).state_dict(), root / "sd.pth")
    (root / "old").mkdir()
    (root / "new").mkdir()
    torch.save(torch.nn.Linear(4, 4).state_dict(), root / "old" / "weights.pth")
    grown = torch.nn.Linear(4, 8).double().state_dict()  # FP64: a new MG007 warning
    torch.save(grown, root / "new" / "weights.pth")
    _onnx_files(root)
    return root


@pytest.fixture
def cli(run_cli, folder: Path):
    def run(*args: str) -> tuple[int, str, str]:
        return run_cli("check", *args, cwd=folder)

    return run


# ---------------------------------------------------------------------------------------------
# MG106: asked for, not run
# ---------------------------------------------------------------------------------------------

ASKED = ("--convert", "coreml", "--convert", "onnx", "--compress", "palettize-4")


def test_a_state_dict_asked_to_convert_and_compress_fails_with_one_mg106_per_check(cli) -> None:
    code, out, _ = cli("sd.pth", *ASKED, "--format", "json")
    assert code == 1
    (model,) = json.loads(out)["models"]
    assert model["passed"] is False
    assert _findings(model) == [
        ("MG106", "error", "sd.pth", "convert:coreml"),
        ("MG106", "error", "sd.pth", "convert:onnx"),
        ("MG106", "error", "sd.pth", "compress:palettize-4"),
    ]
    messages = [f["message"] for f in model["findings"]]
    assert messages == [
        f"the Core ML conversion was asked for (convert: / --convert coreml) but did not run: "
        f"{WEIGHTS_ONLY}",
        f"the ONNX export was asked for (convert: / --convert onnx) but did not run: "
        f"{WEIGHTS_ONLY}",
        f"the palettize-4 compression was asked for (compress: / --compress palettize-4) but "
        f"did not run: {WEIGHTS_ONLY}",
    ]
    assert model["findings"][0]["fix"] == (
        f"{SAVE}; or stop asking for it (convert: / --convert coreml)"
    )
    skipped = {s["rule"]: s["reason"] for s in model["skipped"]}
    assert set(skipped) == {"MG003", "MG101", "MG102", "MG103", "MG104", "MG105"}
    assert skipped["MG104"] == f"nothing was measured: {WEIGHTS_ONLY}: {SAVE}"


def test_the_same_in_text_counts_them_in_the_summary(cli) -> None:
    code, out, _ = cli("sd.pth", *ASKED)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("FAIL  sd.pth  (state dict, ")
    errors = [line for line in lines if line.startswith("  error")]
    assert errors == ["  error   MG106 check-not-run"] * 3
    assert f"  not checked: MG101, MG102: not converted: {WEIGHTS_ONLY}: {SAVE}" in lines
    assert f"  not checked: MG103, MG105: not compressed: {WEIGHTS_ONLY}: {SAVE}" in lines
    assert lines[-1] == "1 model checked: 1 failed; 3 error(s), 0 warning(s), 0 info"


def test_markdown_says_each_reason_once(cli) -> None:
    code, out, _ = cli("sd.pth", *ASKED, "--format", "markdown")
    assert code == 1
    lines = out.splitlines()
    assert f"- not checked: MG101, MG102: not converted: {WEIGHTS_ONLY}: {SAVE}" in lines
    assert f"- not checked: MG103, MG105: not compressed: {WEIGHTS_ONLY}: {SAVE}" in lines


@pytest.mark.parametrize("fmt", ["github", "sarif", "markdown"])
def test_every_format_carries_mg106(cli, fmt: str) -> None:
    code, out, _ = cli("sd.pth", "--convert", "coreml", "--format", fmt)
    assert code == 1
    assert "MG106" in out and "did not run" in out


def test_mg106_severity_comes_from_the_config(cli, folder: Path) -> None:
    (folder / "mg106-warning.yaml").write_text("rules: {MG106: warning}\n")
    code, out, _ = cli("sd.pth", "--convert", "coreml", "--config", "mg106-warning.yaml",
                       "--format", "json")  # fmt: skip
    assert code == 0
    (model,) = json.loads(out)["models"]
    assert _findings(model) == [("MG106", "warning", "sd.pth", "convert:coreml")]


def test_an_unreadable_file_is_mg902_alone_and_says_what_did_not_run(cli, folder) -> None:
    (folder / "empty.pt").write_bytes(b"")
    code, out, _ = cli("empty.pt", "--convert", "coreml", "--format", "json")
    assert code == 1
    (model,) = json.loads(out)["models"]
    assert _findings(model) == [("MG902", "error", "empty.pt", "unreadable")]
    (note,) = [n for n in model["notes"] if "did not run" in n]
    assert note.endswith(" other rules did not run: the file could not be read")


def test_a_plain_check_of_a_state_dict_passes(cli) -> None:
    """The default targets are not asked for: MG003 says why it did not run, nothing fails."""
    code, out, _ = cli("sd.pth")
    assert code == 0
    assert out.splitlines()[1:] == [
        "  not checked: MG003: a state dict holds weights only, no graph of ops",
        "",
        "1 model checked: 0 failed; 0 error(s), 0 warning(s), 0 info",
    ]


@pytest.mark.parametrize(
    ("args", "config", "expected"),
    [
        (("--target", "coreml"), None, [("MG106", "error", "sd.pth", "target:coreml")]),
        ((), "targets: [onnx]\n", [("MG106", "error", "sd.pth", "target:onnx")]),
        ((), "targets: []\n", []),
        (("--target", "coreml", "--ignore", "MG003"), None, []),  # no op check asked for
    ],
    ids=["cli", "config", "config-none", "mg003-off"],
)
def test_explicit_targets_on_a_state_dict(cli, folder: Path, args, config, expected) -> None:
    extra: tuple[str, ...] = ()
    if config is not None:
        (folder / "targets.yaml").write_text(config)
        extra = ("--config", "targets.yaml")
    code, out, _ = cli("sd.pth", *args, *extra, "--format", "json")
    (model,) = json.loads(out)["models"]
    assert _findings(model) == expected
    assert code == (1 if expected else 0)


def test_target_coreml_on_an_onnx_file(cli) -> None:
    code, out, _ = cli("onnx/tensor.onnx", "--target", "coreml", "--format", "json")
    assert code == 1
    (model,) = json.loads(out)["models"]
    assert _findings(model) == [("MG106", "error", "onnx/tensor.onnx", "target:coreml")]
    assert model["findings"][0]["message"] == (
        "the Core ML op check (MG003) was asked for (targets: / --target coreml) but did not "
        "run: Core ML has no ONNX frontend (coremltools 6 removed it)"
    )
    code, out, _ = cli("onnx/tensor.onnx", "--format", "json")  # default targets: nothing
    assert code == 0 and _findings(json.loads(out)["models"][0]) == []


# ---------------------------------------------------------------------------------------------
# --baseline in text
# ---------------------------------------------------------------------------------------------


def test_text_baseline_snapshot() -> None:
    metrics = {
        "size_mb": 2.5,
        "file_mb": 2.5,
        "parameters": 600_000,
        "weights_mb": 2.4,
        "tensors": 4,
        "baseline": {
            "path": "old/model.pt",
            "ref": "main@abc1234",
            "metrics": {"size_mb": 2.0, "file_mb": 2.0, "parameters": 500_000, "tensors": 4},
            "delta": {"size_mb": 0.5, "file_mb": 0.5, "parameters": 100_000, "tensors": 0},
            "delta_pct": {"size_mb": 25.0, "file_mb": 25.0, "parameters": 20.0, "tensors": 0.0},
            "passed": True,
            "new_findings": [{"rule": "MG007", "identity": "MG007:w", "message": "..."}],
            "fixed_findings": ["MG001 head"],
        },
    }
    old = Finding("MG005", "dynamic-shape", "warning", "input x: dim 0 is dynamic",
                  Location("new/model.pt", input="x"), key="x", extra={"new": False})  # fmt: skip
    new = Finding("MG007", "fp64-weights", "warning", "w is float64",
                  Location("new/model.pt", tensor="w"), key="w", extra={"new": True})  # fmt: skip
    model = ModelReport("new/model.pt", "state_dict", [new, old], metrics, passed=True)
    assert text.render(Report([model])) == (
        "pass  new/model.pt  (state dict, 2.5 MB, 600.0K params)\n"
        "  metric      value   vs baseline\n"
        "  size_mb     2.5     +0.5 (+25.0%)\n"
        "  parameters  600.0K  +100.0K (+20.0%)\n"
        "  file_mb     2.5     +0.5 (+25.0%)\n"
        "  tensors     4       +0 (+0.0%)\n"
        "  baseline: old/model.pt at main@abc1234, which passed; 1 new finding(s), 1 fixed\n"
        "  fixed since the baseline: MG001 head\n"
        "  warning MG007 fp64-weights  w  [new]\n"
        "          w is float64\n"
        "  warning MG005 dynamic-shape  x\n"
        "          input x: dim 0 is dynamic\n"
        "\n"
        "1 model checked: 0 failed; 0 error(s), 2 warning(s), 0 info; 1 new against the baseline\n"
    )


def test_text_baseline_end_to_end(cli) -> None:
    code, out, _ = cli("new/weights.pth", "--baseline", "old/weights.pth")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split() == ["metric", "value", "vs", "baseline"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:7]}
    assert rows["parameters"] == ["40", "+20", "(+100.0%)"]
    assert set(rows) == {"size_mb", "parameters", "file_mb", "weights_mb", "tensors"}
    assert lines[7] == ("  baseline: old/weights.pth, which passed; 1 new finding(s), 0 fixed")
    assert lines[8].startswith("  warning MG007 fp64-weights") and lines[8].endswith("  [new]")
    assert lines[-1].endswith("; 1 new against the baseline")


# ---------------------------------------------------------------------------------------------
# --convert onnx on ONNX files
# ---------------------------------------------------------------------------------------------


def _onnx_files(root: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto as T
    from onnx import helper

    folder = root / "onnx"
    folder.mkdir()

    def save(name, nodes, inputs, outputs, domains=()) -> None:
        graph = helper.make_graph(nodes, "g", inputs, outputs)
        opsets = [helper.make_opsetid("", 18), *(helper.make_opsetid(d, v) for d, v in domains)]
        model = helper.make_model(graph, opset_imports=opsets)
        model.ir_version = 9  # what this onnxruntime reads (onnx writes its newest)
        onnx.save(model, str(folder / name))

    def tensor(name, elem, shape):
        return helper.make_tensor_value_info(name, elem, shape)

    def value(name, type_proto):
        return helper.make_value_info(name, type_proto)

    float2 = helper.make_tensor_type_proto(T.FLOAT, [2])
    save("tensor.onnx", [helper.make_node("Relu", ["x"], ["y"])],
         [tensor("x", T.FLOAT, [1, 2])], [tensor("y", T.FLOAT, [1, 2])])  # fmt: skip
    save("string.onnx", [helper.make_node("Identity", ["s"], ["o"])],
         [tensor("s", T.STRING, ["n"])], [tensor("o", T.STRING, ["n"])])  # fmt: skip
    save("sequence.onnx", [helper.make_node("SequenceLength", ["q"], ["o"])],
         [helper.make_tensor_sequence_value_info("q", T.FLOAT, [2, 3])],
         [tensor("o", T.INT64, [])])  # fmt: skip
    optional = helper.make_optional_type_proto(float2)
    save("optional.onnx", [helper.make_node("OptionalHasElement", ["p"], ["o"])],
         [value("p", optional)], [tensor("o", T.BOOL, [])])  # fmt: skip
    optional_sequence = helper.make_optional_type_proto(helper.make_sequence_type_proto(float2))
    save("optional_sequence.onnx", [helper.make_node("OptionalHasElement", ["p"], ["o"])],
         [value("p", optional_sequence)], [tensor("o", T.BOOL, [])])  # fmt: skip
    constant = helper.make_tensor("v", T.FLOAT, [2], [1.0, 2.0])
    save("no_inputs.onnx", [helper.make_node("Constant", [], ["o"], value=constant)], [],
         [tensor("o", T.FLOAT, [2])])  # fmt: skip
    scalar = helper.make_tensor_type_proto(T.FLOAT, [])
    save("map.onnx",
         [helper.make_node("DictVectorizer", ["m"], ["o"], domain="ai.onnx.ml",
                           int64_vocabulary=[1, 2])],
         [value("m", helper.make_map_type_proto(T.INT64, scalar))], [tensor("o", T.FLOAT, [1, 2])],
         domains=[("ai.onnx.ml", 3)])  # fmt: skip
    # ORT refuses every synthetic target shape: random [8, 6], all ones, all zeros (-> [1, 2])
    save("reshape.onnx", [helper.make_node("Reshape", ["x", "shape"], ["o"])],
         [tensor("x", T.FLOAT, [1, 2, 3]), tensor("shape", T.INT64, [2])],
         [tensor("o", T.FLOAT, None)])  # fmt: skip
    # random indices in [0, 10) are out of range for 2 rows; all ones run
    save("gather.onnx", [helper.make_node("Gather", ["data", "i"], ["o"])],
         [tensor("data", T.FLOAT, [2, 3]), tensor("i", T.INT64, [4])],
         [tensor("o", T.FLOAT, [4, 3])])  # fmt: skip
    save("unranked.onnx", [helper.make_node("Identity", ["r"], ["o"])],
         [tensor("r", T.FLOAT, None)], [tensor("o", T.FLOAT, None)])  # fmt: skip
    save("custom.onnx", [helper.make_node("Foo", ["x"], ["o"], domain="com.example")],
         [tensor("x", T.FLOAT, [2])], [tensor("o", T.FLOAT, [2])],
         domains=[("com.example", 1)])  # fmt: skip


RUNS = [
    "tensor",
    "string",
    "sequence",
    "optional",
    "optional_sequence",
    "no_inputs",
    "map",
    "gather",
]


def _onnx_run(folder: Path) -> background.Command:
    env = {**background.environ(), "MODELGATE_NO_PROGRESS": "1"}
    return background.Command(
        [sys.executable, "-m", "modelgate", "check", "onnx", "--convert", "onnx",
         "--format", "json", "-j", "2", "--select", "MG003,MG102,MG104,MG106"],
        cwd=folder, timeout=600, env=env,
    )  # fmt: skip


@pytest.fixture(scope="module")
def onnx_report(folder: Path) -> dict[str, dict]:
    pytest.importorskip("onnxruntime")
    (done,) = background.run(ONNX_RUN, [_onnx_run(folder)])
    assert done.returncode == 1, done.stderr[-3000:]  # custom.onnx does not load
    return {m["path"].split("/")[-1][: -len(".onnx")]: m for m in json.loads(done.stdout)["models"]}


@pytest.mark.parametrize("name", RUNS)
def test_onnx_files_get_the_session_check_and_a_run(onnx_report, name: str) -> None:
    model = onnx_report[name]
    assert model["findings"] == []
    onnx = model["metrics"]["conversions"]["onnx"]
    assert (onnx["ok"], onnx["exporter"], onnx["checker"]) == (True, None, "passed (full check)")
    assert onnx["run"]["ok"] is True
    assert model["metrics"]["latency"]["model"] == "the ONNX file as given"


def test_synthetic_values_follow_the_files_types(onnx_report) -> None:
    def fed(name: str) -> list[dict]:
        return onnx_report[name]["metrics"]["conversions"]["onnx"]["run"]["inputs"]

    assert fed("string") == [{"name": "s", "shape": [1], "dtype": "string"}]
    assert fed("sequence") == [{"name": "q", "sequence": 1, "shape": [2, 3], "dtype": "float32"}]
    assert fed("optional") == [{"name": "p", "shape": [2], "dtype": "float32"}]
    assert fed("optional_sequence") == [
        {"name": "p", "sequence": 1, "shape": [2], "dtype": "float32"}
    ]
    assert fed("no_inputs") == []
    assert fed("map") == [{"name": "m", "map": 1}]
    run = onnx_report["gather"]["metrics"]["conversions"]["onnx"]["run"]
    assert run["integers"].startswith("all 1 (random values in [0, 10) failed: ")


@pytest.mark.parametrize(
    ("name", "start"),
    [
        ("reshape", "ONNX Runtime loads the ONNX file, but running it on synthetic inputs "
                    "failed: "),
        ("unranked", "ONNX Runtime loads the ONNX file, but it was not run: no synthetic value "
                     "for input 'r' (tensor(float)): its rank is unknown; give sample inputs"),
    ],
)  # fmt: skip
def test_onnx_files_that_synthetic_values_cannot_run_ask_for_samples(
    onnx_report, name: str, start: str
) -> None:
    model = onnx_report[name]
    assert _findings(model) == [("MG104", "warning", f"onnx/{name}.onnx", "onnx-run")]
    (finding,) = model["findings"]
    assert finding["message"].startswith(start)
    assert "give sample inputs" in finding["message"]
    assert model["metrics"]["conversions"]["onnx"]["ok"] is True
    assert model["passed"] is True


def test_an_onnx_file_onnx_runtime_cannot_load(onnx_report) -> None:
    model = onnx_report["custom"]
    assert _findings(model) == [
        ("MG003", "error", "onnx/custom.onnx", "onnx:com.example::Foo:Foo_0"),
        ("MG102", "error", "onnx/custom.onnx", "onnx"),
    ]
    mg102 = model["findings"][1]
    assert mg102["message"].startswith("ONNX Runtime session of the ONNX file failed: ")
    assert "com.example:Foo" in mg102["message"]
    assert "torch.onnx" not in mg102["fix"] and "export" not in mg102["message"]
