"""Core ML weights back onto the torch model, so that compressed weights can be run on Linux.

Core ML cannot run on Linux. Its compressed weights can: decompressed (see
:func:`~modelgate.checks.compress.materialize`), mapped to the torch parameters they came
from, loaded into a copy of the torch model. Mapping by name first: TorchScript consts are
the parameter's name with "." -> "_" (plus "_to_fp16"), torch.export consts the program's
placeholder names (``graph_signature``, never re-derived). Then by value, for weights the
converter rewrote: a convolution with its BatchNorm folded in is the torch weight times a
per-output-channel factor, which :func:`map_weights` fits and :func:`inject` divides out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_SUFFIXES = ("_to_fp16", "_to_fp32")
TOLERANCE = 3e-3  # relative residual of a match (FP16 rounding is ~5e-4)


def torch_names(source: Any) -> dict[str, str]:
    """Core ML const base name -> torch state-dict key, for a ScriptModule or an
    ExportedProgram. Names that two parameters would share are left out."""
    import torch

    if isinstance(source, torch.export.ExportedProgram):
        signature = source.graph_signature
        names = dict(signature.inputs_to_parameters)
        names.update(signature.inputs_to_buffers)
        names.update(getattr(signature, "inputs_to_lifted_tensor_constants", {}) or {})
        return names
    names: dict[str, str] = {}
    clashes: set[str] = set()
    for key in source.state_dict():
        flat = key.replace(".", "_")
        if flat in names:
            clashes.add(flat)
        names[flat] = key
    return {k: v for k, v in names.items() if k not in clashes}


def _fit(w: np.ndarray, t: np.ndarray, axis: int) -> tuple[np.ndarray, float]:
    """Per-channel factors s with w ~= s * t along ``axis``, and the relative residual."""
    a = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).astype(np.float64)
    b = np.moveaxis(t, axis, 0).reshape(t.shape[axis], -1).astype(np.float64)
    den = (b * b).sum(1)
    s = np.where(den > 0, (a * b).sum(1) / np.maximum(den, 1e-300), 0.0)
    residual = np.linalg.norm(a - s[:, None] * b) / max(float(np.linalg.norm(a)), 1e-30)
    shape = [1] * w.ndim
    shape[axis] = -1
    return s.reshape(shape), float(residual)


def map_weights(
    consts: dict[str, np.ndarray], state: dict[str, np.ndarray], names: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Core ML const name -> {key, how, scale, transpose, residual} for each weight (rank >= 2)
    of the uncompressed program that matches a torch parameter; the others are absent."""
    out: dict[str, dict[str, Any]] = {}
    for name, w in consts.items():
        if w.ndim < 2:
            continue
        base = name
        for suffix in _SUFFIXES:
            base = base.removesuffix(suffix)
        key = names.get(base)
        if key is not None and key in state and state[key].shape == w.shape:
            residual = _residual(w, state[key])
            if residual < TOLERANCE:
                out[name] = {
                    "key": key,
                    "how": "name",
                    "scale": None,
                    "transpose": False,
                    "residual": residual,
                }
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for key, t in state.items():
        if t.ndim >= 2 and t.dtype.kind == "f":
            by_shape.setdefault(t.shape, []).append(key)
            if t.ndim == 2:
                by_shape.setdefault(t.shape[::-1], []).append(key)
    for name, w in consts.items():
        if name in out or w.ndim < 2:
            continue
        best: tuple[float, str, bool, Any] | None = None
        for key in by_shape.get(w.shape, []):
            t = state[key]
            transpose = t.shape != w.shape
            t = t.T if transpose else t
            for axis in (0, 1):  # output channels: 0 for conv / linear, 1 for conv_transpose
                scale, residual = _fit(w, t, axis)
                if residual < TOLERANCE and (best is None or residual < best[0]):
                    best = (residual, key, transpose, scale)
        if best is None:
            continue
        residual, key, transpose, scale = best
        unit = bool(np.allclose(scale, 1.0, rtol=TOLERANCE))
        out[name] = {
            "key": key,
            "how": "value" if unit else "value, per-channel factor",
            "scale": None if unit else scale,
            "transpose": transpose,
            "residual": residual,
        }
    return out


def _residual(w: np.ndarray, t: np.ndarray) -> float:
    return float(np.linalg.norm(w - t) / max(float(np.linalg.norm(w)), 1e-30))


def inject(
    state: dict[str, np.ndarray],
    mapping: dict[str, dict[str, Any]],
    values: dict[str, np.ndarray],
    fp16: bool,
) -> dict[str, np.ndarray]:
    """A state dict whose mapped entries hold the Core ML ``values`` (in torch's own
    parametrisation: folded factors divided out); with ``fp16`` every other float entry is
    rounded to float16, as Core ML stores it."""
    new = {}
    for key, value in state.items():
        if fp16 and value.dtype.kind == "f":
            new[key] = value.astype(np.float16).astype(value.dtype)
        else:
            new[key] = value
    for name, how in mapping.items():
        if name not in values:
            continue
        w = values[name].astype(np.float64)
        if how["scale"] is not None:
            scale = how["scale"]
            zero = np.abs(scale) < 1e-12  # a channel multiplied by 0: its weights do not matter
            w = np.where(zero, 0.0, w / np.where(zero, 1.0, scale))
        if how["transpose"]:
            w = w.T
        new[how["key"]] = w.astype(state[how["key"]].dtype)
    return new
