"""What the checks and the budget write onto a graph, built in memory for the rule tables.

The rules MG101-MG107 read ``graph.checks`` (written by
:mod:`modelgate.checks.pipeline`: ``_run`` and ``_record``), MG301-MG304 read
``graph.budget`` (:func:`modelgate.budget.evaluate`'s entries, put on a view of the
model by :func:`modelgate.budget.apply_model`). The shapes and the texts here are copied from
real runs (``modelgate check ... --convert coreml --convert onnx --compress ... --format json``)
of the models in ``tests/torchmodels.py`` (Compressible, TwoUnsupported, CumProd, Constant), a
state dict and small ONNX files, so that a table states what a rule says about results as they
really come.
"""

from __future__ import annotations

from typing import Any

import rule_cases as rc

from modelgate.finding import SourceLocation
from modelgate.graph import ModelGraph
from modelgate.limits import METRICS
from modelgate.results import BudgetEntry, BudgetResult, ChecksResult

SOURCE = "tests/torchmodels.py"
DEVICE = "this machine's CPU: AMD EPYC"
ORT = "ONNX Runtime 1.32.0 CPU"
WEIGHTS_ONLY = "a state dict holds weights only, no architecture to convert or run"
SAVE = "save the model with torch.export.save (.pt2) or torch.jit.save"
NO_SHAPES = "the model does not record its input shapes"
HOW_TO_SHAPE = "give input shapes with --input-shape NAME=1x3x224x224 or inputs: in the config"
NO_FRONTEND = "Core ML has no ONNX frontend (coremltools 6 removed it): convert the PyTorch model"
TIME_USED_UP = "not run: the model's time limit was used up"
EARLIER_FAILED = "not run: an earlier step failed"
WEAK = (
    "the output depends weakly on the input (spread / rms 0.032): the relative error is "
    "dominated by its constant part; see rel_l2_centered"
)
DEGENERATE = (
    "the original model's output is near-constant: it barely depends on the input (spread "
    "across inputs / rms 0.0e+00; random weights?)"
)
COREML_DRIFT = (
    "the Core ML program's FP16 weights loaded into the torch model and run by torch on this "
    "CPU; FP16 activations not emulated; Core ML itself cannot run on Linux"
)
PRESET_DRIFT = (
    "Core ML weights (decompressed by coremltools) loaded into the torch model and run by "
    "torch on this CPU; FP16 weight storage emulated, FP16 activations not; Core ML itself "
    "cannot run on Linux"
)


def installing(module: str, extra: str) -> str:
    """A step's reason for not running when its package is missing (pipeline.INSTALL)."""
    return f"{module} is not installed: pip install 'modelgate-lint[{extra}]'"


# ---------------------------------------------------------------------------------------------
# graphs: the models of tests/torchmodels.py as the loaders read them
# ---------------------------------------------------------------------------------------------


def _at(line: int) -> SourceLocation:
    return SourceLocation(SOURCE, line, "forward")


def compressible() -> ModelGraph:
    """torchmodels.Compressible saved with torch.export (27,492 parameters; the op of each
    module records its line in forward)."""
    t = rc.tensor
    g = rc.graph(
        "torch_export",
        ops=[
            rc.op("conv2d", "aten::conv2d", module="stem", source=_at(104)),
            rc.op("batch_norm", "aten::batch_norm", module="bn", source=_at(104)),
            rc.op("relu", "aten::relu", source=_at(104)),
            rc.op("conv2d_1", "aten::conv2d", module="conv", source=_at(105)),
            rc.op("relu_1", "aten::relu", source=_at(105)),
            rc.op(
                "adaptive_avg_pool2d", "aten::adaptive_avg_pool2d", module="pool", source=_at(106)
            ),
            rc.op("flatten", "aten::flatten", source=_at(106)),
            rc.op("linear", "aten::linear", module="fc", source=_at(106)),
        ],
        inputs=[rc.value("x", (1, 3, 16, 16))],
    )
    return rc.with_layers(
        g,
        rc.layer("stem", "Conv2d", t("stem.weight", (32, 3, 5, 5)), t("stem.bias", (32,))),
        rc.layer(
            "bn",
            "BatchNorm2d",
            t("bn.weight", (32,)),
            t("bn.bias", (32,)),
            t("bn.running_mean", (32,), kind="buffer"),
            t("bn.running_var", (32,), kind="buffer"),
        ),
        rc.layer("conv", "Conv2d", t("conv.weight", (64, 32, 3, 3)), t("conv.bias", (64,))),
        rc.layer("fc", "Linear", t("fc.weight", (100, 64)), t("fc.bias", (100,))),
    )


def two_unsupported() -> ModelGraph:
    """torchmodels.TwoUnsupported saved with torch.export: kthvalue, then erfinv."""
    return rc.graph(
        "torch_export",
        ops=[
            rc.op("kthvalue", "aten::kthvalue", source=_at(79)),
            rc.op("tanh", "aten::tanh", source=_at(80)),
            rc.op("erfinv", "aten::erfinv", source=_at(80)),
        ],
        inputs=[rc.value("x", (1, 8))],
    )


