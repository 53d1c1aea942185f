"""TorchScript as real projects save it, checked against the real converters.

Scripted control flow (an ``assert``, ``if`` on a tensor, ``raise``), the same model traced,
``torch.chunk`` traced and scripted, an ``assert`` after the outputs are computed, and a
genuinely unsupported op: MG003 must see each graph as coremltools and torch.onnx see it
(after their graph passes), so what it flags fails to convert and what it leaves alone
converts. Each conversion runs in its own process (tests/convert_probe.py), two at a time.
Also: a real conversion's outcome decides MG003 (``--convert``), shapes propagate through a
traced ResNet-style block (MG006), and one MG005 per input lists all its dynamic dims.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("coremltools")
nn = torch.nn

import convert_probe  # noqa: E402

from modelgate import config as cfg  # noqa: E402
from modelgate import engine, loaders, opsupport  # noqa: E402
from modelgate.finding import Location  # noqa: E402
from modelgate.graph import ModelGraph, Op  # noqa: E402
from modelgate.results import ChecksResult  # noqa: E402
from modelgate.rule import Note  # noqa: E402
from modelgate.rules import mg003_unsupported_op as mg003  # noqa: E402


class Guarded(nn.Module):
    """An assert, an if on a tensor (aten::Bool), a constant chunk."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 2, "need a batch of vectors"
        y = self.fc(x) if bool(x.sum() > 0) else -x
        a, b = torch.chunk(y, 2, dim=1)
        return a * b


