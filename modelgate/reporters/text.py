"""``--format text``: findings grouped by model, for a terminal."""

from __future__ import annotations

import re

from modelgate.report import ModelReport, Report
from modelgate.rule import human_count

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_COLORS = {"error": "31", "warning": "33", "info": "36", "pass": "32", "dim": "2", "bold": "1"}


def _paint(text: str, style: str, color: bool) -> str:
    return f"\x1b[{_COLORS[style]}m{text}\x1b[0m" if color else text


def _header(model: ModelReport, color: bool) -> str:
    m = model.metrics
    bits = [model.kind]
    if "file_mb" in m:
        bits.append(
            f"{m['file_mb']:.1f} MB" if m["file_mb"] >= 0.1 else f"{m['file_mb'] * 1000:.0f} kB"
        )
    if m.get("parameters"):
        bits.append(f"{human_count(m['parameters'])} params")
    status = _paint("pass", "pass", color) if model.passed else _paint("FAIL", "error", color)
    cached = (
        _paint(f"  [cached: checked {_when(model.cached)}]", "dim", color) if model.cached else ""
    )
    return f"{status}  {_paint(model.path, 'bold', color)}  ({', '.join(bits)}){cached}"


def _when(stamp: object) -> str:
    """An ISO 8601 UTC time as "2026-12-02 02:50 UTC"."""
    text = str(stamp)
    return f"{text[:10]} {text[11:16]} UTC" if len(text) >= 16 and text[10] == "T" else text


# figures of the metrics table, in order; budgeted ones always show
_TABLE = ("size_mb", "parameters", "macs", "peak_activation_mb", "latency_ms", "drift")
_OF = {"size_mb": "size_from"}


def _figure(key: str, value: object) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    if key in ("parameters", "macs"):
        return human_count(value)
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _metrics_table(model: ModelReport, color: bool) -> list[str]:
    """Figures against their limits and the baseline, when the checks or the budget ran
    (``size_from`` says what size_mb measured); a plain lint keeps its short output."""
    m = model.metrics
    base = m.get("baseline") if isinstance(m.get("baseline"), dict) else {}
    if "size_from" not in m and not base:
        return []
    budget = m.get("budget") if isinstance(m.get("budget"), dict) else {}
    keys = [k for k in _TABLE if k in m or k in budget] + [k for k in budget if k not in _TABLE]
    deltas = base.get("delta") if isinstance(base.get("delta"), dict) else {}
    keys += [k for k in deltas if k not in keys]  # every figure the baseline has a delta of
    rows = [("metric", "value", "of", "budget", "vs baseline")]
    for key in keys:
        entry = budget.get(key) or {}
        if not isinstance(entry, dict):  # a bare limit, as other producers may write it
            entry = {"limit": entry}
        what = str(m.get(_OF.get(key, ""), "") or "")
        if key == "latency_ms" and isinstance(m.get("latency"), dict):
            lat = m["latency"]
            what = f"{lat.get('runtime')}, {lat.get('threads')} thread(s), p90 {lat.get('p90_ms')}"
            if lat.get("cached"):
                what = f"cached, measured {_when(lat['cached'])}: {what}"
        elif key == "drift" and isinstance(m.get("drift_detail"), dict):
            what = str(m["drift_detail"].get("of", ""))
        value = _figure(key, m.get(key))
        own = key not in m and "value" in entry  # a target's own figure ("onnx.size_mb")
        if own:
            value, what = _figure(key, entry["value"]), str(entry.get("measured") or "")
            if entry["value"] is None and entry.get("reason"):
                value, what = "-", str(entry["reason"]).split(": ", 1)[0]  # the finding says why
        elif m.get(key) is None and key in (m.get("not_measured") or {}):
            value, what = "-", m["not_measured"][key].split(": ", 1)[0]  # the finding says why
        verdict = ""
        if entry:
            limit = entry.get("limit")
            text = f"<= {_figure(key, limit)}" if limit is not None else "growth"
            if entry.get("passed") is True:
                verdict = _paint(f"{text} ok", "pass", color)
            elif entry.get("passed") is False:
                over = entry.get("difference")
                positive = isinstance(over, (int, float)) and over > 0
                more = f" (+{_figure(key, over)})" if positive else ""
                grew = entry.get("increase_pct")
                if not more and isinstance(grew, (int, float)):
                    more = f" (grew {grew:+.1f}%)"
                verdict = _paint(f"{text} OVER{more}", "error", color)
            else:
                verdict = _paint(f"{text} not judged", "warning", color)
        change = ""
        delta = (base.get("delta") or {}).get(key)
        pct = (base.get("delta_pct") or {}).get(key)
        if own:  # judged against the baseline's same target figure
            delta, pct = entry.get("increase"), entry.get("increase_pct")
        if isinstance(delta, (int, float)):
            change = f"{'+' if delta >= 0 else ''}{_figure(key, delta)}"
            change += f" ({pct:+.1f}%)" if isinstance(pct, (int, float)) else ""
        rows.append((key, value, what[:60], verdict, change))
    shown = [i for i in range(5) if any(r[i] for r in rows[1:])]
    widths = [max(len(_plain(r[i])) for r in rows) for i in range(5)]
    out = []
    for index, row in enumerate(rows):
        cells = [row[i] + " " * (widths[i] - len(_plain(row[i]))) for i in shown]
        line = "  " + "  ".join(cells).rstrip()
        out.append(_paint(line, "dim", color) if index == 0 else line)
    return out


