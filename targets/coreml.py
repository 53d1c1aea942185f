"""Core ML: coremltools' converter, its compression presets, and drift without a Mac.

The target module for Apple devices (see :mod:`modelgate.target` for what a target declares).
MG003 reads coremltools' own registry of torch ops (from the shipped snapshot, or live when the
installed coremltools differs); the step converts in the child with ``coremltools.convert``,
then compresses with each preset (``coremltools.optimize.coreml``). Core ML itself cannot run
on Linux, so drift is measured by loading the Core ML weights back into the torch model; the
latency is the original model's in torch unless another target's runtime times it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the step's types; what it uses is imported in the child, when it runs
    import numpy as np

    from modelgate.checks import steps
    from modelgate.checks.isolate import Emit

NAME = "coreml"
LABEL = "Core ML"
EXTRA = "coreml"
REQUIRES = ("torch", "coremltools")
DEFAULT = True  # MG003 checks it when no targets are configured
CONVERSION = "Core ML conversion"
CONVERTING = "converting to Core ML"
OP_FIX = (
    "rewrite it with ops coremltools converts, or register a converter with "
    "@coremltools.converters.mil.register_torch_op"
)
FAILURE_RULE = "MG101"
FAILURE_FIXES = {
    "error": "make the op convertible: rewrite it with ops coremltools converts, or register a "
    "converter with @coremltools.converters.mil.register_torch_op",
    "timeout": "raise the time limit (timeout: / --timeout, isolation.timeout), or find the "
    "part of the model the converter spends its time on",
    "memory": "raise isolation.memory_mb, or convert on a machine with more memory",
    "crash": "the converter itself crashed: try the other source format (TorchScript or "
    "torch.export) or another deployment target, and report it to coremltools with the model",
}
FIXED_SHAPES = True  # flexible shapes need RangeDim / EnumeratedShapes (MG005)
DRIFT_LABEL = "the Core ML conversion"
DRIFT_OF = "Core ML conversion (FP16 weights)"
NO_ONNX_FRONTEND = "Core ML has no ONNX frontend (coremltools 6 removed it)"
MODULES = ("torch", "numpy", "coremltools", "coremltools.optimize.coreml")
INSTALL = {"sklearn.cluster": "pip install scikit-learn (k-means for palettization)"}


@dataclass(frozen=True)
class Preset:
    """A data-free Core ML compression recipe a person can read by name."""

    name: str
    api: str  # palettize | quantize (coremltools.optimize.coreml)
    options: dict[str, Any]
    min_target: str  # the oldest deployment target whose ops can hold the result
    about: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "palettize-8",
            "palettize",
            {"mode": "kmeans", "nbits": 8, "granularity": "per_tensor"},
            "iOS16",
            "8-bit k-means lookup table per tensor",
        ),
        Preset(
            "palettize-6",
            "palettize",
            {"mode": "kmeans", "nbits": 6, "granularity": "per_tensor"},
            "iOS16",
            "6-bit k-means lookup table per tensor",
        ),
        Preset(
            "palettize-4",
            "palettize",
            {"mode": "kmeans", "nbits": 4, "granularity": "per_grouped_channel"},
            "iOS18",
            "4-bit k-means lookup table per group of output channels",
        ),
        Preset(
            "int8",
            "quantize",
            {"mode": "linear_symmetric", "dtype": "int8", "granularity": "per_channel"},
            "iOS16",
            "8-bit linear symmetric quantization per output channel",
        ),
        Preset(
            "int4",
            "quantize",
            {"mode": "linear_symmetric", "dtype": "int4", "granularity": "per_block"},
            "iOS18",
            "4-bit linear symmetric quantization per block of input channels",
        ),
    )
}

# Deployment targets by name, with their ML program opset (macOS shares the iOS release's).
TARGETS = {f"iOS{n}": n for n in (15, 16, 17, 18, 26)}
TARGETS.update({"macOS12": 15, "macOS13": 16, "macOS14": 17, "macOS15": 18, "macOS26": 26})
PRECISIONS = ("float16", "float32")


@dataclass(frozen=True)
class CoreMLSettings:
    deployment_target: str | None = None  # None: the oldest target the presets allow
    compute_precision: str = "float16"
    weight_threshold: int = 2048  # coremltools' default: smaller weights stay as they are
    group_size: int = 16  # palettize-4: output channels sharing one lookup table
    block_size: int = 32  # int4: input channels sharing one scale

    def target_for(self, presets: tuple[str, ...]) -> str:
        """The deployment target the conversion uses: the configured one, else the oldest
        that every requested preset allows (iOS18 for the 4-bit presets, else iOS16)."""
        if self.deployment_target:
            return self.deployment_target
        needed = [PRESETS[p].min_target for p in presets if p in PRESETS]
        return max(needed, key=lambda t: TARGETS[t], default="iOS16")


def settings_schema() -> dict[str, Any]:
    """The ``coreml:`` section of the config."""
    return {
        "description": "Core ML conversion and compression settings",
        "type": "object",
        "properties": {
            "deployment_target": {
                "description": "minimum deployment target (default: iOS16, iOS18 for the "
                "4-bit presets)",
                "enum": list(TARGETS),
            },
            "compute_precision": {"enum": list(PRECISIONS), "default": "float16"},
            "weight_threshold": {
                "description": "weights with at most this many elements stay uncompressed",
                "type": "integer",
                "minimum": 0,
                "default": 2048,
            },
            "group_size": {
                "description": "palettize-4: output channels per lookup table",
                "enum": [4, 8, 16, 32, 64],
                "default": 16,
            },
            "block_size": {
                "description": "int4: input channels per scale",
                "enum": [8, 16, 32, 64, 128],
                "default": 32,
            },
        },
        "additionalProperties": False,
    }


def parse_settings(doc: dict[str, Any]) -> CoreMLSettings:
    return CoreMLSettings(**doc)


def summary(result: dict[str, Any]) -> str:
    """The target matrix's detail: "ML program for iOS16, float16, 28 ops"."""
    return (
        f"ML program for {result.get('deployment_target')}, "
        f"{result.get('compute_precision')}, {result.get('ops')} ops"
    )


