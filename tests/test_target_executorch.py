"""The ExecuTorch target against ExecuTorch itself, both ways.

Small models built here: a CNN with hardswish (lowers, delegates to XNNPACK, loads and runs),
one using sort / topk / cumsum (lowers and writes a ``.pte`` that the runtime refuses to load:
"Missing operator: aten::sort.values"), a transformer encoder with a causal mask (runs, with
its layer norms and mask ops on portable kernels) and an FFT model (fails to lower).
modelgate's report is compared with what the bare toolchain does on the same files in a
fresh process: the same delegation counts and operator list, MG108 exactly when the runtime
refuses the program, MG107 at the op when lowering fails, and none when it runs. The CNN is
also lowered with the Core ML backend (``executorch: {backend: coreml}``), whose delegate this
machine's runtime does not register: the same delegation as the bare toolchain's, and the
``.pte`` reported as not run, with the reason, where the bare runtime refuses to load it.
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
COREML_RUNS = f"{__name__}.coreml"  # the same with the Core ML backend, on the CNN
FILES = ("cnn.pt2", "sorts.pt2", "encoder.pt2", "spectrum.pt2", "dynamic.pt2")
COREML_CONFIG = """\
executorch: {backend: coreml}
budget: {latency_ms: 100, drift: 0.01, targets: {executorch: {latency_ms: 100}}}
"""
NOT_RUN = (
    "the Core ML delegate runs on Apple devices; this machine's ExecuTorch runtime has no "
    "CoreMLBackend"
)

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

# the bare toolchain on the same files: lower, list operators, load and run; with XNNPACK, or
# the partitioner an argument names ("coreml:cnn.pt2"); and the delegates the runtime registers
BARE_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    partitioners = {"xnnpack": XnnpackPartitioner, "coreml": CoreMLPartitioner}
    out = {"backends": sorted(Runtime.get().backend_registry.registered_backend_names)}
    for arg in sys.argv[1:]:
        backend, _, path = arg.rpartition(":")
        program = torch.export.load(path)
        try:
            partitioner = partitioners[backend or "xnnpack"]()
            edge = to_edge_transform_and_lower(program, partitioner=[partitioner])
        except Exception as exc:
            out[arg] = {"lowers": False, "error": f"{type(exc).__name__}: {exc}"}
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
        out[arg] = {"lowers": True, "delegated": info.num_delegated_nodes,
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
    # the dynamic-shape CNN: its batch from 2 up, which modelgate fills in with its minimum
    batch = {0: torch.export.Dim("batch", min=2)}
    program = torch.export.export(models.CNN().eval(), (torch.randn(2, 3, 16, 16),),
                                  dynamic_shapes=(batch,))  # fmt: skip
    torch.export.save(program, root / "dynamic.pt2")
    (root / "coreml.yaml").write_text(COREML_CONFIG, encoding="utf-8")
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
            [sys.executable, "-c", BARE_SCRIPT, *FILES, "coreml:cnn.pt2"], cwd=root,
            timeout=600,
        ),
    ]  # fmt: skip


def _coreml_commands(root: Path) -> list[background.Command]:
    """modelgate with the Core ML backend on the CNN (the bare toolchain's is in RUNS')."""
    env = {**background.environ(), "MODELGATE_NO_PROGRESS": "1"}
    return [
        background.Command(
            [sys.executable, "-m", "modelgate", "check", "cnn.pt2", "--config", "coreml.yaml",
             "--target", "executorch", "--convert", "executorch", "--format", "json", "-j", "1"],
            cwd=root, env=env, timeout=600,
        ),
    ]  # fmt: skip


def start_background(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build the models at the start of the session; both runs go to the background, side by
    side (modelgate with one worker: its two lowerings run one after the other)."""
    root = _AHEAD["root"] = _build(tmp_path_factory)
    background.add(RUNS, _commands(root))
    background.add(COREML_RUNS, _coreml_commands(root))


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


