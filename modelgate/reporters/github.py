"""``--format github``: workflow commands that GitHub turns into annotations on the diff.

``::error file=models/net.py,line=41,title=modelgate (MG001)::message``. A finding points at
the Python line that created the layer when the model recorded it and that file is in the
repository (see :func:`modelgate.repo.relocate`), else at the model file.

GitHub shows at most 10 errors, 10 warnings and 10 notices per step and drops the rest
silently. So findings go out most severe first, at most 10 per level, and when some do not fit,
one annotation (counted in the 10 of its level) says how many and where to read them all: the
full report follows in a collapsed log group, and the Action writes the job summary.
"""

from __future__ import annotations

import hashlib

from modelgate.finding import Finding, severity_rank
from modelgate.repo import in_repo
from modelgate.report import ModelReport, Report

LIMIT = 10  # annotations GitHub shows per level and step
LEVELS = {"error": "error", "warning": "warning", "info": "notice"}
GROUP = "modelgate: full report"


def escape_data(text: str) -> str:
    """Escape a command's message as GitHub's runner unescapes it."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a property value (file=, title=): data escapes plus ':' and ','."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(level: str, message: str, **properties: object) -> str:
    """One workflow command line, e.g. ``::error file=a.py,line=3::message``."""
    props = ",".join(f"{k}={escape_property(str(v))}" for k, v in properties.items() if v)
    return f"::{level}{' ' + props if props else ''}::{escape_data(message)}"


def annotation(model: ModelReport, finding: Finding) -> str:
    """One finding as a command: at its source line when that is in the repository, else at
    the model file. An annotation on a .py line names the model it is about."""
    source = finding.location.source
    level = LEVELS[finding.severity]
    title = f"modelgate ({finding.rule})"
    fix = f"\nfix: {finding.fix}" if finding.fix else ""
    if source is not None and in_repo(source.file):
        message = f"{model.path}: {finding.message}{fix}"
        return command(level, message, file=source.file, line=source.line, title=title)
    recorded = f"\ncreated at {source} (not in this repository)" if source is not None else ""
    return command(
        level, f"{finding.message}{fix}{recorded}", file=finding.location.path, title=title
    )


def annotations(report: Report) -> list[str]:
    """The annotations GitHub will show: most severe first, capped per level."""
    pairs = report.findings()
    by_level: dict[str, list[tuple[ModelReport, Finding]]] = {}
    for model, finding in pairs:
        by_level.setdefault(finding.severity, []).append((model, finding))
    overflow = {sev: len(items) - LIMIT for sev, items in by_level.items() if len(items) > LIMIT}
    # the "N more" annotation goes at the most severe level that overflowed, taking one slot
    notice_level = min(overflow, key=severity_rank) if overflow else None
    lines: list[str] = []
    hidden: dict[str, int] = {}
    hidden_models: list[str] = []
    for severity in sorted(by_level, key=severity_rank):
        items = by_level[severity]
        keep = LIMIT - 1 if severity == notice_level else LIMIT
        for model, finding in items[:keep]:
            lines.append(annotation(model, finding))
        for model, _ in items[keep:]:
            hidden[severity] = hidden.get(severity, 0) + 1
            if model.path not in hidden_models:
                hidden_models.append(model.path)
    if notice_level is not None:
        total = sum(hidden.values())
        parts = ", ".join(
            f"{n} {sev}{'s' if n != 1 and sev != 'info' else ''}"
            for sev, n in sorted(hidden.items(), key=lambda kv: severity_rank(kv[0]))
        )
        models = ", ".join(hidden_models[:3]) + (", ..." if len(hidden_models) > 3 else "")
        lines.append(
            command(
                LEVELS[notice_level],
                f"{total} more finding{'s' if total != 1 else ''} ({parts}) in {models} not shown "
                f"as annotations: GitHub shows {LIMIT} per level. Read them all in the job summary "
                f'or in this step\'s log (group "{GROUP}").',
                title="modelgate: more findings",
            )
        )
    return lines


def render(report: Report, color: bool = False) -> str:
    from modelgate.reporters import text

    lines = annotations(report)
    full = text.render(report).rstrip("\n").splitlines()
    lines.append(f"::group::{escape_data(GROUP)}")
    lines.extend(verbatim(full[:-1]))
    lines.append("::endgroup::")
    lines.append(full[-1])  # the one-line verdict stays visible
    return "\n".join(lines) + "\n"


def verbatim(lines: list[str]) -> list[str]:
    """Wrap text from the model (module names, messages) in ``stop-commands``, so that no line
    of it runs as a workflow command; the runner trims leading spaces, so indenting would not
    do. The token is a hash of the text: the text cannot contain it, and output stays stable."""
    token = "modelgate-" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32]
    return [f"::stop-commands::{token}", *lines, f"::{token}::"]
