"""Data-free Core ML compression by preset, and what the compressor did, read as data.

A preset (:data:`modelgate.targets.coreml.PRESETS`) becomes a ``coremltools.optimize.coreml``
config applied to every op (``OptimizationConfig(global_config=...)``). What was compressed
and what was not comes from the compressed ML program itself: a ``constexpr_*`` op is a
compressed weight; a float constant of at least :data:`MIN_WEIGHT` elements that feeds no
``constexpr_*`` op stayed as it was. Why it stayed: at most ``weight_threshold`` elements or
rank 1 (coremltools never compresses those, silently), else the reason coremltools logged
just before its "Cannot perform ... on NAME. Skipped this op." line.

k-means runs with one worker: ``num_kmeans_workers > 1`` deadlocks once torch is imported.
"""

from __future__ import annotations

import re
import time
import warnings
from typing import Any

import numpy as np

from modelgate.checks.coreml import capture_logs, package_bytes

MIN_WEIGHT = 10  # smaller float constants are scalars and shapes, not weights
_SKIPPED = re.compile(r"Cannot perform \w+ on (\S+?)\.? Skipped this op")
_SUFFIXES = ("_palettized", "_quantized", "_sparsified")


def config_for(spec: Any, settings: Any) -> tuple[str, Any]:
    """(api, OptimizationConfig) for a preset (:class:`modelgate.targets.coreml.Preset`) with
    the Core ML settings (group and block sizes, the weight threshold)."""
    import coremltools.optimize.coreml as cto

    options = dict(spec.options)
    if options.get("granularity") == "per_grouped_channel":
        options["group_size"] = settings.group_size
    if options.get("granularity") == "per_block":
        options["block_size"] = settings.block_size
    if spec.api == "palettize":
        op_config: Any = cto.OpPalettizerConfig(
            weight_threshold=settings.weight_threshold, num_kmeans_workers=1, **options
        )
    else:
        op_config = cto.OpLinearQuantizerConfig(
            weight_threshold=settings.weight_threshold, **options
        )
    return spec.api, cto.OptimizationConfig(global_config=op_config)


def compress(mlmodel: Any, spec: Any, settings: Any) -> tuple[Any, dict[str, Any]]:
    """(compressed MLModel, facts): seconds, size, what was compressed and what was skipped."""
    import coremltools.optimize.coreml as cto

    api, config = config_for(spec, settings)
    function = cto.palettize_weights if api == "palettize" else cto.linear_quantize_weights
    start = time.perf_counter()
    with capture_logs() as logs, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compressed = function(mlmodel, config)
    seconds = time.perf_counter() - start
    facts: dict[str, Any] = {"seconds": round(seconds, 3), "bytes": package_bytes(compressed)}
    facts.update(inventory(compressed._mil_program, settings.weight_threshold, logs.records))
    return compressed, facts


def _base(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def skip_reasons(records: list[dict[str, str]]) -> dict[str, str]:
    """Const name -> the reason coremltools logged before "Skipped this op" for it."""
    reasons: dict[str, str] = {}
    pending: list[str] = []
    for record in records:
        message = record["msg"].strip()
        found = _SKIPPED.search(message)
        if found:
            reasons[found.group(1)] = "; ".join(pending) or message
            pending = []
        elif record["level"] in ("WARNING", "ERROR"):
            pending.append(message.rstrip("."))
    return reasons


def inventory(program: Any, weight_threshold: int, records: list[dict[str, str]]) -> dict:
    """``compressed`` (count), ``skipped`` (weights above the threshold left uncompressed,
    each with name, shape, consumers and reason) and ``kept_small`` (left by design)."""
    reasons = skip_reasons(records)
    skipped: list[dict[str, Any]] = []
    small = 0
    for function in program.functions.values():
        for op in function.operations:
            if op.op_type != "const":
                continue
            value = op.outputs[0].val
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                continue
            if value.size < MIN_WEIGHT:
                continue
            children = op.outputs[0].child_ops
            if any(c.op_type.startswith("constexpr_") for c in children):
                continue  # the lookup table, indices or scales of a compressed weight
            if value.size <= weight_threshold or value.ndim <= 1:
                small += 1
                continue
            reason = reasons.get(op.name) or "coremltools gave no reason"
            skipped.append(
                {
                    "name": op.name,
                    "shape": list(value.shape),
                    "size": int(value.size),
                    "consumers": sorted({c.op_type for c in children}),
                    "reason": reason,
                }
            )
    compressed = len(compressed_names(program))
    return {"compressed": compressed, "skipped": skipped, "kept_small": small}


def materialize(program: Any) -> dict[str, np.ndarray]:
    """Const name -> dense float32 values, for every weight of the program: compressed ones
    decompressed by coremltools' own ``materialized_val_inference`` (what Core ML computes
    at load), plain ones as they are. Names are the uncompressed program's const names."""
    out: dict[str, np.ndarray] = {}
    for function in program.functions.values():
        for op in function.operations:
            if op.op_type.startswith("constexpr_"):
                if any(c.op_type.startswith("constexpr_") for c in op.outputs[0].child_ops):
                    continue  # an inner step of a chained (joint) compression
                out[_base(op.name)] = np.asarray(op.materialized_val_inference(), np.float32)
            elif op.op_type == "const":
                value = op.outputs[0].val
                if (
                    isinstance(value, np.ndarray)
                    and value.dtype.kind == "f"
                    and value.size >= MIN_WEIGHT
                    and not any(c.op_type.startswith("constexpr_") for c in op.outputs[0].child_ops)
                ):
                    out[op.name] = value.astype(np.float32)
    return out


def compressed_names(program: Any) -> set[str]:
    """Names (as in the uncompressed program) of the weights that were compressed."""
    names = set()
    for function in program.functions.values():
        for op in function.operations:
            if op.op_type.startswith("constexpr_") and not any(
                c.op_type.startswith("constexpr_") for c in op.outputs[0].child_ops
            ):
                names.add(_base(op.name))
    return names


def divisor_hint(shape: list[int], spec: Any, settings: Any) -> str | None:
    """For a weight skipped by a grouped / blocked preset: a size that would divide it."""
    granularity = spec.options.get("granularity")
    if granularity == "per_grouped_channel" and shape:
        axis, current, what, dim = 0, settings.group_size, "group_size", "output channels"
    elif granularity == "per_block" and len(shape) > 1:
        axis, current, what, dim = 1, settings.block_size, "block_size", "input channels"
    else:
        return None
    if shape[axis] % current == 0:
        return None
    fits = [n for n in (64, 32, 16, 8, 4) if shape[axis] % n == 0]
    if not fits:
        return f"no {what} of 4 to 64 divides its {shape[axis]} {dim}"
    return f"coreml.{what}: {fits[0]} ({fits[0]} divides its {shape[axis]} {dim})"
