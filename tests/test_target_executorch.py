"""The ExecuTorch target against ExecuTorch itself, both ways.

Small models built here: a CNN with hardswish (lowers, delegates to XNNPACK, loads and runs),
one using sort / topk / cumsum (lowers and writes a ``.pte`` that the runtime refuses to load:
"Missing operator: aten::sort.values"), a transformer encoder with a causal mask (runs, with
its layer norms and mask ops on portable kernels) and an FFT model (fails to lower).
modelgate's report is compared with what the bare toolchain does on the same files in a
fresh process: the same delegation counts and operator list, MG108 exactly when the runtime
refuses the program, MG107 at the op when lowering fails, and none when it runs.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import background
import pytest

torch = pytest.importorskip("torch")
TOOLCHAIN = ("executorch",)  # run in child processes: a broken install fails there, never skips
if not all(importlib.util.find_spec(p) for p in TOOLCHAIN):
    pytest.skip("the toolchain is not installed", allow_module_level=True)

_AHEAD: dict[str, Path] = {}
RUNS = f"{__name__}.runs"  # modelgate's check and the bare toolchain, side by side
FILES = ("cnn.pt2", "sorts.pt2", "encoder.pt2", "spectrum.pt2")

MODELS = textwrap.dedent(
    """
    import torch

    class CNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.act = torch.nn.Hardswish()
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(self.act(self.conv(x)).mean((2, 3)))

    class Sorts(torch.nn.Module):
        def forward(self, x):
            values, _ = torch.sort(x, dim=1)
            top = torch.topk(x, 2, dim=1).values
            return torch.cumsum(values, 1)[:, :2] + top

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
            self.enc = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.emb = torch.nn.Embedding(50, 16)

        def forward(self, ids):
            mask = torch.nn.Transformer.generate_square_subsequent_mask(ids.shape[1])
            return self.enc(self.emb(ids), mask=mask, is_causal=True)

    class Spectrum(torch.nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x).abs()
    """
)

# the bare toolchain on the same files: lower, list operators, load and run
BARE_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    out = {}
    for path in sys.argv[1:]:
        program = torch.export.load(path)
        try:
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        except Exception as exc:
            out[path] = {"lowers": False, "error": f"{type(exc).__name__}: {exc}"}
            continue
        info = get_delegation_info(edge.exported_program().graph_module)
        pte = edge.to_executorch()
        plan = pte.executorch_program.execution_plan[0]
        operators = sorted(f"{o.name}.{o.overload}" for o in plan.operators)
        try:
            method = Runtime.get().load_program(pte.buffer).load_method("forward")
            inputs = list(program.example_inputs[0])
            method.execute(inputs)
            loads = True
        except Exception:
            loads = False
        out[path] = {"lowers": True, "delegated": info.num_delegated_nodes,
                     "nodes": info.num_delegated_nodes + info.num_non_delegated_nodes,
                     "operators": operators, "loads": loads, "bytes": len(pte.buffer)}
    print(json.dumps(out))
    """
)


def _build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("executorch")
    (root / "models.py").write_text(MODELS, encoding="utf-8")
    sys.path.insert(0, str(root))
    try:
        import models
    finally:
        sys.path.remove(str(root))
    torch.manual_seed(0)
    built = [
        ("cnn", models.CNN(), torch.randn(1, 3, 16, 16)),
        ("sorts", models.Sorts(), torch.randn(1, 8)),
        ("encoder", models.Encoder(), torch.randint(0, 50, (1, 8))),
        ("spectrum", models.Spectrum(), torch.randn(1, 8)),
    ]
    for name, model, sample in built:
        program = torch.export.export(model.eval(), (sample,))
        torch.export.save(program, root / f"{name}.pt2")
    return root


def _commands(root: Path) -> list[background.Command]:
    env = {**background.environ(), "MODELGATE_NO_PROGRESS": "1"}
    return [
        background.Command(
            [sys.executable, "-m", "modelgate", "check", *FILES,
             "--target", "executorch", "--convert", "executorch", "--format", "json", "-j", "1"],
            cwd=root, env=env, timeout=600,
        ),
        background.Command(
            [sys.executable, "-c", BARE_SCRIPT, *FILES], cwd=root, timeout=600
        ),
    ]  # fmt: skip