def cumprod() -> ModelGraph:
    """torchmodels.CumProd saved with torch.export (torch.onnx decomposes it into prims::prod)."""
    return rc.graph(
        "torch_export",
        ops=[rc.op("cumprod", "aten::cumprod", source=_at(87))],
        inputs=[rc.value("x", (1, 8))],
    )


def state_dict() -> ModelGraph:
    """A state dict of nn.Linear(4, 4): weights only, no graph of ops."""
    t = rc.tensor
    g = rc.graph("state_dict")
    return rc.with_layers(g, rc.layer("", "Linear", t("weight", (4, 4)), t("bias", (4,))))


def onnx_file(*ops: Any) -> ModelGraph:
    """An ONNX file as given (a Relu unless ``ops`` are given)."""
    g = rc.graph(
        "onnx",
        ops=list(ops) or [rc.op("Relu_0", "onnx::Relu", inputs=["x"], outputs=["y"])],
        inputs=[rc.value("x", (1, 2))],
    )
    g.path = "model.onnx"
    return g


def with_checks(graph: ModelGraph, checks: dict[str, Any]) -> ModelGraph:
    graph.checks = ChecksResult.from_dict(checks)
    return graph


# ---------------------------------------------------------------------------------------------
# graph.checks
# ---------------------------------------------------------------------------------------------


def requested(convert=(), compress=(), asked=None) -> dict[str, Any]:
    """``requested`` as pipeline._run writes it: ``convert`` with Core ML when a preset implies
    it, ``asked`` what convert: / --convert named (default: ``convert`` itself)."""
    wanted = set(convert) | ({"coreml"} if compress else set())
    return {
        "convert": [c for c in ("coreml", "onnx") if c in wanted],
        "compress": list(compress),
        "asked": list(convert) if asked is None else list(asked),
    }


def checks(convert=(), compress=(), *, asked=None, **results: Any) -> dict[str, Any]:
    """The checks of a model that was run: ``results`` are the targets' (``coreml=``,
    ``onnx=``), ``compress=`` {preset: result}, ``latency=`` and ``reference=``."""
    out: dict[str, Any] = {
        "requested": requested(convert, compress, asked),
        "graph": {"macs": 5339392, "peak_activation_mb": 0.131, "peak_activation_coverage": 1.0},
        "inputs": [{"name": "x", "shape": [1, 3, 16, 16], "dtype": "float32"}],
    }
    presets = results.pop("presets", None)
    out.update(results)
    if presets is not None:
        out["compress"] = presets
    out["measure"] = {"samples": 2, "seed": 0, "threads": 1, "device": DEVICE}
    return out


def not_checked(
    reason: str, fix: str | None = None, convert=(), compress=(), *, asked=None
) -> dict[str, Any]:
    """The checks of a model nothing could be run on (plan.blocked, or no input shapes)."""
    return {
        "requested": requested(convert, compress, asked),
        "graph": {
            "macs": None,
            "peak_activation_mb": None,
            "why": "no graph of ops in this format",
        },
        "skipped": f"{reason}: {fix}" if fix else reason,
        "skipped_why": {"reason": reason, "fix": fix},
    }


def not_run(why: str) -> dict[str, Any]:
    """A target or preset that was not run (a missing package, the time limit, ...)."""
    return {"ok": None, "skipped": why}


def drift(rel_l2: float, *, method: str = COREML_DRIFT, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rel_l2": rel_l2,
        "rel_l2_centered": 4.49787e-04,
        "max_abs": 5.65536e-05,
        "cosine_min": 1.0,
        "cosine_mean": 1.0,
        "psnr_db": 86.3957,
        "top1_agreement": 1.0,
        "top1_classes": 1,
        "degenerate": None,
        "method": method,
        "samples": 2,
    }
    out.update(extra)
    return out


def preset_drift(rel_l2: float, unmapped=(), compressed: int = 2, **extra: Any) -> dict[str, Any]:
    return drift(
        rel_l2,
        method=PRESET_DRIFT,
        unmapped=list(unmapped),
        weights_compressed=compressed,
        weight_error={"median": 0.06534, "max": 0.06607, "worst": "conv.weight"},
        **extra,
    )


def coreml_ok(target: str = "iOS18", **extra: Any) -> dict[str, Any]:
    out = {
        "ok": True,
        "seconds": 1.255,
        "bytes": 60388,
        "deployment_target": target,
        "compute_precision": "float16",
        "ops": 28,
        "drift": drift(0.000218163),
    }
    out.update(extra)
    return out


def onnx_ok(**extra: Any) -> dict[str, Any]:
    out = {
        "ok": True,
        "checker": "passed (full check)",
        "runtime": ORT,
        "exporter": "torch.onnx (dynamo exporter)",
        "seconds": 2.658,
        "bytes": 117774,
        "opset": 20,
        "drift": drift(1.34166e-07, method="ONNX Runtime (CPU) against torch, same inputs"),
    }
    out.update(extra)
    return out


