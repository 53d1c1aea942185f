"""The one way through for many models: workers check each file (:mod:`modelgate.parallel`,
which runs :mod:`modelgate.engine` per model), baselines are paired, the budget judges every
model, the verdict decides. The CLI and the GitHub Action both call :func:`run`.
"""

from __future__ import annotations

import dataclasses

from modelgate import baseline, budget, cache, discover, parallel, verdict
from modelgate.config import Config, InputSpec
from modelgate.engine import display_path
from modelgate.report import ModelReport, Report


def run(
    paths: list[str],
    config: Config,
    cli_inputs: tuple[InputSpec, ...] = (),
    jobs: int | None = None,
    baselines: dict[str, str] | None = None,
    baseline_names: dict[str, tuple[str, str | None]] | None = None,
    found: discover.Discovery | None = None,
) -> Report:
    """Check every path, each in a worker process (``jobs`` at a time, default the CPU count;
    ``config.timeout`` seconds per model), reported in the order given.
    ``baselines`` maps a path to an older version, checked alongside for deltas (shown as
    ``baseline_names[path]``: its path and git ref, when it was exported from git); then the
    budget judges every model. ``found`` (what :func:`modelgate.discover.discover` made of the
    paths given) adds a note of what a folder scan checked and skipped."""
    olds = [b for b in dict.fromkeys((baselines or {}).values()) if b not in paths]
    if baselines:  # a baseline is built by its model's recipe (modelgate.recipes)
        aliases = {old: new for new, old in baselines.items() if old not in paths}
        config = dataclasses.replace(config, recipe_paths={**config.recipe_paths, **aliases})
    checked, cache_note = _check(paths + olds, config, cli_inputs, jobs)
    by_path = dict(zip(paths + olds, checked, strict=True))
    report = Report(checked[: len(paths)])
    names = baseline_names or {}
    pairs = {
        i: (by_path[baselines[p]], *names.get(p, (display_path(baselines[p]), None)))
        for i, p in enumerate(paths)
        if baselines and p in baselines
    }
    twins = baseline.compare_reports(report, pairs, config)
    budget.apply(report, config)
    verdict.finish(report, config)
    baseline.finish_findings(report, twins)
    if cache_note:
        report.notes.append(cache_note)
    if found is not None:
        report.notes[:0] = found.notes
        scanned = discover.summary(found, report.models)
        if scanned:
            report.notes.insert(0, scanned)
    return report


def _check(
    paths: list[str], config: Config, cli_inputs: tuple[InputSpec, ...], jobs: int | None
) -> tuple[list[ModelReport], str | None]:
    """Every path's report before the budget: from the result cache where it holds one
    (:mod:`modelgate.cache`), else checked by the workers and stored. Only the misses go
    to the workers, so a run of hits starts none and imports no toolchain."""
    store = cache.Store.open(config)
    if store is None:
        return parallel.check_all(paths, config, cli_inputs, jobs, config.timeout), None
    hits = store.lookup(paths, config, cli_inputs, jobs or parallel.default_jobs())
    misses = [p for p in paths if p not in hits]
    fresh = parallel.check_all(misses, config, cli_inputs, jobs, config.timeout)
    for path, report in zip(misses, fresh, strict=True):
        store.save(path, report)
    if misses:
        store.prune()
    by_path = {**hits, **dict(zip(misses, fresh, strict=True))}
    return [by_path[p] for p in paths], store.note()
