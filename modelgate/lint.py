"""Run the rules over one graph view: each enabled rule with its options, findings stamped.

Rules never see the config as a whole: each gets its options (with the run's ``targets``),
and what it yields is stamped with its id, name and the configured severity. A leaf of the
stages: :mod:`modelgate.engine` runs it on a loaded model, :mod:`modelgate.budget` on the
budget's view once every model was checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from modelgate.config import Config
from modelgate.discover import display_path
from modelgate.finding import Finding, Problem
from modelgate.graph import ModelGraph
from modelgate.rule import Note, Skip

TARGET_RULE = "MG003"  # the targets' op check: config.asked_targets count only while it runs


@dataclass
class RulesOutcome:
    """What the rules said about one graph view."""

    findings: list[Finding] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_rules(
    graph: ModelGraph,
    config: Config,
    display: str,
    needs: str | None = None,
    only: str | None = None,
) -> RulesOutcome:
    """Every enabled rule over ``graph`` (only those with NEEDS == ``needs`` when given; only
    the rule with id ``only`` when given, which is how a rule is tested on its own)."""
    from modelgate.rules import REGISTRY

    outcome = RulesOutcome()
    unread = 0
    # the targets whose op check (MG003) the config or --target asked for, not the defaults
    asked = list(config.asked_targets) if config.setting(TARGET_RULE).enabled else []
    for module in REGISTRY:
        setting = config.setting(module.ID)
        if not setting.enabled or (needs is not None and needs != module.NEEDS):
            continue
        if only is not None and only != module.ID:
            continue
        if module.NEEDS == "budget" and not (graph.budget and graph.budget.entries):
            continue  # judged by modelgate.budget once every model was checked
        if module.NEEDS != "file" and graph.unreadable is not None:
            unread += 1
            continue
        if module.NEEDS == "graph" and not graph.has_graph:
            outcome.skipped[module.ID] = graph.no_graph_reason()
            continue
        if module.NEEDS == "checks" and graph.checks is None:
            continue
        options = {name: opt.default for name, opt in module.OPTIONS.items()}
        options.update(setting.options)
        options["targets"] = list(config.targets)
        options["asked_targets"] = asked
        severity = setting.severity or module.SEVERITY
        try:
            for item in module.check(graph, options):
                if isinstance(item, Skip):
                    outcome.skipped[module.ID] = item.reason
                    continue
                if isinstance(item, Note):
                    outcome.notes.append(f"{module.ID}: {item.text}")
                    continue
                outcome.findings.append(_stamp(module, severity, item, display))
        except Exception as exc:  # a rule bug is reported, not raised into someone's CI log
            outcome.skipped[module.ID] = f"internal error in the rule: {type(exc).__name__}: {exc}"
    if unread:  # one line, not one per rule: MG902 says what is wrong with the file
        outcome.notes.append(f"{unread} other rules did not run: the file could not be read")
    return outcome


def _stamp(module: object, severity: str, problem: Problem, display: str) -> Finding:
    location = replace(problem.location, path=display)
    source = location.source
    if source is not None and os.path.isabs(source.file):
        local = display_path(source.file)
        if local != source.file:  # recorded on this machine, inside the working directory
            location = replace(location, source=replace(source, file=local))
    return Finding(
        rule=module.ID,  # type: ignore[attr-defined]
        name=module.NAME,  # type: ignore[attr-defined]
        severity=severity,
        message=problem.message,
        location=location,
        fix=problem.fix,
        key=problem.key,
    )