def _target_matrix(model: ModelReport, color: bool) -> list[str]:
    """One row per target asked for (``metrics["targets"]``): result, size, latency, drift."""
    rows = model.metrics.get("targets")
    if not isinstance(rows, list) or not rows:
        return []
    table = [("target", "result", "size_mb", "latency_ms", "drift", "detail")]
    for row in rows:
        table.append((
            str(row.get("target")), str(row.get("result")), _figure("size_mb", row.get("size_mb")),
            _figure("latency_ms", row.get("latency_ms")), _figure("drift", row.get("drift")),
            str(row.get("detail") or "")[:70],
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(6)]
    out = []
    for index, row in enumerate(table):
        line = "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        out.append(_paint(line, "dim", color) if index == 0 else line)
    return out


def _plain(text: str) -> str:
    return _ANSI.sub("", text)


def _baseline(model: ModelReport, new: list[bool]) -> list[str]:
    """Which version the deltas are against, how many findings are new, which were fixed."""
    base = model.metrics.get("baseline")
    if not isinstance(base, dict):
        return []
    where = str(base.get("path") or "the baseline")
    if base.get("ref"):
        where += f" at {base['ref']}"
    fixed = base.get("fixed_findings") if isinstance(base.get("fixed_findings"), list) else []
    verdict = {True: ", which passed", False: ", which failed"}.get(base.get("passed"), "")
    lines = [f"  baseline: {where}{verdict}; {sum(new)} new finding(s), {len(fixed)} fixed"]
    if fixed:
        shown = ", ".join(str(f) for f in fixed[:20])
        more = f" and {len(fixed) - 20} more" if len(fixed) > 20 else ""
        lines.append(f"  fixed since the baseline: {shown}{more}")
    return lines


def _new_flags(model: ModelReport) -> list[bool]:
    """Per finding: new against the baseline (``"new"``, as --baseline marks it, or listed in
    the baseline's ``new_findings``, as a report read back from JSON has it)."""
    base = model.metrics.get("baseline")
    listed = base.get("new_findings") if isinstance(base, dict) else None
    keys = set()
    for item in listed if isinstance(listed, list) else []:
        if isinstance(item, dict):
            keys.add(str(item.get("identity")))
            keys.add(f"{item.get('rule')}\0{item.get('message')}")
    return [
        f.extra.get("new") is True or f.identity in keys or f"{f.rule}\0{f.message}" in keys
        for f in model.findings
    ]


def render(report: Report, color: bool = False) -> str:
    lines: list[str] = []
    new_total = 0
    compared = False
    for model in report.models:
        lines.append(_header(model, color))
        new = _new_flags(model)
        new_total += sum(new)
        compared = compared or isinstance(model.metrics.get("baseline"), dict)
        lines.extend(_metrics_table(model, color))
        lines.extend(_target_matrix(model, color))
        lines.extend(_baseline(model, new))
        for f, is_new in zip(model.findings, new, strict=True):
            where = f.location.describe()
            sev = _paint(f"{f.severity:<7}", f.severity, color)
            mark = "  " + _paint("[new]", "bold", color) if is_new else ""
            lines.append(f"  {sev} {f.rule} {f.name}" + (f"  {where}" if where else "") + mark)
            lines.append(f"          {f.message}")
            if f.fix:
                lines.append(_paint(f"          fix: {f.fix}", "dim", color))
        for rids, why in model.not_checked():
            lines.append(_paint(f"  not checked: {rids}: {why}", "dim", color))
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
    if compared:
        summary += f"; {new_total} new against the baseline"
    cached = sum(m.cached is not None for m in report.models)
    if cached:
        summary += f"; {cached} from the cache"
    lines.append(_paint(summary, "pass" if report.passed else "error", color))
    return "\n".join(lines) + "\n"
