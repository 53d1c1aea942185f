"""MG003's static predictions for ExecuTorch and LiteRT against their real toolchains, both ways.

The predictions come from the op tables the target modules ship (``targets/*_ops.json``, what
each toolchain did with torch's own OpInfo samples). Here they meet models the tables never
saw: the edge targets' five models (a CNN with hardswish, a transformer encoder with a causal
mask, sort / topk / cumsum, an FFT, a dynamic-shape CNN) and single-op models. For each model
and target, ``modelgate check --target T`` (no conversion) is run beside the bare toolchain
in a fresh process: a model with an MG003 error must fail there (lowering, conversion or
loading), a model without one and without an "arguments decide" note must go through, and
a flagged op is the one the toolchain failed on.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import textwrap
from pathlib import Path

import background
import pytest
import torchmodels

torch = pytest.importorskip("torch")
TOOLCHAIN = ("executorch", "litert_torch", "ai_edge_litert")  # run in child processes
if not all(importlib.util.find_spec(p) for p in TOOLCHAIN):
    pytest.skip("the toolchains are not installed", allow_module_level=True)

TARGETS = ("executorch", "litert")
RUNS = f"{__name__}.runs"
_AHEAD: dict[str, Path] = {}

ET_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    kernels = set(Runtime.get().operator_registry.operator_names)
    out = {}
    for path in sys.argv[1:]:
        program = torch.export.load(path)
        try:
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            pte = edge.to_executorch()
        except Exception as exc:
            out[path] = {"ok": False, "stage": "lowering", "error": f"{type(exc).__name__}: {exc}"}
            continue
        needed = sorted({f"{o.name}.{o.overload}" if o.overload else o.name
                         for plan in pte.executorch_program.execution_plan
                         for o in plan.operators})
        missing = [k for k in needed if k not in kernels]
        try:
            Runtime.get().load_program(pte.buffer).load_method("forward")
            out[path] = {"ok": not missing, "stage": "loading", "missing": missing}
        except Exception as exc:
            out[path] = {"ok": False, "stage": "loading", "missing": missing, "error": str(exc)}
    print(json.dumps(out))
    """
)
LITERT_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, warnings
    warnings.simplefilter("ignore")
    import litert_torch, torch
    from ai_edge_litert.interpreter import Interpreter

    out = {}
    for path in sys.argv[1:]:
        program = torch.export.load(path)
        try:
            model = litert_torch.convert(program.module(), tuple(program.example_inputs[0]))
            model.export(path + ".tflite")
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            out[path] = {"ok": False, "stage": "conversion", "error": error}
            continue
        try:
            interpreter = Interpreter(model_path=path + ".tflite", num_threads=1)
            interpreter.allocate_tensors()
            out[path] = {"ok": True}
        except Exception as exc:
            out[path] = {"ok": False, "stage": "loading", "error": str(exc)}
    print(json.dumps(out))
    """
)


class KthValue(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.kthvalue(x, 2, dim=1).values


class ArgSort(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.argsort(x, dim=1).float() + x


class Cholesky(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spd = x @ x.transpose(0, 1) + torch.eye(x.shape[0])
        return torch.linalg.cholesky(spd)


class Gated(torch.nn.Module):
    """Ops a mobile model is made of: linear, GELU, softmax, layer norm, sigmoid gating."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.fc(x))
        return self.norm(h * torch.sigmoid(x)).softmax(-1)


SINGLE = {"kthvalue.pt2": KthValue, "argsort.pt2": ArgSort, "cholesky.pt2": Cholesky,
          "gated.pt2": Gated}  # fmt: skip


def _build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = torchmodels.edge_models(tmp_path_factory.mktemp)
    torch.manual_seed(0)
    for name, model in SINGLE.items():
        if not (root / name).exists():
            program = torch.export.export(model().eval(), (torch.randn(4, 8),))
            torch.export.save(program, root / name)
    return root, [*torchmodels.EDGE, *SINGLE]


def _commands(root: Path, files: list[str]) -> list[background.Command]:
    env = {**background.environ(), "MODELGATE_NO_PROGRESS": "1"}
    targets = [a for t in TARGETS for a in ("--target", t)]
    return [
        background.Command(
            [sys.executable, "-m", "modelgate", "check", *files, *targets, "--format", "json",
             "-j", "1"], cwd=root, env=env, timeout=300,
        ),
        background.Command([sys.executable, "-c", ET_SCRIPT, *files], cwd=root, timeout=600),
        background.Command([sys.executable, "-c", LITERT_SCRIPT, *files], cwd=root, timeout=600),
    ]  # fmt: skip


def start_background(tmp_path_factory: pytest.TempPathFactory) -> None:
    root, files = _build(tmp_path_factory)
    _AHEAD["root"] = root
    background.add(RUNS, _commands(root, files))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, dict]]:
    root, files = _build(tmp_path_factory)
    ours, et, lite = background.run(RUNS, _commands(root, files))
    assert ours.returncode in (0, 1), ours.stderr[-3000:]
    for bare in (et, lite):
        assert bare.returncode == 0, bare.stderr[-3000:]
    report = {m["path"]: m for m in json.loads(ours.stdout)["models"]}
    done = zip(TARGETS, (et, lite), strict=True)
    real = {t: json.loads(b.stdout.strip().splitlines()[-1]) for t, b in done}
    return report, real


