"""The Python source line that created an op, from what a model recorded.

torch.export keeps Python tracebacks (outermost frame first); TorchScript keeps "file(line):
function" lines (innermost first); the ONNX exporter copies the torch.export trace. The line a
user wants is the innermost frame in their own code, not in torch or another library.
"""

from __future__ import annotations

import re

from modelgate.finding import SourceLocation

_PY_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)(?:, in (?P<func>[^\n]+))?')
_TS_FRAME = re.compile(r"^(?P<file>[^\n()]+?)\((?P<line>\d+)\): (?P<func>\S+)\s*$", re.MULTILINE)
_LIBRARY = re.compile(
    r"([/\\](site|dist)-packages[/\\])|([/\\]lib[/\\]python3[\d.]*[/\\])|^<|[/\\]torch[/\\]"
)


def is_library(path: str) -> bool:
    return bool(_LIBRARY.search(path))


def _pick(frames: list[SourceLocation]) -> SourceLocation | None:
    """Innermost frame outside libraries; frames are given outermost first."""
    for frame in reversed(frames):
        if not is_library(frame.file):
            return frame
    return None


def parse_stack_trace(text: str) -> SourceLocation | None:
    """A Python traceback as torch.export records it (``node.meta["stack_trace"]``)."""
    if not text or not isinstance(text, str):
        return None
    frames = [
        SourceLocation(m["file"], int(m["line"]), (m["func"] or "").strip() or None)
        for m in _PY_FRAME.finditer(text[:100_000])
    ]
    return _pick(frames)


def parse_torchscript_range(text: str) -> SourceLocation | None:
    """A TorchScript debug record: "path/file.py(12): forward" lines, innermost first."""
    if not text or not isinstance(text, str):
        return None
    frames = [
        SourceLocation(m["file"].strip(), int(m["line"]), m["func"])
        for m in _TS_FRAME.finditer(text[:100_000])
    ]
    frames.reverse()
    return _pick(frames)
