"""The Core ML step, in the child: convert, measure the conversion's drift, compress.

Run by :func:`modelgate.checks.steps.run` on the model it loaded; drift is measured by loading
the Core ML weights back into the torch model, since Core ML itself cannot run on Linux.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from modelgate.checks import measure, steps
from modelgate.checks.isolate import Emit

DRIFT_METHOD = (
    "Core ML weights (decompressed by coremltools) loaded into the torch model and run by "
    "torch on this CPU; FP16 weight storage emulated, FP16 activations not; Core ML itself "
    "cannot run on Linux"
)
CONVERSION_DRIFT_METHOD = (
    "the Core ML program's FP16 weights loaded into the torch model and run by torch on this "
    "CPU; FP16 activations not emulated; Core ML itself cannot run on Linux"
)


def convert(
    emit: Emit,
    job: steps.Job,
    model: steps.Loaded,
    samples: list[list[np.ndarray]],
    reference: list[np.ndarray] | None,
) -> None:
    """Convert to Core ML, measure the conversion's drift, then compress with each preset
    and measure each one's drift and weight error."""
    from modelgate.checks import compress, coreml, weightmap

    settings = job.settings.coreml
    target = job.deployment_target
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
        why = compress.too_old(preset, target)
        if why:
            emit(key, {"ok": False, "error": why})
            continue
        try:
            compressed, facts = compress.compress(mlmodel, preset, settings)
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
            hint = compress.divisor_hint(entry["shape"], preset, settings)
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
    import torch

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
