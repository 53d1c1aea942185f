"""What a person needs from a converter's or a runtime's error: one line, the op, where.

Converters' failures are long: the exception says which op, the converter's log where
("converting 'kthvalue' op (located at: 'v')"); :func:`describe_error` keeps those and drops
the rest (ANSI colours, ONNX Runtime's source paths, exporter report boilerplate).
"""

from __future__ import annotations

import re
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