def refuses(fmt: str) -> str | None:
    return NO_ONNX_FRONTEND if fmt == "onnx" else None


def op_verdict(name: str, fmt: str, dialect: str | None) -> Any:
    """coremltools' verdict on one op of a TorchScript graph or an ExportedProgram."""
    from modelgate import opsupport

    return opsupport.load().coreml(name, fmt, dialect)


def modules(job: Any) -> list[str]:
    """k-means palettization also needs scikit-learn."""
    palettize = any(PRESETS[p].api == "palettize" for p in job.settings.compress if p in PRESETS)
    return [*MODULES, *(("sklearn.cluster",) if palettize else ())]


def job_options(settings: Any) -> dict[str, Any]:
    return {"deployment_target": settings.of(NAME).target_for(settings.compress)}


def too_old(preset: str, target: str) -> str | None:
    """Why ``preset`` cannot run at deployment target ``target``, or None."""
    needed = PRESETS[preset].min_target
    if TARGETS[target] < TARGETS[needed]:
        return (
            f"{preset} needs deployment target {needed} or later (its ops do not exist "
            f"before); the conversion targets {target}"
        )
    return None


DRIFT_METHOD = (
    "Core ML weights (decompressed by coremltools) loaded into the torch model and run by "
    "torch on this CPU; FP16 weight storage emulated, FP16 activations not; Core ML itself "
    "cannot run on Linux"
)
CONVERSION_DRIFT_METHOD = (
    "the Core ML program's FP16 weights loaded into the torch model and run by torch on this "
    "CPU; FP16 activations not emulated; Core ML itself cannot run on Linux"
)


