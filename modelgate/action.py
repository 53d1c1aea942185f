"""The GitHub Action's entry point: ``python -m modelgate.action``.

``run`` (the default) checks the models a pull request touches and reports them the ways
GitHub shows things: annotations on the diff, a job summary, SARIF for code scanning, step
outputs. ``combine REPORT.json...`` merges the JSON reports of a job matrix into one summary.

Inputs come from ``INPUT_*`` environment variables (action.yml maps the action's inputs to
them, which keeps them out of the shell) or from the equivalent options, so the same entry
point runs locally::

    python -m modelgate.action --paths 'models/**' --changed-files-only --base-ref main

Exit codes are the CLI's: 0 passed, 1 failed, 2 could not run (bad input, config, git).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
from collections.abc import Sequence

from modelgate import EXIT_FAIL, EXIT_PASS, EXIT_USAGE
from modelgate.action_git import (
    base_paths,
    base_ref,
    compare_with_base,
    export_baselines,
    keep_changed,
)
from modelgate.action_inputs import (
    TRUE,
    ActionError,
    is_true,
    parse_shard,
    read_input,
    select,
    split_paths,
    take_shard,
)
from modelgate.action_outputs import (
    append_file,
    default_output_dir,
    log,
    print_error,
    write_file,
    write_outputs,
)
from modelgate.finding import SEVERITIES
from modelgate.options import Options
from modelgate.report import Report
from modelgate.reporters import under_actions

__all__ = [  # the entry point, and what callers and tests reach through it
    "ActionError", "base_ref", "combine", "export_baselines", "main", "parse_shard",
    "publish", "run", "select", "split_paths", "write_outputs",
]  # fmt: skip

# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modelgate.action",
        description="modelgate as a GitHub Action step (options default to INPUT_* variables)",
        epilog="exit codes: 0 passed, 1 failed, 2 usage, config or git error",
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="check models (the default)")
    run.add_argument(
        "--paths",
        default=read_input("paths", "."),
        help="globs or folders, one per line or comma-separated (default: .)",
    )
    run.add_argument(
        "--config", default=read_input("config"), help="config file (default: discovered)"
    )
    run.add_argument(
        "--changed-files-only",
        default=read_input("changed_files_only", "false"),
        nargs="?",
        const="true",
        help="only models that differ from the base ref",
    )
    run.add_argument(
        "--base-ref",
        default=read_input("base_ref"),
        help="branch, tag or sha to compare with (default: the pull request's base)",
    )
    run.add_argument(
        "--baseline",
        default=read_input("baseline", "true"),
        help="compare changed models with their base version (default: true)",
    )
    run.add_argument(
        "--summary",
        default=read_input("summary", "true"),
        help="append a Markdown summary to $GITHUB_STEP_SUMMARY (default: true)",
    )
    run.add_argument(
        "--sarif",
        default=read_input("sarif", "false"),
        help="true, false or a path: write SARIF for code scanning",
    )
    run.add_argument(
        "--report", default=read_input("report"), help="where to write the JSON report"
    )
    run.add_argument(
        "--fail-level",
        default=read_input("fail_level"),
        choices=["", *SEVERITIES],
        help="lowest severity that fails the gate (default: the config's)",
    )
    run.add_argument(
        "--shard",
        default=read_input("shard"),
        metavar="INDEX/COUNT",
        help="check every COUNT-th of the selected models, from INDEX (1-based): "
        "one job of a matrix",
    )
    combine = sub.add_parser("combine", help="merge JSON reports (a job matrix) into one summary")
    combine.add_argument("reports", nargs="+", metavar="REPORT.json")
    combine.add_argument("--output", "-o", help="also write the combined JSON report here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list and read_input("combine"):  # the action's combine mode
        report = os.path.join(default_output_dir(), "modelgate-report.json")
        args_list = ["combine", "--output", report, *split_paths(read_input("combine"))]
    if not args_list or args_list[0] not in ("run", "combine", "-h", "--help"):
        args_list.insert(0, "run")
    try:
        args = _parser().parse_args(args_list)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return run(args) if args.command == "run" else combine(args.reports, args.output)
    except ActionError as exc:
        print_error(str(exc))
        return EXIT_USAGE


def _options(args: argparse.Namespace) -> Options:
    """What the Action's inputs say, for :func:`modelgate.options.apply`."""
    return Options(
        config=args.config or None,
        fail_on=args.fail_level or None,
        baseline=is_true(args.baseline),
    )


