"""Core ML conversion (in a step's child process) and what a person needs from its errors.

``coremltools.convert`` to an ML program, with the deployment target and compute precision
from the settings. Its failures are long: the converter's exception says which op, its log
says where ("converting 'kthvalue' op (located at: 'v')"); :func:`describe_error` keeps
those and drops the rest. Log records are captured from the ``coremltools`` logger and from
the root logger (``coremltools.optimize`` logs there), never scraped from stdout.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OP_PATTERNS = (
    re.compile(r"convert function for op '(\w+)'"),
    re.compile(r"Unsupported fx node (\w+)"),
    re.compile(r"converting '(\w+)' op"),
    re.compile(r"OpOverload\(op='(?:\w+)\.(\w+)'"),
    re.compile(r"operator '(?:\w+)::(\w+)'"),
    re.compile(r"\baten[.:]+(\w+)"),
    re.compile(r"\bop '(\w+)'"),
)
_LOCATED = re.compile(r"converting '(\w+)' op \(located at: '([^']*)'\)")
# ONNX Runtime's "[ONNXRuntimeError] : 1 : FAIL : " and "/onnxruntime_src/x.cc:256 Sig(...) "
_ORT_NOISE = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : |/onnxruntime_src/\S+:\d+ .*?\) ")


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


def describe_error(exc: BaseException, logs: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The converter's reason, trimmed to what a person needs: a one-line ``error``, the
    ``op`` it names, where the converter says it is (``located_at``), and ``detail``."""
    text = _ANSI.sub("", str(exc))
    everything = "\n".join([text, *(r["msg"] for r in logs or [])])
    summary = _summary(text) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if len(summary) < 40 and cause is not None and str(cause):
        summary = f"{summary} ({_summary(_ANSI.sub('', str(cause)))})"
        everything += "\n" + str(cause)
    out: dict[str, Any] = {
        "error": f"{type(exc).__name__}: {summary}"[:400],
        "op": None,
        "located_at": None,
        "detail": everything[-2000:],
    }
    located = _LOCATED.search(everything)
    if located:
        out["op"], out["located_at"] = located.group(1), located.group(2)
    else:
        for pattern in _OP_PATTERNS:
            found = pattern.search(everything)
            if found:
                out["op"] = found.group(1)
                break
    return out


def _summary(text: str) -> str:
    """The line that says what went wrong: after an "Exception summary" heading when the
    exporter writes a report, else the first non-empty line, without the class path."""
    lines = [line.strip() for line in text.splitlines()]
    if "## Exception summary" in lines:
        after = lines[lines.index("## Exception summary") + 1 :]
        lines = [line for line in after if line] or lines
    for line in lines:
        if line:
            line = re.sub(r"^<class '[\w.]+'>:\s*", "", line)
            return _ORT_NOISE.sub(lambda m: "" if m.group(0).startswith("[") else " ", line)[:300]
    return ""
