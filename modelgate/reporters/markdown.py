"""``--format markdown``: the report as GitHub-flavoured Markdown (the Action's job summary).

Per model: pass / fail, the findings, a table of metrics against the budget with deltas
against the base version, and where the bytes are, as a Mermaid pie chart GitHub renders.
GitHub refuses job summaries over 1 MiB, so the output stops at :data:`MAX_BYTES` with a note.

The budget and baseline figures are read defensively from each model's ``metrics``, since
they appear only when those checks ran: ``metrics["budget"]`` maps a metric to its limit (a
number, or an object with ``limit``/``max`` and optionally ``passed``/``value``), and
``metrics["baseline"]`` holds the base version's figures under ``metrics`` and their
differences under ``delta`` (plus ``ref``, ``path``, ``new_findings``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any

from modelgate.finding import Finding
from modelgate.report import ModelReport, Report
from modelgate.rule import human_bytes

MAX_BYTES = 400_000  # GitHub's limit is 1 MiB per step; leave room for what else writes there
MAX_FINDINGS = 50  # rows per model
MAX_MODELS_TABLE = 500  # rows in the overview table
PIE_SLICES = 6

# metric key -> row label, in the table's order; other budgeted metrics follow by key
METRICS: dict[str, str] = {
    "size_mb": "size (MB)",
    "parameters": "parameters",
    "weights_mb": "weights (MB)",
    "latency_ms": "latency (ms)",
    "drift": "drift",
}
MARK = {True: "✅", False: "❌"}


# ---------------------------------------------------------------------------------------------
# escaping and numbers
# ---------------------------------------------------------------------------------------------

_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]|<>#"})


def text(value: object) -> str:
    """Plain text safe inside a table cell: Markdown and HTML specials escaped."""
    return str(value).translate(_SPECIAL).replace("\r", "").replace("\n", "<br>")


def code(value: object) -> str:
    """An inline code span safe inside a table cell (GFM splits cells on | even in code)."""
    body = str(value).replace("\n", " ").replace("|", "\\|")
    fence = "``" if "`" in body else "`"
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def number(value: Any) -> str:
    """A figure as a person reads it: 4726602 -> 4,726,602; 19.141 -> 19.1; 0.0123 -> 0.0123."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return text(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def signed(delta: Any, base: Any = None) -> str:
    """A difference with its sign, and the relative change when the base is known."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float)):
        return ""
    if delta == 0:
        return "±0"
    out = ("+" if delta > 0 else "−") + number(abs(delta))
    # a percentage of a base rounded to 0.001 would be noise (0.0014 MB shows as 0.001)
    if _is_number(base) and (isinstance(base, int) or abs(base) >= 0.1) and base:
        out += f" ({'+' if delta > 0 else '−'}{abs(delta) / abs(base):.1%})"
    return out


# ---------------------------------------------------------------------------------------------
# budget and baseline, read defensively
# ---------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def budget_limit(metrics: dict[str, Any], key: str) -> tuple[Any, bool | None]:
    """(limit, passed) for ``key``; passed is None when the report does not say."""
    budget = metrics.get("budget")
    if not isinstance(budget, dict) or key not in budget:
        return None, None
    entry = budget[key]
    if _is_number(entry):
        value = metrics.get(key)
        return entry, (value <= entry) if _is_number(value) else None
    if isinstance(entry, dict):
        limit = next((entry[k] for k in ("limit", "max", "maximum") if k in entry), None)
        passed = entry.get("passed")
        if passed is None and "exceeded" in entry:
            passed = not entry["exceeded"]
        value = entry.get("value", metrics.get(key))
        if passed is None and _is_number(limit) and _is_number(value):
            passed = value <= limit
        return limit, passed if isinstance(passed, bool) else None
    return None, None


def baseline(metrics: dict[str, Any]) -> dict[str, Any]:
    found = metrics.get("baseline")
    return found if isinstance(found, dict) else {}


def base_value(metrics: dict[str, Any], key: str) -> Any:
    base = baseline(metrics)
    inner = base.get("metrics")
    if isinstance(inner, dict) and key in inner:
        return inner[key]
    return base.get(key) if _is_number(base.get(key)) else None


def delta(metrics: dict[str, Any], key: str) -> Any:
    base = baseline(metrics)
    for holder in (
        base.get("delta"),
        base.get("deltas"),
        metrics.get("delta"),
        metrics.get("deltas"),
    ):
        if isinstance(holder, dict) and _is_number(holder.get(key)):
            return holder[key]
    old, new = base_value(metrics, key), metrics.get(key)
    if _is_number(old) and _is_number(new):
        return new - old
    return None


def _new_findings(model: ModelReport) -> set[str] | None:
    """Keys of the findings the base version did not have: identities, and rule + message
    (a report read back from JSON has no finding keys, so identities may not match)."""
    new = baseline(model.metrics).get("new_findings")
    if not isinstance(new, list):
        return None
    keys = set()
    for item in new:
        if isinstance(item, dict):
            keys.add(str(item.get("identity")))
            keys.add(f"{item.get('rule')}\0{item.get('message')}")
        else:
            keys.add(str(item))
    return keys


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------


def _counts(counts: dict[str, int], empty: str = "none") -> str:
    parts = []
    for severity in ("error", "warning", "info"):
        n = counts.get(severity, 0)
        if n:
            parts.append(f"{n} {severity}{'s' if n != 1 and severity != 'info' else ''}")
    return ", ".join(parts) or empty


def _overview(report: Report) -> list[str]:
    n = len(report.models)
    failed = [m for m in report.models if not m.passed]
    verdict = "❌ failed" if failed else "✅ passed"
    counts = report.counts()
    lines = [
        f"## modelgate: {verdict}",
        "",
        f"{n} model{'s' if n != 1 else ''} checked, {len(failed)} failed "
        f"({_counts(counts)}); the gate fails on {report.fail_on}.",
        "",
    ]
    if not report.models:
        return [*lines, "No model files to check."]
    with_base = any(baseline(m.metrics) for m in report.models)
    columns = ["| | model | format | size (MB) |", "---|---|---|---:|"]
    if with_base:
        columns = [columns[0] + " Δ size |", columns[1] + "---:|"]
    lines += [columns[0] + " parameters | findings |", "|" + columns[1] + "---:|---|"]
    ordered = failed + [m for m in report.models if m.passed]
    for model in ordered[:MAX_MODELS_TABLE]:
        m = model.metrics
        row = [
            MARK[model.passed],
            code(model.path),
            text(model.kind),
            number(m["size_mb"]) if "size_mb" in m else "",
        ]
        if with_base:
            row.append(signed(delta(m, "size_mb"), base_value(m, "size_mb")))
        row += [number(m["parameters"]) if "parameters" in m else "", _counts(model.counts())]
        lines.append("| " + " | ".join(row) + " |")
    if len(ordered) > MAX_MODELS_TABLE:
        lines.append(f"\n… and {len(ordered) - MAX_MODELS_TABLE} more models (passed ones last).")
    return lines


def _finding_row(finding: Finding, new: set[str] | None) -> str:
    where = finding.location.describe()
    message = text(finding.message)
    if finding.fix:
        message += f"<br>fix: {text(finding.fix)}"
    severity = finding.severity
    if new is not None and (finding.identity in new or f"{finding.rule}\0{finding.message}" in new):
        severity += " (new)"
    return (
        f"| {severity} | {finding.rule} {text(finding.name)} | "
        f"{code(where) if where else ''} | {message} |"
    )


def own_entry(metrics: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The budget entry of a target's own figure ("onnx.size_mb"): not a key of the model's
    metrics, so the entry carries the value and the baseline's figure; None otherwise."""
    budget = metrics.get("budget")
    entry = budget.get(key) if isinstance(budget, dict) and key not in metrics else None
    return entry if isinstance(entry, dict) and "value" in entry else None