def step(
    emit: Emit,
    job: steps.Job,
    model: steps.Loaded,
    samples: list[list[np.ndarray]],
    reference: list[np.ndarray] | None,
) -> None:
    """In the child: convert to Core ML, measure the conversion's drift, then compress with
    each preset and measure each one's drift and weight error."""
    from modelgate.checks import compress, coreml, steps, weightmap

    settings = job.settings.of(NAME)
    target = job.options["deployment_target"]
    doing = f"converting to Core ML ({target}, {settings.compute_precision})"
    emit.stage(f"coreml: {doing}")
    start = time.perf_counter()
    with coreml.capture_logs() as logs:
        try:
            source = model.program
            if model.kind == "torch_export":
                source = model.program.run_decompositions({})
            mlmodel = coreml.convert(
                source, model.kind, list(job.inputs), target, settings.compute_precision
            )
        except Exception as exc:
            failed = {"ok": False, **steps.converter_error(exc, job, logs.records), "stage": doing}
            emit("coreml", {**failed, "deployment_target": target})
            return
    emit(
        "coreml",
        {
            "ok": True,
            "seconds": round(time.perf_counter() - start, 3),
            "bytes": coreml.package_bytes(mlmodel),
            "deployment_target": target,
            "compute_precision": settings.compute_precision,
            "ops": coreml.op_count(mlmodel),
        },
    )
    presets = job.settings.compress
    if not presets and reference is None:
        return
    fp16 = settings.compute_precision == "float16"
    consts = compress.materialize(mlmodel._mil_program)
    state = model.state()
    mapping = weightmap.map_weights(consts, state, weightmap.torch_names(source))
    if reference is not None:
        emit.stage("coreml_drift: measuring the Core ML conversion's drift")
        emit(
            "coreml_drift",
            _drift(
                model,
                samples,
                reference,
                weightmap.inject(state, mapping, consts, fp16),
                CONVERSION_DRIFT_METHOD,
            ),
        )
    for preset in presets:
        emit.stage(f"compress:{preset}: compressing ({preset})")
        key = f"compress:{preset}"
        why = too_old(preset, target)
        if why:
            emit(key, {"ok": False, "error": why})
            continue
        try:
            compressed, facts = compress.compress(mlmodel, PRESETS[preset], settings)
        except Exception as exc:
            emit(
                key,
                {
                    "ok": False,
                    **steps.converter_error(exc, job),
                    "stage": f"compressing ({preset})",
                },
            )
            continue
        for entry in facts["skipped"]:
            how = mapping.get(entry["name"])
            if how is not None:
                entry["tensor"] = how["key"]
            hint = compress.divisor_hint(entry["shape"], PRESETS[preset], settings)
            if hint:
                entry["hint"] = hint
        facts["ok"] = True
        emit(key, facts)  # before the drift: a crash measuring it keeps these figures
        if reference is not None:
            emit.stage(f"drift:{preset}: measuring the drift of {preset}")
            values = compress.materialize(compressed._mil_program)
            names = compress.compressed_names(compressed._mil_program)
            used = {k: v for k, v in mapping.items() if k in names}
            drift = _drift(
                model, samples, reference, weightmap.inject(state, used, values, fp16), DRIFT_METHOD
            )
            drift["unmapped"] = sorted(names - set(mapping))
            drift["weights_compressed"] = len(names)
            drift["weight_error"] = _weight_error(consts, values, names, mapping)
            emit(f"drift:{preset}", drift)
        del compressed


def _drift(
    model: steps.Loaded,
    samples: list[list[np.ndarray]],
    reference: list[np.ndarray],
    state: dict[str, np.ndarray],
    method: str,
) -> dict[str, Any]:
    import copy

    import numpy as np
    import torch

    from modelgate.checks import measure, steps

    variant = copy.deepcopy(model.runner)
    variant.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    outputs = measure.stack([steps.forward(variant, s) for s in samples])
    result = measure.compare_outputs(reference, outputs)
    result["method"] = method
    result["samples"] = len(samples)
    return result


def _weight_error(
    before: dict[str, np.ndarray],
    after: dict[str, np.ndarray],
    names: set[str],
    mapping: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Relative error of each compressed weight against its uncompressed self, in Core ML's
    own parametrisation (needs no mapping to torch): median, worst, and which."""
    import numpy as np

    errors = {}
    for name in names:
        if name in before and name in after and before[name].shape == after[name].shape:
            norm = max(float(np.linalg.norm(before[name])), 1e-30)
            errors[name] = float(np.linalg.norm(after[name] - before[name]) / norm)
    if not errors:
        return {}
    worst = max(errors, key=errors.__getitem__)
    return {
        "median": float(f"{np.median(list(errors.values())):.4g}"),
        "max": float(f"{errors[worst]:.4g}"),
        "worst": mapping.get(worst, {}).get("key", worst),
    }