def _flagged(model: dict, target: str) -> list[str]:
    return sorted({f["location"]["op"] for f in model["findings"]
                   if f["rule"] == "MG003" and f["key"].startswith(f"{target}:")})  # fmt: skip


def _doubted(model: dict, target: str) -> list[str]:
    """The ops MG003's notes say it cannot vouch for: never observed, observed on other
    dtypes, or observed to depend on their arguments."""
    out = []
    for note in model.get("notes") or []:
        if note.startswith(f"MG003: {target}: ") and "unknown: " in note:
            out += note.split("unknown: ", 1)[1].split(", ")
        elif note.startswith(f"MG003: {target}: ") and "arguments may decide" in note:
            out += re.findall(r"(\w+::[\w.]+): \d+ of its \d+ OpInfo samples failed", note)
    return sorted(out)


CASES = [(f, t) for f in [*torchmodels.EDGE, *SINGLE] for t in TARGETS]
# (model, target) -> (the ops MG003 flags, the ops it cannot vouch for), from the tables that
# ship (targets/*_ops.json): regenerating them may change this table, never the test below
EXPECTED = {
    ("cnn.pt2", "executorch"): ([], []),
    ("cnn.pt2", "litert"): ([], []),
    ("encoder.pt2", "executorch"): ([], ["aten::contiguous"]),  # never observed
    ("encoder.pt2", "litert"): ([], ["aten::contiguous"]),
    ("sorts.pt2", "executorch"): (["aten::sort"], []),  # no kernel for aten::sort.values
    ("sorts.pt2", "litert"): ([], ["aten::sort"]),  # failed on its samples' arguments
    ("spectrum.pt2", "executorch"): ([], ["aten::abs"]),  # of complex64: never observed
    ("spectrum.pt2", "litert"): ([], ["aten::abs", "aten::fft_rfft"]),
    ("dynamic.pt2", "executorch"): ([], []),
    ("dynamic.pt2", "litert"): ([], []),
    ("kthvalue.pt2", "executorch"): (["aten::kthvalue"], []),  # not core ATen
    ("kthvalue.pt2", "litert"): (["aten::kthvalue"], []),  # no lowering
    ("argsort.pt2", "executorch"): (["aten::argsort"], []),
    ("argsort.pt2", "litert"): ([], ["aten::argsort"]),
    ("cholesky.pt2", "executorch"): ([], ["aten::linalg_cholesky"]),  # fails as cholesky_ex
    ("cholesky.pt2", "litert"): (["aten::eye"], ["aten::linalg_cholesky"]),  # STABLEHLO_IOTA
    ("gated.pt2", "executorch"): ([], []),
    ("gated.pt2", "litert"): ([], ["aten::softmax.int"]),  # some of its samples failed
}


def test_the_predictions_are_the_shipped_tables(runs) -> None:
    report, _ = runs
    got = {(f, t): (_flagged(report[f], t), _doubted(report[f], t)) for f, t in CASES}
    assert got == EXPECTED


@pytest.mark.parametrize(("name", "target"), CASES, ids=[f"{f}-{t}" for f, t in CASES])
def test_the_prediction_agrees_with_the_toolchain_both_ways(runs, name: str, target: str) -> None:
    """Flagged: the toolchain fails. Failed: MG003 flagged it or said it cannot vouch for an
    op (never a silent pass). Neither flagged nor doubted: the toolchain goes through."""
    report, real = runs
    model, outcome = report[name], real[target][name]
    flagged, doubted = _flagged(model, target), _doubted(model, target)
    if flagged:
        assert outcome["ok"] is False, (flagged, outcome)
    if outcome["ok"] is False:
        assert flagged or doubted, (model["notes"], outcome)
    if not flagged and not doubted:
        assert outcome["ok"] is True, (model["notes"], outcome)


def test_a_missing_kernel_is_predicted_as_the_one_the_program_lacks(runs) -> None:
    report, real = runs
    (finding,) = [f for f in report["sorts.pt2"]["findings"] if f["key"].startswith("executorch:")]
    assert real["executorch"]["sorts.pt2"]["missing"] == ["aten::sort.values"]
    assert "the program then needs aten::sort.values, which the ExecuTorch runtime has no " \
        "kernel for" in finding["message"]  # fmt: skip
    assert finding["location"]["source"]["line"] > 0  # at the line that sorts


def test_a_lowering_failure_is_predicted_at_the_op_the_toolchain_names(runs) -> None:
    report, real = runs
    for target, said in (("executorch", "kthvalue.default is not in Core ATen"),
                         ("litert", "Lowering not found: aten.kthvalue.default")):  # fmt: skip
        (finding,) = [f for f in report["kthvalue.pt2"]["findings"]
                      if f["key"].startswith(f"{target}:")]  # fmt: skip
        assert said in finding["message"] and said in real[target]["kthvalue.pt2"]["error"]
