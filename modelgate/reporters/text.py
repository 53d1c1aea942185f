"""``--format text``: findings grouped by model, for a terminal."""

from __future__ import annotations

from modelgate.report import ModelReport, Report
from modelgate.rule import human_count

_COLORS = {"error": "31", "warning": "33", "info": "36", "pass": "32", "dim": "2", "bold": "1"}


def _paint(text: str, style: str, color: bool) -> str:
    return f"\x1b[{_COLORS[style]}m{text}\x1b[0m" if color else text


def _header(model: ModelReport, color: bool) -> str:
    m = model.metrics
    bits = [model.format.replace("_", " ")]
    if "file_mb" in m:
        bits.append(
            f"{m['file_mb']:.1f} MB" if m["file_mb"] >= 0.1 else f"{m['file_mb'] * 1000:.0f} kB"
        )
    if m.get("parameters"):
        bits.append(f"{human_count(m['parameters'])} params")
    status = _paint("pass", "pass", color) if model.passed else _paint("FAIL", "error", color)
    return f"{status}  {_paint(model.path, 'bold', color)}  ({', '.join(bits)})"


def render(report: Report, color: bool = False) -> str:
    lines: list[str] = []
    for model in report.models:
        lines.append(_header(model, color))
        for f in model.findings:
            where = f.location.describe()
            sev = _paint(f"{f.severity:<7}", f.severity, color)
            lines.append(f"  {sev} {f.rule} {f.name}" + (f"  {where}" if where else ""))
            lines.append(f"          {f.message}")
            if f.fix:
                lines.append(_paint(f"          fix: {f.fix}", "dim", color))
        for rid, why in sorted(model.skipped.items()):
            lines.append(_paint(f"  not checked: {rid}: {why}", "dim", color))
        for note in model.notes:
            lines.append(_paint(f"  note: {note}", "dim", color))
        lines.append("")
    for note in report.notes:
        lines.append(_paint(f"note: {note}", "dim", color))
    counts = report.counts()
    failed = sum(not m.passed for m in report.models)
    n = len(report.models)
    summary = (
        f"{n} model{'s' if n != 1 else ''} checked: {failed} failed; "
        f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info"
    )
    lines.append(_paint(summary, "pass" if report.passed else "error", color))
    return "\n".join(lines) + "\n"
