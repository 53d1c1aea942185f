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
import contextlib
import glob
import json
import os
import posixpath
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any

from modelgate.cli import EXIT_FAIL, EXIT_PASS, EXIT_USAGE, under_actions
from modelgate.finding import SEVERITIES, Finding, Location, SourceLocation
from modelgate.options import Options
from modelgate.report import ModelReport, Report

TRUE = ("1", "true", "yes", "on")


class ActionError(Exception):
    """Bad input or an unusable checkout; the message says what to change (exit 2)."""


# ---------------------------------------------------------------------------------------------
# inputs and outputs
# ---------------------------------------------------------------------------------------------


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"INPUT_{name.upper().replace('-', '_')}", default).strip()


def _flag(value: str | bool) -> bool:
    return value if isinstance(value, bool) else value.strip().lower() in TRUE


def split_paths(text: str) -> list[str]:
    """Globs from an input: one per line or comma-separated; ``#`` starts a comment."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        out.extend(part.strip() for part in line.split(",") if part.strip())
    return out


def write_outputs(values: dict[str, str], path: str | None = None) -> None:
    """Append step outputs to ``$GITHUB_OUTPUT`` (multi-line values use a delimiter)."""
    path = path or os.environ.get("GITHUB_OUTPUT")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as fh:
        for key, value in values.items():
            if "\n" in value:
                fh.write(f"{key}<<MODELGATE_EOF\n{value}\nMODELGATE_EOF\n")
            else:
                fh.write(f"{key}={value}\n")


def _append(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def _default_dir() -> str:
    """Where reports go by default: the runner's temp folder, outside the checkout."""
    temp = os.environ.get("RUNNER_TEMP")
    return os.path.join(temp, "modelgate") if temp else "."


# ---------------------------------------------------------------------------------------------
# selecting models
# ---------------------------------------------------------------------------------------------


def select(patterns: Sequence[str], root: str) -> tuple[list[str], list[str]]:
    """(model files, patterns that matched nothing), as repository-relative POSIX paths.

    A folder means the model files under it (by extension); a glob may use ``**``; a file
    named exactly is read whatever its extension."""
    from modelgate.discover import discover_files
    from modelgate.engine import MODEL_SUFFIXES, expand_paths

    found: list[str] = []
    unmatched = []
    for pattern in patterns:
        hits = sorted(glob.glob(pattern, root_dir=root, recursive=True))
        hits = [h for h in hits if ".git" not in h.replace(os.sep, "/").split("/")]
        if not hits:
            unmatched.append(pattern)
            continue
        folders = [h for h in hits if os.path.isdir(os.path.join(root, h))]
        files = [h for h in hits if os.path.isfile(os.path.join(root, h))]
        if any(c in pattern for c in "*?["):  # a glob picks model files; a name, any file
            files = [f for f in files if f.lower().endswith(MODEL_SUFFIXES)]
        walked = expand_paths([os.path.join(root, f) for f in folders])
        found.extend(os.path.relpath(w, root) for w in walked)
        if any(c in pattern for c in "*?["):  # shards and ONNX external data, as a walk does
            matched = discover_files([os.path.join(root, f) for f in files]).files
            files = [os.path.relpath(m, root) for m in matched]
        found.extend(files)
    seen: set[str] = set()
    out = []
    for path in (os.path.normpath(p).replace(os.sep, "/") for p in found):
        if path not in seen:
            seen.add(path)
            out.append(path)
    return out, unmatched