@pytest.fixture(scope="module")
def coreml(root: Path) -> dict:
    (done,) = background.run(COREML_RUNS, _coreml_commands(root))
    assert done.returncode == 0, done.stderr[-3000:]  # warnings only: nothing failed
    (model,) = json.loads(done.stdout)["models"]
    return model


@pytest.mark.parametrize("name", ["cnn.pt2", "sorts.pt2", "encoder.pt2", "dynamic.pt2"])
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
    assert model["metrics"]["drift_detail"]["of"] == "ExecuTorch runtime"
    assert model["metrics"]["drift_detail"]["method"].startswith(
        "the .pte run by the ExecuTorch runtime (XNNPACK)"
    )
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


def test_mg003_predicted_the_missing_kernel_that_mg108_reports(report) -> None:
    """The static prediction (targets/executorch_ops.json) said aten::sort would not load;
    the real lowering then decided, and MG108 reports it: the prediction is a note."""
    notes = [n for n in report["sorts.pt2"]["notes"] if n.startswith("MG003: executorch:")]
    assert notes == [
        "MG003: executorch: predicted that 1 op(s) would not convert or load (aten::sort); the "
        "ExecuTorch lowering succeeded and the ExecuTorch runtime refused the program, which "
        "MG108 reports: the prediction was dropped"
    ]
    assert [n for n in report["cnn.pt2"]["notes"] if n.startswith("MG003:")] == []


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


def test_the_threads_setting_reaches_the_runtime(report) -> None:
    """measure.threads (1 by default) is the threadpool the .pte runs on: the report shows the
    count the child's getter read back after setting it, where the pool's own default is the
    machine's core count (and the label "XNNPACK's default (N)" if setting it did not take)."""
    import os

    latency = report["cnn.pt2"]["metrics"]["latency"]
    assert latency["threads"] == 1
    if (os.cpu_count() or 1) == 1:
        pytest.skip("one core: the pool's default is 1 thread too, so this proves nothing")


@pytest.mark.parametrize(
    ("calls", "expected"),
    [(("reset", "count"), 3), (("count",), "default (8)"), ((), "default")],
)
def test_the_threadpool_label_is_the_count_read_back(monkeypatch, calls, expected) -> None:
    """Without ``_unsafe_reset_threadpool`` (another ExecuTorch) the label stays "default",
    with the count the getter reads when there is one."""
    import types

    from modelgate.targets import executorch

    pool = {"threads": 8}
    lib = types.SimpleNamespace()
    if "reset" in calls:
        lib._unsafe_reset_threadpool = lambda n: pool.update(threads=n)
    if "count" in calls:
        lib._threadpool_get_thread_count = lambda: pool["threads"]
    fake = types.ModuleType("executorch.extension.pybindings")
    fake.portable_lib = lib
    monkeypatch.setitem(sys.modules, "executorch.extension.pybindings", fake)
    assert executorch.threadpool(3) == expected


def test_the_coreml_backend_lowers_as_the_toolchain_and_is_not_run_here(coreml, bare) -> None:
    theirs = bare["coreml:cnn.pt2"]
    assert "CoreMLBackend" not in bare["backends"] and theirs["loads"] is False
    ours = coreml["metrics"]["conversions"]["executorch"]
    assert (ours["delegated_nodes"], ours["nodes"]) == (theirs["delegated"], theirs["nodes"])
    assert ours["operators"] == theirs["operators"]  # the portable ones: their kernels exist
    # the Core ML payload embeds a fresh model identifier: the same length, other bytes
    assert ours["size_mb"] == pytest.approx(theirs["bytes"] / 1e6, abs=1e-3)
    assert (ours["ok"], ours["backend"], ours["run"]["ok"], ours["run"]["error"]) == (
        True, "Core ML", False, NOT_RUN
    )  # fmt: skip
    assert ours["run"]["elsewhere"].startswith("measure it on the device")
    (row,) = coreml["metrics"]["targets"]
    nodes = f"{theirs['delegated']}/{theirs['nodes']}"
    assert row == {
        "target": "executorch", "result": "ok", "size_mb": ours["size_mb"],
        "latency_ms": None, "drift": None,
        "detail": f"{nodes} nodes on Core ML; not run: {NOT_RUN}",
    }  # fmt: skip