def figure(metrics: dict[str, Any], key: str) -> Any:
    """A row's value: the model's figure, or a target's own from its budget entry."""
    own = own_entry(metrics, key)
    return own.get("value") if own is not None else metrics.get(key)


def _metrics_table(model: ModelReport) -> list[str]:
    m = model.metrics
    keys = [k for k in METRICS if _is_number(m.get(k))]
    budget = m.get("budget")
    extra = (
        [k for k in budget if k not in keys and _is_number(figure(m, k))]
        if isinstance(budget, dict)
        else []
    )
    keys += extra
    if not keys:
        return []
    with_budget = any(budget_limit(m, k)[0] is not None for k in keys)
    with_base = bool(baseline(m))
    header = "| metric | value |" + (" budget |" if with_budget else "")
    header += " base | Δ |" if with_base else ""
    lines = [header, "|---|" + "---:|" * (header.count("|") - 2)]
    for key in keys:
        row = [METRICS.get(key, text(key)), number(figure(m, key))]
        if with_budget:
            limit, passed = budget_limit(m, key)
            cell = (
                f"≤ {number(limit)}"
                if _is_number(limit)
                else ("" if limit is None else text(limit))
            )
            if passed is not None:
                cell += f" {MARK[passed]}"
            row.append(cell)
        if with_base:
            own = own_entry(m, key)
            old = base_value(m, key) if own is None else own.get("baseline")
            change = delta(m, key) if own is None else own.get("increase")
            row += [number(old) if old is not None else "", signed(change, old)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _target_matrix(model: ModelReport) -> list[str]:
    """One row per target asked for (``metrics["targets"]``)."""
    rows = model.metrics.get("targets")
    if not isinstance(rows, list) or not rows:
        return []
    lines = [
        "| target | result | size MB | latency ms | drift | detail |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        figures = [row.get(k) for k in ("size_mb", "latency_ms", "drift")]
        cells = [code(row.get("target")), text(row.get("result"))]
        cells += [number(v) if v is not None else "" for v in figures]
        cells.append(text(str(row.get("detail") or "")[:120]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _bytes_chart(model: ModelReport) -> list[str]:
    """Where the bytes are: the largest layers' share of the weights, as a Mermaid pie."""
    m = model.metrics
    layers = [
        entry
        for entry in m.get("largest_layers") or []
        if isinstance(entry, dict) and _is_number(entry.get("mb")) and entry["mb"] > 0
    ]
    total = m.get("weights_mb")
    if not layers or not _is_number(total) or total <= 0:
        return []
    shown = layers[:PIE_SLICES]
    rest = total - sum(entry["mb"] for entry in shown)
    lines = [
        "```mermaid",
        f"pie showData title Weights by layer ({_plain(human_bytes(total * 1e6))})",
    ]
    for entry in shown:
        label = _plain(f"{entry.get('module', '?')} ({entry.get('type', '?')})")
        lines.append(f'    "{label}" : {entry["mb"]:.3f}')
    if rest >= 0.0005:
        lines.append(f'    "other layers" : {rest:.3f}')
    lines.append("```")
    lines += ["", "| layer | type | parameters | MB | share |", "|---|---|---:|---:|---:|"]
    for entry in layers:
        share = entry.get("share")
        lines.append(
            f"| {code(entry.get('module', '?'))} | {text(entry.get('type', ''))} | "
            f"{number(entry.get('parameters', ''))} | {number(entry['mb'])} | "
            f"{f'{share:.1%}' if _is_number(share) else ''} |"
        )
    return lines


def _plain(label: str) -> str:
    """Text safe inside a Mermaid quoted label."""
    return "".join(ch for ch in label if ch not in '"\n\r#;:').strip() or "?"


def _model_section(model: ModelReport) -> list[str]:
    m = model.metrics
    facts = [text(model.kind)]
    if _is_number(m.get("size_mb")):
        facts.append(human_bytes(m["size_mb"] * 1e6))
    if _is_number(m.get("parameters")):
        facts.append(f"{number(m['parameters'])} parameters")
    base = baseline(m)
    if base:
        against = base.get("ref") or base.get("path")
        facts.append(
            f"compared with {code(str(against)[:40])}" if against else "compared with a baseline"
        )
    if model.cached:  # the result cache's: figures (latency too) as measured then
        facts.append(f"from the cache, checked {text(str(model.cached)[:20])}")
    status = "passed" if model.passed else "failed"
    lines = [
        f"<details{'' if model.passed else ' open'}>",
        f"<summary>{MARK[model.passed]} <b>{html.escape(model.path)}</b>: {status}, "
        f"{_counts(model.counts(), 'no findings')}</summary>",
        "",
        " · ".join(facts),
        "",
    ]
    if model.findings:
        new = _new_findings(model)
        lines += ["| severity | rule | where | message |", "|---|---|---|---|"]
        lines += [_finding_row(f, new) for f in model.findings[:MAX_FINDINGS]]
        if len(model.findings) > MAX_FINDINGS:
            lines.append(
                f"\n… {len(model.findings) - MAX_FINDINGS} more findings in the report JSON."
            )
        lines.append("")
    fixed = base.get("fixed_findings") if base else None
    if isinstance(fixed, list) and fixed:
        lines += [f"Fixed since the base version: {', '.join(code(f) for f in fixed[:20])}", ""]
    table = _metrics_table(model)
    if table:
        lines += ["**Metrics**", "", *table, ""]
    matrix = _target_matrix(model)
    if matrix:
        lines += ["**Targets**", "", *matrix, ""]
    chart = _bytes_chart(model)
    if chart:
        lines += ["**Where the bytes are**", "", *chart, ""]
    for rids, why in model.not_checked():
        lines.append(f"- not checked: {rids}: {text(why)}")
    lines += [f"- note: {text(note)}" for note in model.notes]
    if model.skipped or model.notes:
        lines.append("")
    lines += ["</details>", ""]
    return lines


def _join(lines: Iterable[str]) -> str:
    return "\n".join(lines) + "\n"


def render(report: Report, color: bool = False) -> str:
    head = _join(_overview(report)) + "\n"
    tail = "".join(f"- note: {text(note)}\n" for note in report.notes)
    out = [head]
    size = len(head.encode()) + len(tail.encode())
    ordered = [m for m in report.models if not m.passed] + [m for m in report.models if m.passed]
    for i, model in enumerate(ordered):
        section = _join(_model_section(model))
        cost = len(section.encode())
        if size + cost > MAX_BYTES - 200:
            left = len(ordered) - i
            out.append(
                f"… {left} more model{'s' if left != 1 else ''} not shown to keep this "
                "summary under GitHub's size limit: the report JSON has them all.\n"
            )
            break
        out.append(section)
        size += cost
    out.append(tail)
    return "".join(out)