def run(args: argparse.Namespace) -> int:
    from modelgate import driver, options, repo, verdict
    from modelgate.config import ConfigError
    from modelgate.registry import UnknownRule

    root = os.environ.get("GITHUB_WORKSPACE") or repo.find_root() or os.getcwd()
    root = os.path.abspath(root)
    os.chdir(root)  # display paths, globs and annotations are all relative to the repository
    opts = _options(args)
    try:
        config, inputs = options.load(opts)
    except (ConfigError, UnknownRule) as exc:
        raise ActionError(str(exc)) from None
    shard = parse_shard(args.shard) if args.shard else None

    patterns = split_paths(args.paths) or ["."]
    selected, unmatched = select(patterns, root)
    notes = [f"paths: {p!r} matched no files" for p in unmatched]

    ref = base_ref(args.base_ref)
    changes: dict[str, str | None] | None = None
    base_commit = label = None
    if ref is not None:
        try:
            base_commit, changes, label = compare_with_base(ref, root)
        except repo.GitError as exc:
            if is_true(args.changed_files_only) or args.base_ref:
                raise ActionError(str(exc)) from None
            notes.append(f"no comparison with the base: {exc}")
    if is_true(args.changed_files_only):
        if changes is None:
            notes.append(
                "changed-files-only: no base ref (not a pull request, and no base-ref "
                "input), so every selected model was checked"
            )
        else:
            selected, note = keep_changed(selected, changes, label)
            notes.append(note)
    elif not selected:
        raise ActionError(f"paths matched no model files: {', '.join(patterns)}")
    if shard is not None:
        selected, note = take_shard(selected, shard)
        notes.append(note)

    log(
        f"checking {len(selected)} model file{'s' if len(selected) != 1 else ''}"
        + (f" (base {label})" if label else "")
    )
    with tempfile.TemporaryDirectory(
        prefix="modelgate-base-", dir=os.environ.get("RUNNER_TEMP")
    ) as tmp:
        files: dict[str, str] = {}
        names: dict[str, tuple[str, str]] = {}
        missing: dict[str, str] = {}
        if changes and base_commit and is_true(args.baseline):
            bases = base_paths(selected, changes)
            files, names, missing = export_baselines(
                bases, base_commit, label or base_commit, root, tmp
            )
        if selected:
            report = driver.run(selected, config, inputs, jobs=opts.jobs, baselines=files,
                                baseline_names=names)  # fmt: skip
        else:
            report = verdict.finish(Report(), config)
    for model in report.models:
        if model.path in missing:
            model.notes.append(missing[model.path])
    report.notes.extend(notes)
    pointers = [m.path for m in report.models if m.format == "lfs-pointer"]
    if pointers:
        report.notes.append(
            f"{len(pointers)} model file(s) are git-lfs pointers, not models ({pointers[0]}"
            f"{', ...' if len(pointers) > 1 else ''}): check out with lfs: true "
            "(actions/checkout) or run git lfs pull"
        )
    report = repo.relocate(report, root, root)
    return publish(report, args)


def publish(report: Report, args: argparse.Namespace) -> int:
    """Write everything the step produces; return the exit code."""
    from modelgate.reporters import render

    out_dir = default_output_dir()
    report_path = args.report or os.path.join(out_dir, "modelgate-report.json")
    write_file(report_path, render(report, "json"))
    sarif_path = ""
    if args.sarif and args.sarif.lower() not in ("false", "0", "no", "off"):
        sarif_path = (
            args.sarif
            if args.sarif.lower() not in TRUE
            else os.path.join(out_dir, "modelgate.sarif")
        )
        write_file(sarif_path, render(report, "sarif"))
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if is_true(args.summary) and summary_file:
        append_file(summary_file, render(report, "markdown"))
    sys.stdout.write(render(report, "github" if under_actions() else "text"))
    write_outputs(
        {
            "passed": "true" if report.passed else "false",
            "report": os.path.abspath(report_path),
            "sarif": os.path.abspath(sarif_path) if sarif_path else "",
            "checked": str(len(report.models)),
            "failed": str(sum(not m.passed for m in report.models)),
        }
    )
    return EXIT_PASS if report.passed else EXIT_FAIL


# ---------------------------------------------------------------------------------------------
# combine
# ---------------------------------------------------------------------------------------------


def combine(paths: Sequence[str], output: str | None = None) -> int:
    """One summary for the reports of several jobs; fails when any model failed."""
    from modelgate.reporters import render

    files = sorted({f for p in paths for f in (glob.glob(p, recursive=True) or [p])})
    combined = Report()
    for path in files:
        try:
            with open(path, encoding="utf-8") as fh:
                part = Report.from_dict(json.load(fh))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ActionError(f"cannot read report {path}: {exc}") from None
        combined.models.extend(part.models)
        combined.notes.extend(part.notes)
        combined.fail_on = part.fail_on
    if not files:
        raise ActionError("no reports to combine")
    combined.models.sort(key=lambda m: m.path)
    markdown = render(combined, "markdown")
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        append_file(summary_file, markdown)
    else:
        sys.stdout.write(markdown)
    if output:
        write_file(output, render(combined, "json"))
    write_outputs(
        {
            "passed": "true" if combined.passed else "false",
            "report": os.path.abspath(output) if output else "",
        }
    )
    log(
        f"{len(files)} reports, {len(combined.models)} models: "
        + ("passed" if combined.passed else "failed")
    )
    return EXIT_PASS if combined.passed else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