def test_a_pte_not_run_says_why_in_the_figures_the_budget_and_the_findings(coreml) -> None:
    metrics = coreml["metrics"]
    assert metrics["size_from"] == "ExecuTorch" and metrics.get("latency") is None
    assert metrics["not_measured"] == {
        "latency_ms": f"not measured: ExecuTorch runtime did not run it: {NOT_RUN}",
        "drift": f"not measured: {NOT_RUN}",
    }
    budget = metrics["budget"]
    assert {k: (v["passed"], v["reason"]) for k, v in budget.items()} == {
        "latency_ms": (None, metrics["not_measured"]["latency_ms"]),
        "drift": (None, metrics["not_measured"]["drift"]),
        "executorch.latency_ms": (None, metrics["not_measured"]["latency_ms"]),
    }
    # never a silent pass: each unjudged limit is MG304, the unrun program MG104 (warnings)
    assert coreml["passed"] is True
    assert [(f["rule"], f["key"], f["severity"]) for f in coreml["findings"]] == [
        ("MG104", "executorch-run", "warning"),
        ("MG304", "budget:latency_ms:unjudged", "warning"),
        ("MG304", "budget:drift:unjudged", "warning"),
        ("MG304", "budget:executorch.latency_ms:unjudged", "warning"),
    ]
    assert all(NOT_RUN in f["message"] for f in coreml["findings"])
    assert coreml["findings"][0]["message"] == (
        f"ExecuTorch: the converted program was not run here: {NOT_RUN}; its drift and "
        "latency are not measured"
    )


def test_the_backend_option_is_in_the_schema_and_a_bad_one_is_a_config_error() -> None:
    from modelgate import config as cfg
    from modelgate.targets import executorch

    section = cfg.shipped_schema()["properties"]["executorch"]
    assert section["properties"]["backend"]["enum"] == ["xnnpack", "coreml", "vulkan"]
    assert list(executorch.BACKENDS) == ["xnnpack", "coreml", "vulkan"]
    settings = cfg.from_dict({"executorch": {"backend": "coreml"}}).checks
    assert executorch.job_options(settings) == {"backend": "coreml"}
    assert executorch.job_options(cfg.from_dict({}).checks) == {"backend": "xnnpack"}
    with pytest.raises(cfg.ConfigError) as err:
        cfg.from_dict({"executorch": {"backend": "tpu"}})
    assert "executorch.backend: 'tpu' is not one of ['xnnpack', 'coreml', 'vulkan']" in str(
        err.value
    )
    with pytest.raises(cfg.ConfigError) as err:
        cfg.from_dict({"executorch": {"threads": 2}})
    assert 'unknown key "threads" under executorch (known: backend)' in str(err.value)


def test_a_dynamic_batch_lowers_and_runs_at_the_filled_in_batch(report, bare) -> None:
    """The batch dimension is symbolic: the program lowers with it, and modelgate runs the
    .pte at the batch it fills in (the dimension's minimum, 2), as the bare run does."""
    model = report["dynamic.pt2"]
    assert bare["dynamic.pt2"]["loads"] is True
    assert model["passed"] is True and model["findings"] == []  # ExecuTorch takes the dims
    assert model["metrics"]["measured_inputs"][0]["shape"] == [2, 3, 16, 16]
    ours = model["metrics"]["conversions"]["executorch"]
    assert ours["ok"] is True and ours["drift"] < 1e-4 and ours["latency_ms"] > 0