def parse_shard(text: str) -> tuple[int, int]:
    """ "2/4" -> (2, 4): the second of four jobs. Models go round-robin over the sorted list."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ActionError(f"shard must look like 2/4 (this job / jobs), got {text!r}") from None
    if not 1 <= index <= count:
        raise ActionError(f"shard {text}: the index must be between 1 and {count}")
    return index, count


def base_ref(explicit: str) -> str | None:
    """The ref to compare with: the input, else the pull request's base branch, else the
    commit before a push (from the event payload)."""
    if explicit:
        return explicit
    if os.environ.get("GITHUB_BASE_REF"):
        return os.environ["GITHUB_BASE_REF"]
    event_path = os.environ.get("GITHUB_EVENT_PATH")
    if event_path and os.path.isfile(event_path):
        try:
            with open(event_path, encoding="utf-8") as fh:
                before = json.load(fh).get("before")
        except (OSError, ValueError, AttributeError):
            return None
        if isinstance(before, str) and before.strip("0"):
            return before
    return None


# ---------------------------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------------------------


def export_baselines(
    bases: dict[str, str], ref: str, label: str, root: str, folder: str
) -> tuple[dict[str, str], dict[str, tuple[str, str]], dict[str, str]]:
    """Write each changed model's version at ``ref`` (``git show``) under ``folder``.

    Returns what :func:`modelgate.driver.run` takes: {model: exported file},
    {model: (its path at the base, ``label``)}, and {model: why it has no baseline}. The engine
    then checks both versions together with the same config, so budget limits on growth and
    the new-findings marks work as for ``modelgate check --baseline``."""
    from modelgate import discover, repo

    files: dict[str, str] = {}
    names: dict[str, tuple[str, str]] = {}
    missing: dict[str, str] = {}
    for i, (path, base_path) in enumerate(sorted(bases.items())):
        dest = os.path.join(folder, str(i), *base_path.split("/"))
        try:
            repo.export_file(ref, base_path, dest, cwd=root)
        except repo.GitError as exc:
            missing[path] = f"no baseline: {exc}"
            continue
        for name in discover.companions(dest):  # its shards or external data, at the base too
            with contextlib.suppress(repo.GitError):  # one missing there is the baseline's MG902
                repo.export_file(ref, posixpath.join(posixpath.dirname(base_path), name),
                                 os.path.join(os.path.dirname(dest), name), cwd=root)  # fmt: skip
        files[path] = dest
        names[path] = (base_path, label)
    return files, names, missing


def _changed(path: str, changes: dict[str, str | None]) -> bool:
    """Whether the model at ``path`` changed: its file, or a file that is part of it (a shard
    of an index, the external data of an ONNX file)."""
    from modelgate import discover

    if path in changes:
        return True
    folder = posixpath.dirname(path)
    return any(posixpath.join(folder, name) in changes for name in discover.companions(path))


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
        default=_env("paths", "."),
        help="globs or folders, one per line or comma-separated (default: .)",
    )
    run.add_argument("--config", default=_env("config"), help="config file (default: discovered)")
    run.add_argument(
        "--changed-files-only",
        default=_env("changed_files_only", "false"),
        nargs="?",
        const="true",
        help="only models that differ from the base ref",
    )
    run.add_argument(
        "--base-ref",
        default=_env("base_ref"),
        help="branch, tag or sha to compare with (default: the pull request's base)",
    )
    run.add_argument(
        "--baseline",
        default=_env("baseline", "true"),
        help="compare changed models with their base version (default: true)",
    )
    run.add_argument(
        "--summary",
        default=_env("summary", "true"),
        help="append a Markdown summary to $GITHUB_STEP_SUMMARY (default: true)",
    )
    run.add_argument(
        "--sarif",
        default=_env("sarif", "false"),
        help="true, false or a path: write SARIF for code scanning",
    )
    run.add_argument("--report", default=_env("report"), help="where to write the JSON report")
    run.add_argument(
        "--fail-level",
        default=_env("fail_level"),
        choices=["", *SEVERITIES],
        help="lowest severity that fails the gate (default: the config's)",
    )
    run.add_argument(
        "--shard",
        default=_env("shard"),
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
    if not args_list and _env("combine"):  # the action's combine mode
        report = os.path.join(_default_dir(), "modelgate-report.json")
        args_list = ["combine", "--output", report, *split_paths(_env("combine"))]
    if not args_list or args_list[0] not in ("run", "combine", "-h", "--help"):
        args_list.insert(0, "run")
    try:
        args = _parser().parse_args(args_list)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return run(args) if args.command == "run" else combine(args.reports, args.output)
    except ActionError as exc:
        _error(str(exc))
        return EXIT_USAGE


def _error(message: str) -> None:
    from modelgate.reporters.github import command

    if under_actions():
        print(command("error", message, title="modelgate"))
    print(f"modelgate: {message}", file=sys.stderr)


def _log(message: str) -> None:
    print(f"modelgate: {message}", flush=True)


def _options(args: argparse.Namespace) -> Options:
    """What the Action's inputs say, for :func:`modelgate.options.apply`."""
    return Options(
        config=args.config or None,
        fail_on=args.fail_level or None,
        baseline=_flag(args.baseline),
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
            base_commit = repo.merge_base(repo.resolve_ref(ref, root), "HEAD", cwd=root)
            changes = {c.path: c.base_path for c in repo.changed_files(base_commit, cwd=root)}
            label = f"{ref}@{base_commit[:7]}" if ref != base_commit else base_commit[:12]
        except repo.GitError as exc:
            if _flag(args.changed_files_only) or args.base_ref:
                raise ActionError(str(exc)) from None
            notes.append(f"no comparison with the base: {exc}")
    if _flag(args.changed_files_only):
        if changes is None:
            notes.append(
                "changed-files-only: no base ref (not a pull request, and no base-ref "
                "input), so every selected model was checked"
            )
        else:
            total = len(selected)
            selected = [p for p in selected if _changed(p, changes)]
            notes.append(
                f"checked the {len(selected)} of {total} selected model files that "
                f"changed against {label}"
            )
    elif not selected:
        raise ActionError(f"paths matched no model files: {', '.join(patterns)}")
    if shard is not None:
        index, count = shard
        share = sorted(selected)[index - 1 :: count]
        notes.append(f"shard {index}/{count}: {len(share)} of {len(selected)} model files")
        selected = share

    _log(
        f"checking {len(selected)} model file{'s' if len(selected) != 1 else ''}"
        + (f" (base {label})" if label else "")
    )
    with tempfile.TemporaryDirectory(
        prefix="modelgate-base-", dir=os.environ.get("RUNNER_TEMP")
    ) as tmp:
        files: dict[str, str] = {}
        names: dict[str, tuple[str, str]] = {}
        missing: dict[str, str] = {}
        if changes and base_commit and _flag(args.baseline):
            bases = {p: changes.get(p, p) for p in selected if _changed(p, changes)}
            bases = {p: b for p, b in bases.items() if b is not None}
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

    out_dir = _default_dir()
    report_path = args.report or os.path.join(out_dir, "modelgate-report.json")
    _write(report_path, render(report, "json"))
    sarif_path = ""
    if args.sarif and args.sarif.lower() not in ("false", "0", "no", "off"):
        sarif_path = (
            args.sarif
            if args.sarif.lower() not in TRUE
            else os.path.join(out_dir, "modelgate.sarif")
        )
        _write(sarif_path, render(report, "sarif"))
    summary_file = os.environ.get("GITHUB_STEP_SUMMARY")
    if _flag(args.summary) and summary_file:
        _append(summary_file, render(report, "markdown"))
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


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def finding_from_dict(data: dict[str, Any]) -> Finding:
    loc = dict(data.get("location") or {})
    source = loc.pop("source", None)
    location = Location(**_known(Location, {"path": "", **loc}))
    if isinstance(source, dict):
        location = replace(location, source=SourceLocation(**_known(SourceLocation, source)))
    core = ("rule", "name", "severity", "message", "location", "fix", "key")
    return Finding(
        rule=data["rule"],
        name=data.get("name", ""),
        severity=data.get("severity", "error"),
        message=data.get("message", ""),
        location=location,
        fix=data.get("fix"),
        key=data.get("key"),
        extra={k: v for k, v in data.items() if k not in core},
    )


def report_from_dict(doc: dict[str, Any]) -> Report:
    """A :class:`Report` back from ``--format json`` output (what matrix jobs upload)."""
    models = []
    for m in doc.get("models", []):
        models.append(
            ModelReport(
                path=m["path"],
                format=m.get("format", "unknown"),
                findings=[finding_from_dict(f) for f in m.get("findings", [])],
                metrics=m.get("metrics") or {},
                skipped={s["rule"]: s.get("reason", "") for s in m.get("skipped", [])},
                notes=list(m.get("notes", [])),
                passed=bool(m.get("passed", True)),
            )
        )
    return Report(
        models=models,
        notes=list(doc.get("notes", [])),
        fail_on=doc.get("fail_on", "error"),
        version=doc.get("modelgate", "?"),
    )


def combine(paths: Sequence[str], output: str | None = None) -> int:
    """One summary for the reports of several jobs; fails when any model failed."""
    from modelgate.reporters import render

    files = sorted({f for p in paths for f in (glob.glob(p, recursive=True) or [p])})
    combined = Report()
    for path in files:
        try:
            with open(path, encoding="utf-8") as fh:
                part = report_from_dict(json.load(fh))
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
        _append(summary_file, markdown)
    else:
        sys.stdout.write(markdown)
    if output:
        _write(output, render(combined, "json"))
    write_outputs(
        {
            "passed": "true" if combined.passed else "false",
            "report": os.path.abspath(output) if output else "",
        }
    )
    _log(
        f"{len(files)} reports, {len(combined.models)} models: "
        + ("passed" if combined.passed else "failed")
    )
    return EXIT_PASS if combined.passed else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
