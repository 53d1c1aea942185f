"""Reading every format by content into the graph view: formats, tensors, ops, inputs, sources."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

import modelfactory

from modelgate.loaders import Policy, load


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small model in every format, built once for this module."""
    folder = tmp_path_factory.mktemp("formats")
    f = modelfactory.Factory(folder)
    model = modelfactory.build("dropout").eval()
    sd = model.state_dict()
    return {
        "state_dict": f.state_dict(model, "sd.bin"),  # the extension says nothing
        "checkpoint": f.state_dict(model, "ckpt.pt", wrap="model"),
        "lightning": f.state_dict(model, "lightning.ckpt", wrap="state_dict"),
        "legacy": f.state_dict(model, "legacy.pt", legacy=True),
        "pickled_module": f.whole_module(model),
        "torchscript": f.torchscript(model, name="ts.model"),
        "torch_export": f.pt2(model, name="ep.weights"),
        "safetensors": f.safetensors(sd, "weights.data"),
    }


EXPECTED_TENSORS = {"conv.weight": (8, 3, 3, 3), "bn.running_var": (8,), "fc.weight": (4, 8)}


@pytest.mark.parametrize(
    "kind",
    ["state_dict", "checkpoint", "lightning", "legacy", "pickled_module", "torchscript",
     "torch_export", "safetensors"],
)  # fmt: skip
def test_every_format_is_read_by_content(files: dict[str, Path], kind: str) -> None:
    graph = load(str(files[kind]), Policy(extra=("torchmodels.*",)))
    assert graph.unreadable is None, graph.unreadable
    expected_format = {"lightning": "checkpoint", "legacy": "state_dict"}.get(kind, kind)
    assert graph.format == expected_format
    for name, shape in EXPECTED_TENSORS.items():
        assert graph.tensors[name].shape == shape, name
        assert graph.tensors[name].dtype == "float32"
    assert graph.layers["fc"].kind == "linear"
    assert graph.layers["bn"].kind == "batchnorm"


def test_checkpoint_names_where_the_state_dict_was(files: dict[str, Path]) -> None:
    assert load(str(files["checkpoint"])).metadata["state_dict_key"] == "model"
    assert load(str(files["lightning"])).metadata["state_dict_key"] == "state_dict"


def test_graph_formats_have_ops_inputs_and_sources(files: dict[str, Path]) -> None:
    factory = str(Path(modelfactory.__file__).resolve().parent / "torchmodels.py")
    for kind, linear in (("torch_export", "aten::linear"), ("torchscript", "aten::linear")):
        graph = load(str(files[kind]))
        assert graph.has_graph
        assert graph.inputs[0].shape == (1, 3, 16, 16)
        (op,) = graph.ops_of(linear)
        assert op.module == "fc"
        assert op.source is not None and op.source.file == factory
        assert op.source.line > 0


def test_pickled_module_reads_structure_and_attributes(files: dict[str, Path]) -> None:
    graph = load(str(files["pickled_module"]), Policy(extra=("torchmodels.*",)))
    assert graph.training is False
    assert graph.layers["fc"].type == "torch.nn.modules.linear.Linear"
    assert graph.layers["fc"].attrs["in_features"] == 8
    assert graph.layers["drop"].attrs["p"] == 0.3
    # without the allow entry the user class is MG901, but structure is still read (inertly)
    graph = load(str(files["pickled_module"]))
    assert [i.global_name for i in graph.pickle_issues] == ["torchmodels.WithDropout"]
    assert "fc" in graph.layers


def test_onnx_read_without_external_data_loaded(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((16, 32), np.float32), "fc.weight")
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Gemm", ["x", "fc.weight"], ["y"], name="/fc/Gemm", transB=1)],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])],
            [weight],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.data", size_threshold=0)  # fmt: skip
    graph = load(str(path))
    assert graph.unreadable is None
    assert graph.format == "onnx"
    assert graph.inputs[0].shape == ("batch", 32)
    assert graph.tensors["fc.weight"].shape == (16, 32)
    assert graph.tensors["fc.weight"].external == "m.data"
    assert graph.ops[0].target == "onnx::Gemm" and graph.ops[0].module == "fc"
    assert graph.layers["/fc/Gemm"].kind == "linear"


def test_static_reads_do_not_import_torch(files: dict[str, Path]) -> None:
    """The pre-commit hook's promise: state dicts, safetensors and .pt2 without torch."""
    paths = [str(files[k]) for k in ("state_dict", "legacy", "safetensors", "torch_export")]
    code = (
        "import sys, json; sys.modules['torch'] = None\n"
        "from modelgate.cli import main\n"
        f"sys.exit(main(['check', '--format', 'json', *{json.dumps(paths)}]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert [m["format"] for m in report["models"]] == ["state_dict", "state_dict", "safetensors",
                                                       "torch_export"]  # fmt: skip


def test_torchscript_without_torch_says_which_extra(files: dict[str, Path]) -> None:
    code = (
        "import sys, json; sys.modules['torch'] = None\n"
        "from modelgate.loaders import load\n"
        f"g = load({str(files['torchscript'])!r})\n"
        "print(json.dumps([g.format, g.unreadable, len(g.tensors), g.has_graph, g.notes]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    fmt, unreadable, tensors, has_graph, notes = json.loads(out.stdout)
    assert (fmt, unreadable, tensors, has_graph) == ("torchscript", None, 9, False)
    assert "install modelgate-lint[torch]" in notes[0]
