"""Core ML conversion (in a step's child process) and the converter's log.

``coremltools.convert`` to an ML program, with the deployment target and compute precision
from the settings. Its log says where a failure is ("converting 'kthvalue' op (located at:
'v')"), which :func:`modelgate.checks.errors.describe_error` reads. Log records are captured
from the ``coremltools`` logger and from the root logger (``coremltools.optimize`` logs
there), never scraped from stdout.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class LogCapture(logging.Handler):
    """Records that coremltools logs while a block runs (nothing reaches stderr)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[dict[str, str]] = []
        self.addFilter(lambda r: "coremltools" in r.pathname or r.name.startswith("coremltools"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(
            {"logger": record.name, "level": record.levelname, "msg": record.getMessage()}
        )


@contextmanager
def capture_logs() -> Iterator[LogCapture]:
    handler = LogCapture()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)  # a root handler also keeps logging's last resort quiet
    root.setLevel(min(previous, logging.INFO) if previous else logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def package_bytes(mlmodel: Any) -> int:
    """Bytes of the model package on disk (spec and weights): what ships in the app."""
    path = getattr(mlmodel, "package_path", None)
    if not path or not os.path.isdir(path):
        return 0
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(folder, name))
    return total


def convert(
    source: Any,
    kind: str,
    inputs: list[tuple[str, tuple[int, ...], str]],
    target: str,
    precision: str,
) -> Any:
    """The MLModel. ``source`` is a ScriptModule (``kind`` "torchscript") or an
    ExportedProgram already run through ``run_decompositions``. Run it inside
    :func:`capture_logs` to keep what the converter logs for :func:`describe_error`."""
    import coremltools as ct
    import numpy as np

    kwargs: dict[str, Any] = {
        "convert_to": "mlprogram",
        "compute_precision": ct.precision.FLOAT16
        if precision == "float16"
        else ct.precision.FLOAT32,
        "minimum_deployment_target": getattr(ct.target, target),
        "skip_model_load": True,  # Core ML cannot load models on Linux anyway
    }
    if kind == "torchscript":
        kwargs["inputs"] = [
            ct.TensorType(shape=shape, dtype=np.float32 if dtype.startswith("float") else np.int32)
            for _, shape, dtype in inputs
        ]
    return ct.convert(source, **kwargs)


def op_count(mlmodel: Any) -> int:
    program = getattr(mlmodel, "_mil_program", None)
    if program is None:
        return 0
    return sum(len(list(fn.operations)) for fn in program.functions.values())
