"""The verdict: per-file ignores, then pass / fail per model, and ignores that matched nothing.

Runs on finished reports (the new versions, and each baseline judged the same way), so it
imports no stage that produces them.
"""

from __future__ import annotations

from modelgate.config import Config
from modelgate.finding import severity_rank
from modelgate.report import Report


def finish(report: Report, config: Config) -> Report:
    """Apply per-file ignores, decide pass / fail, note ignores that matched nothing."""
    used: dict[tuple[str, str], bool] = {}
    limit = severity_rank(config.fail_on)
    for model in report.models:
        globs = config.ignored(model.path)
        for glob, ids in globs.items():
            for rid in ids:
                used.setdefault((glob, rid), False)
        kept = []
        for finding in model.findings:
            hit = [glob for glob, ids in globs.items() if finding.rule in ids]
            if hit:
                for glob in hit:
                    used[(glob, finding.rule)] = True
                continue
            kept.append(finding)
        kept.sort(key=lambda f: (severity_rank(f.severity), f.rule, f.location.describe()))
        model.findings = kept
        model.passed = not any(severity_rank(f.severity) <= limit for f in kept)
    for (glob, rid), was_used in sorted(used.items()):
        if not was_used:
            report.notes.append(f'unused ignore: "{glob}" ignores {rid}, which found nothing there')
    report.fail_on = config.fail_on
    return report