class Chunky(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.fc(x).chunk(2, dim=1)
        return torch.cat([b, a], 1).relu_()


class Raises(nn.Module):
    """A raise on a data-dependent condition, and a Python number from a shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 1000.0):
            raise ValueError("input too large")
        n = int(x.shape[1])
        return x * float(n)


class AssertAtEnd(nn.Module):
    """The check comes after the output exists: coremltools stops converting before it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + 1
        if bool(y.sum() > 1e9):
            raise ValueError("too large")
        return y


class Kth(nn.Module):
    """kthvalue: neither coremltools nor torch.onnx converts it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.kthvalue(x, 2, 1)[0]


class Two(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.kthvalue(x, 2, 1, keepdim=True)[0]
        return torch.erfinv(x.clamp(-0.5, 0.5)) + y


MODELS = {"guarded": Guarded, "chunky": Chunky, "raises": Raises,
          "assert_at_end": AssertAtEnd, "kth": Kth, "two": Two}  # fmt: skip
FILES = [("guarded", "script"), ("guarded", "trace"), ("chunky", "script"),
         ("chunky", "trace"), ("raises", "script"), ("assert_at_end", "script"),
         ("kth", "script"), ("kth", "trace")]  # fmt: skip
# what MG003 says for each file and target: (op, module) of every finding
EXPECTED = {
    ("guarded", "script", "coreml"): [("prim::RaiseException", None)],
    ("guarded", "script", "onnx"): [],  # torch.onnx folds the assert, erases aten::Bool
    ("guarded", "trace", "coreml"): [],  # aten::chunk is prim::ConstantChunk to coremltools
    ("guarded", "trace", "onnx"): [],
    ("chunky", "script", "coreml"): [],
    ("chunky", "script", "onnx"): [],
    ("chunky", "trace", "coreml"): [],
    ("chunky", "trace", "onnx"): [],
    ("raises", "script", "coreml"): [("aten::Float", None), ("prim::RaiseException", None)],
    ("raises", "script", "onnx"): [],  # the unused raise is deleted before symbolic lookup
    ("assert_at_end", "script", "coreml"): [],  # converted up to the output, then stops
    ("assert_at_end", "script", "onnx"): [],
    ("kth", "script", "coreml"): [("aten::kthvalue", None)],
    ("kth", "script", "onnx"): [("aten::kthvalue", None)],
    ("kth", "trace", "coreml"): [("aten::kthvalue", None)],
    ("kth", "trace", "onnx"): [("aten::kthvalue", None)],
}
CASES = list(EXPECTED)


def _save(name: str, how: str, folder: Path) -> Path:
    model = MODELS[name]().eval()
    path = folder / f"{name}.{how}.pt"
    torch.manual_seed(0)
    example = torch.randn(1, 8)
    module = torch.jit.script(model) if how == "script" else torch.jit.trace(model, example)
    module.save(str(path))
    return path


def start_background(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Save the files at the start of the session; their conversions run in the background
    (tests/background.py) until :func:`conversions` reads them."""
    _AHEAD["files"] = _build(tmp_path_factory)
    convert_probe.submit(__name__, _runs(_AHEAD["files"]))


_AHEAD: dict[str, dict[tuple[str, str], Path]] = {}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    return _AHEAD.get("files") or _build(tmp_path_factory)


def _build(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    import warnings

    folder = tmp_path_factory.mktemp("realworld_ts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing through an if warns
        return {(name, how): _save(name, how, folder) for name, how in [*FILES, ("two", "trace")]}


def _runs(files: dict[tuple[str, str], Path]) -> list[tuple[str, str, str]]:
    return [(str(files[(name, how)]), target, "1x8") for name, how, target in CASES]


@pytest.fixture(scope="module")
def conversions(files: dict[tuple[str, str], Path]) -> dict[tuple[str, str, str], dict]:
    return dict(zip(CASES, convert_probe.results(__name__, _runs(files)), strict=True))


def _mg003(path: Path, target: str, **extra) -> list:
    report = engine.check_file(str(path), cfg.from_dict({"targets": [target], **extra}))
    return [f for f in report.findings if f.rule == "MG003"]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_mg003_sees_the_graph_the_converter_sees(files, conversions, case) -> None:
    name, how, target = case
    found = _mg003(files[(name, how)], target)
    assert sorted((f.location.op, f.location.module) for f in found) == EXPECTED[case]
    outcome = conversions[case]
    if not found:
        assert outcome["ok"], f"MG003 flagged nothing but {target} failed: {outcome['error']}"
        return
    assert not outcome["ok"], f"MG003 flagged {found} but {target} converted"
    blamed = {mg003._bare(f.location.op) for f in found}
    named = outcome["error"].split("'")[1]  # the op the converter's error names
    assert mg003._bare(named) in blamed, outcome["error"]
    if target == "coreml":  # coremltools lists every op it lacks: MG003 says the same
        keys = {opsupport.ct_torchscript_key(f.location.op) for f in found}
        assert keys == set(outcome["missing"])


def test_the_views_are_the_converters_graph_passes(files) -> None:
    """What each view holds after the passes (no conversion needed to see it)."""
    graph = loaders.load(str(files[("guarded", "script")]), loaders.Policy())
    graph.infer_shapes()
    kinds = {t: {op.target for op in ops} for t, ops in graph.metadata["converter_ops"].items()}
    saved = {op.target for op in graph.ops}
    assert {"aten::chunk", "aten::Bool", "prim::RaiseException"} <= saved
    assert "aten::chunk" not in kinds["coreml"] and "prim::ConstantChunk" in kinds["coreml"]
    assert "prim::RaiseException" in kinds["coreml"]  # coremltools has no pass that drops it
    assert not kinds["onnx"] & {"aten::chunk", "aten::Bool", "prim::RaiseException", "aten::dim"}
    assert {"prim::ConstantChunk", "prim::If", "aten::linear"} <= kinds["onnx"]


# -- measured beats predicted (--convert) -------------------------------------------------------
@pytest.mark.slow
def test_a_failed_conversion_keeps_the_predictions_that_agree_or_add(files) -> None:
    found = _mg003(files[("two", "trace")], "coreml", convert=["coreml"])
    assert [(f.location.op, f.message) for f in found] == [
        ("aten::kthvalue", "aten::kthvalue will not convert to Core ML: coremltools 9.0 has no "
         "converter for 'kthvalue'; the Core ML conversion failed on it"),
        ("aten::erfinv", "aten::erfinv will not convert to Core ML: coremltools 9.0 has no "
         "converter for 'erfinv' (not reached: the Core ML conversion failed earlier, at "
         "'kthvalue')"),
    ]  # fmt: skip
    found = _mg003(files[("two", "trace")], "onnx", convert=["onnx"])
    assert [f.message.rsplit("; ", 1)[-1].rsplit(" (", 1)[-1] for f in found] == [
        "the ONNX export failed on it",
        "not reached: the ONNX export failed earlier, at 'kthvalue')",
    ]


@pytest.mark.slow
def test_a_conversion_that_succeeded_drops_the_prediction(files, monkeypatch) -> None:
    """A wrong prediction (a snapshot without aten::linear) next to a conversion that worked:
    the report keeps a note of it, never "will not convert"."""
    real = opsupport.load()
    registry = real.coreml_registry - {"linear"}
    monkeypatch.setattr(opsupport, "load", lambda: opsupport.OpSupport(real.snapshot, registry))
    path = str(files[("chunky", "trace")])
    assert _mg003(Path(path), "coreml") != []  # the prediction, without a conversion
    report = engine.check_file(path, cfg.from_dict({"targets": ["coreml"], "convert": ["coreml"]}))
    assert [f.rule for f in report.findings if f.rule in ("MG003", "MG101")] == []
    assert (
        "MG003: coreml: predicted that 1 op(s) would not convert (aten::linear), but the "
        "Core ML conversion succeeded: the prediction was dropped"
    ) in report.notes


def _graph(checks: dict) -> ModelGraph:
    graph = ModelGraph("m.pt", format="torchscript", has_graph=True)
    graph.ops = [Op("aten::kthvalue#3", "aten::kthvalue", module="head")]
    graph.checks = ChecksResult.from_dict(checks)
    return graph


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        ({}, "aten::kthvalue will not convert to ONNX: torch.onnx (TorchScript exporter) has no "
             "symbolic for 'aten::kthvalue' at opset 20"),
        ({"onnx": {"ok": True}}, None),
        # exported; ONNX Runtime refused the file: the export prediction was wrong (MG102 says)
        ({"onnx": {"ok": False, "kind": "error", "stage": "creating an ONNX Runtime session"}},
         None),
        # a time-out says nothing about ops: the prediction stands as it is
        ({"onnx": {"ok": False, "kind": "timeout", "stage": "exporting to ONNX"}},
         "aten::kthvalue will not convert to ONNX: torch.onnx (TorchScript exporter) has no "
         "symbolic for 'aten::kthvalue' at opset 20"),
        ({"onnx": {"ok": False, "kind": "error", "stage": "exporting to ONNX", "op": None}},
         "aten::kthvalue will not convert to ONNX: torch.onnx (TorchScript exporter) has no "
         "symbolic for 'aten::kthvalue' at opset 20 (the ONNX export failed too, without "
         "naming an op)"),
    ],
    ids=["not converted", "exported", "session failed", "timed out", "failed, no op"],
)  # fmt: skip
def test_mg003_reads_the_measured_outcome(checks, expected) -> None:
    out = list(mg003.check(_graph(checks), {"targets": ["onnx"]}))
    problems = [o for o in out if not isinstance(o, Note)]
    if expected is None:
        assert problems == []
        assert [o.text for o in out] == [
            "onnx: predicted that 1 op(s) would not convert (aten::kthvalue), but the "
            "ONNX export succeeded: the prediction was dropped"
        ]
        return
    assert [(p.location, p.message) for p in problems] == [
        (Location("m.pt", module="head", op="aten::kthvalue"), f"head: {expected}")
    ]


# -- shapes and names ---------------------------------------------------------------------------
class Block(nn.Module):
    """A traced ResNet-style block: in-place add with alpha by position, relu_, batch_norm,
    adaptive pooling, flatten, cat, mean, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d((3, 3))
        self.fc = nn.Linear(27 + 3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.conv(x)))
        y += x
        y = self.relu(y)
        z = torch.flatten(self.pool(y), 1)
        z = torch.cat([z, y.mean((2, 3))], 1)
        return self.fc(z)


def test_shapes_follow_the_schemas_through_a_traced_block(tmp_path: Path) -> None:
    path = tmp_path / "block.ts.pt"
    torch.jit.trace(Block().eval(), torch.randn(1, 3, 10, 10)).save(str(path))
    graph = loaders.load(str(path), loaders.Policy())
    graph.infer_shapes()
    shapes = {op.target: graph.values[op.outputs[0]].shape for op in graph.ops if op.outputs}
    assert shapes["aten::add_"] == (1, 3, 10, 10)  # alpha is keyword-only in the schema
    assert shapes["aten::adaptive_avg_pool2d"] == (1, 3, 3, 3)
    assert shapes["aten::cat"] == (1, 30)
    assert shapes["aten::linear"] == (1, 4)
    report = engine.check_file(str(path), cfg.from_dict({"targets": ["coreml"]}))
    assert [(f.rule, f.location.module, f.message) for f in report.findings] == [
        ("MG006", "pool", "pool: AdaptiveAvgPool2d to 3x3 from a 10x10 input does not divide "
         "(10 into 3): coremltools emits one op per output window (9 windows) and ONNX export "
         "must decompose it"),
    ]  # fmt: skip
    assert "MG006" not in report.skipped


class TwoInputs(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.sum(1, keepdim=True) * y.mean()


def test_one_mg005_per_input_lists_every_dynamic_dim(tmp_path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=8)
    seq = torch.export.Dim("seq", min=2, max=64)
    n = torch.export.Dim("n")
    ep = torch.export.export(
        TwoInputs(), (torch.randn(2, 4, 8), torch.randn(3)),
        dynamic_shapes={"x": {0: batch, 2: seq}, "y": {0: n}},
    )  # fmt: skip
    path = tmp_path / "dyn.pt2"
    torch.export.save(ep, str(path))
    # torch.export.save records symbols and ranges, not the Dim names
    assert b"batch" not in path.read_bytes() and b"seq" not in path.read_bytes()
    report = engine.check_file(str(path), cfg.from_dict({"targets": ["coreml"]}))
    got = [(f.rule, f.location.input, f.message) for f in report.findings if f.rule == "MG005"]
    sx, sseq = _dims(ep, "x", (0, 2))
    (sy,) = _dims(ep, "y", (0,))
    assert got == [
        ("MG005", "x", f"input x ({sx}, 4, {sseq}): dimensions 0 and 2 are dynamic ({sx}, range "
         f"1..8; {sseq}, range 2..64); Core ML needs them declared: ct.TensorType(shape=("
         "ct.RangeDim(1, 8), 4, ct.RangeDim(2, 64))) or ct.EnumeratedShapes"),
        ("MG005", "y", f"input y ({sy}): dimension 0 is dynamic ({sy}, range 0..∞); Core ML needs "
         "it fixed or bounded: ct.RangeDim(lower, upper) with an upper bound, or "
         "ct.EnumeratedShapes"),
    ]  # fmt: skip


def _dims(ep, name: str, indices: tuple[int, ...]) -> list[str]:
    node = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == name)
    return [str(node.meta["val"].shape[i]) for i in indices]