def start_background(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build the models at the start of the session; both runs go to the background, side by
    side (modelgate with one worker: its two lowerings run one after the other)."""
    root = _AHEAD["root"] = _build(tmp_path_factory)
    background.add(RUNS, _commands(root))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _AHEAD.get("root") or _build(tmp_path_factory)


@pytest.fixture(scope="module")
def report(root: Path) -> dict[str, dict]:
    done, _ = background.run(RUNS, _commands(root))
    assert done.returncode == 1, done.stderr[-3000:]  # sorts.pt2 will not load
    return {m["path"]: m for m in json.loads(done.stdout)["models"]}


@pytest.fixture(scope="module")
def bare(root: Path) -> dict[str, dict]:
    _, done = background.run(RUNS, _commands(root))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["cnn.pt2", "sorts.pt2", "encoder.pt2"])
def test_delegation_and_operators_are_the_toolchains(report, bare, name: str) -> None:
    ours = report[name]["metrics"]["conversions"]["executorch"]
    theirs = bare[name]
    assert (ours["delegated_nodes"], ours["nodes"]) == (theirs["delegated"], theirs["nodes"])
    assert ours["operators"] == theirs["operators"]
    assert ours["size_mb"] == round(theirs["bytes"] / 1e6, 3)
    assert ours["backend"] == "XNNPACK"


def test_a_program_the_runtime_runs_passes_with_its_figures(report, bare) -> None:
    model = report["cnn.pt2"]
    assert bare["cnn.pt2"]["loads"] is True
    assert model["passed"] is True and model["findings"] == []
    ours = model["metrics"]["conversions"]["executorch"]
    assert ours["ok"] is True and ours["drift"] < 1e-4
    assert ours["portable_ops"] == [
        {"op": "aten::mean", "count": 1, "macs": 0, "macs_share": 0.0}
    ]  # conv, hardswish and linear went to XNNPACK; only the mean stayed portable
    assert model["metrics"]["size_from"] == "ExecuTorch"
    from importlib import metadata

    runtime = f"ExecuTorch {metadata.version('executorch')} CPU (XNNPACK)"
    assert model["metrics"]["latency"]["runtime"] == runtime
    assert model["metrics"]["drift_detail"]["of"] == "ExecuTorch runtime (XNNPACK)"
    (row,) = model["metrics"]["targets"]
    assert (row["target"], row["result"], row["drift"]) == ("executorch", "ok", ours["drift"])
    assert row["latency_ms"] == model["metrics"]["latency_ms"] == ours["latency_ms"]


def test_a_program_the_runtime_refuses_is_mg108_at_the_op(report, bare) -> None:
    model = report["sorts.pt2"]
    assert bare["sorts.pt2"]["loads"] is False
    assert [(f["rule"], f["key"], f["location"]["op"], f["location"]["source"]["line"])
            for f in model["findings"]] == [
        ("MG108", "executorch:aten::sort.values", "aten::sort", 16)
    ]  # fmt: skip
    assert model["findings"][0]["message"] == (
        "the ExecuTorch runtime has no kernel for aten::sort.values: the converted program "
        "will not load"
    )
    ours = model["metrics"]["conversions"]["executorch"]
    assert ours["missing_kernels"] == ["aten::sort.values"]
    (row,) = model["metrics"]["targets"]
    nodes = f"{bare['sorts.pt2']['delegated']}/{bare['sorts.pt2']['nodes']}"
    assert row == {
        "target": "executorch", "result": "will not load", "size_mb": ours["size_mb"],
        "latency_ms": None, "drift": None,
        "detail": f"{nodes} nodes on XNNPACK; no kernel for aten::sort.values; portable: "
        "aten::sort x1, aten::topk x1, aten::cumsum x1",
    }  # fmt: skip
    # topk and cumsum have portable kernels: the program needs them, and they are not flagged
    assert {"aten::topk.values", "aten::cumsum.out"} <= set(ours["operators"])


def test_mg003_says_it_has_no_static_table(report) -> None:
    assert (
        "MG003: executorch: modelgate has no static op table for ExecuTorch; --convert "
        "executorch runs the ExecuTorch lowering and reports what fails"
    ) in report["cnn.pt2"]["notes"]


def test_a_transformer_keeps_its_mask_and_norm_ops_on_portable_kernels(report, bare) -> None:
    ours = report["encoder.pt2"]["metrics"]["conversions"]["executorch"]
    assert bare["encoder.pt2"]["loads"] is True and ours["ok"] is True
    portable = {e["op"] for e in ours["portable_ops"]}
    assert {"aten::expand_copy", "aten::native_layer_norm"} <= portable
    assert ours["delegated_nodes"] < ours["nodes"]  # the matmuls went to XNNPACK, not all
    assert report["encoder.pt2"]["findings"] == []  # light ops: no MACs share worth MG109


def test_a_lowering_failure_is_mg107_at_the_op_and_line(report, bare) -> None:
    assert bare["spectrum.pt2"]["lowers"] is False
    assert bare["spectrum.pt2"]["error"].startswith("SpecViolationError")
    (finding,) = report["spectrum.pt2"]["findings"]
    where = finding["location"]
    line = MODELS.splitlines().index("        return torch.fft.rfft(x).abs()") + 1
    assert (finding["rule"], where["op"], where["source"]["line"]) == ("MG107", "aten::abs", line)
    assert finding["message"].startswith("ExecuTorch lowering failed at abs: SpecViolationError")