def onnx_file_ok(checker: str = "passed (full check)", run: dict | None = None) -> dict:
    """The session check of an ONNX file as given, and its run on synthetic inputs."""
    return {
        "ok": True,
        "runtime": ORT,
        "exporter": None,
        "bytes": 69,
        "opset": 18,
        "checker": checker,
        "run": run
        or {
            "ok": True,
            "inputs": [{"name": "x", "shape": [1, 2], "dtype": "float32"}],
            "outputs": 1,
        },
    }


def step_error(
    error: str, stage: str, op: str | None = None, located_at: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A converter that raised: its own result (steps.converter_error + coreml.describe_error)."""
    out = {
        "ok": False,
        "kind": "error",
        "error": error,
        "op": op,
        "located_at": located_at,
        "detail": error.split(": ", 1)[-1],
        "stage": stage,
    }
    out.update(extra)
    return out


def step_died(kind: str, error: str, stage: str) -> dict[str, Any]:
    """A step that crashed, timed out or ran out of memory (isolate's Failure, _record)."""
    return {"ok": False, "error": error, "kind": kind, "stage": stage, "detail": ""}


def preset_ok(skipped=(), compressed: int = 2, drift: dict | None = None) -> dict[str, Any]:
    return {
        "seconds": 0.213,
        "bytes": 30016,
        "compressed": compressed,
        "skipped": list(skipped),
        "kept_small": 3,
        "ok": True,
        "drift": drift or preset_drift(0.0302589),
    }


# the layers the 4-bit presets leave uncompressed in Compressible, as coremltools reports them
FC_SKIPPED = {
    "name": "p_fc_weight_to_fp16",
    "shape": [100, 64],
    "size": 6400,
    "consumers": ["linear"],
    "reason": "Can't perform palettization: The number of channels at 0th axis (100) is not "
    "divisible by channel_group_size (16)",
    "tensor": "fc.weight",
    "hint": "coreml.group_size: 4 (4 divides its 100 output channels)",
}
STEM_SKIPPED = {
    "name": "const_9_to_fp16",
    "shape": [32, 3, 5, 5],
    "size": 2400,
    "consumers": ["conv"],
    "reason": "Invalid block_sizes; On 1th axis, the dim size 3 is not divisible by block size "
    "32. Unable to perform structured quantization",
    "tensor": "stem.weight",
    "hint": "no block_size of 4 to 64 divides its 3 input channels",
}


def latency(median: float, p90: float, runtime: str = ORT, **extra: Any) -> dict[str, Any]:
    """measure.latency's result; ``noisy`` is set by it when p90 / median > 1.5 and the two
    are at least 0.5 ms apart."""
    out: dict[str, Any] = {
        "median_ms": median,
        "p90_ms": p90,
        "min_ms": round(median * 0.6, 3),
        "runs": 3,
        "warmup": 1,
    }
    if median > 0 and p90 / median > 1.5 and p90 - median >= 0.5:
        out["noisy"] = (
            f"p90 is {p90 / median:.1f}x the median: the machine was busy while measuring"
        )
    if runtime.startswith("torch"):  # timed in torch: no ONNX export ran
        out.update(
            runtime=runtime,
            program="torch.export program",
            threads=1,
            model="the original FP32 model",
        )
    else:
        out.update(runtime=runtime, threads=1, model="the exported ONNX model (FP32)")
    out.update(extra)
    return out


def reference(**extra: Any) -> dict[str, Any]:
    """The original model's outputs on the synthetic inputs (``degenerate``, ``weak``, ...)."""
    return {"ok": True, "outputs": [[1, 100]], **extra}


# ---------------------------------------------------------------------------------------------
# graph.budget
# ---------------------------------------------------------------------------------------------


def entry(
    key: str, value: Any, *, passed: bool | None, measured: str | None = None, **fields: Any
) -> tuple[str, dict[str, Any]]:
    """``key`` and its entry as budget.evaluate makes it: ``fields`` are limit, difference,
    baseline, increase, increase_pct, max_increase, max_increase_pct, reason or note."""
    rule, unit, _ = METRICS[key]
    out: dict[str, Any] = {"value": value, "rule": rule, "unit": unit}
    if measured is not None:
        out["measured"] = measured
    out.update(fields)
    out["passed"] = passed
    return key, out


def budget_view(*entries: tuple[str, dict[str, Any]], baseline: str | None = None) -> ModelGraph:
    """The view budget.apply_model judges: the model's path and format, the evaluation
    (:func:`entry`'s, in the config's order) and the baseline's name when there is one."""
    g = ModelGraph(rc.PATH, format="torch_export")
    g.budget = BudgetResult({k: BudgetEntry.from_dict(e) for k, e in entries}, baseline)
    return g
