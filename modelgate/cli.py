"""The ``modelgate`` command.

Exit codes: 0 the gate passed, 1 it failed (a finding at or above ``fail_on``, an unreadable
or unsafe model, a budget exceeded), 2 modelgate could not run (usage or config error).
Only the standard library is imported at start-up, so ``--help`` and ``--version`` are instant.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from modelgate import EXIT_FAIL, EXIT_PASS, EXIT_USAGE, __version__
from modelgate.targets import REGISTRY as TARGETS

if TYPE_CHECKING:
    from modelgate.checks.settings import CheckSettings
    from modelgate.options import Options

__all__ = ["EXIT_FAIL", "EXIT_PASS", "EXIT_USAGE", "entry", "main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelgate",
        description="Lint and gate machine-learning models before they ship to a device.",
        epilog="exit codes: 0 passed, 1 failed, 2 usage or config error",
    )
    parser.add_argument("--version", action="version", version=f"modelgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser("check", help="check model files (the gate)")
    check.add_argument("paths", nargs="+", metavar="PATH", help="model files or folders")
    check.add_argument(
        "--config",
        help="config file (default: modelgate.yaml, or "
        "[tool.modelgate] in pyproject.toml, nearest upward)",
    )
    check.add_argument(
        "--format",
        choices=["text", "json", "github", "sarif", "markdown"],
        help="report format (default: github under GitHub Actions, else text)",
    )
    check.add_argument(
        "--summary",
        metavar="FILE",
        help='also append a Markdown summary to FILE (e.g. "$GITHUB_STEP_SUMMARY")',
    )
    check.add_argument("--output", "-o", help="write the report to this file instead of stdout")
    check.add_argument(
        "--target",
        action="append",
        choices=TARGETS.names(),
        help="converter the model must pass (repeatable; default from config)",
    )
    check.add_argument(
        "--convert",
        action="append",
        choices=TARGETS.names(),
        help="convert the model (each in a child process with a time limit) and measure it; "
        "repeatable (default: convert: in the config)",
    )
    check.add_argument(
        "--compress",
        action="append",
        metavar="PRESET",
        help="data-free compression, implying the conversion it compresses: "
        + "; ".join(f"{t.label}: {', '.join(t.presets)}" for t in TARGETS if t.presets)
        + "; repeatable, the first is judged by the budget (default: compress: in the config)",
    )
    check.add_argument(
        "--static",
        action="store_true",
        help="static rules only: skip the config's conversions, compression and the budget "
        "limits that need them (the fast pre-commit hook)",
    )
    check.add_argument(
        "--baseline",
        metavar="OLD",
        help="an older version of the model (a folder laid out like the paths, for several): "
        "report the differences and the new findings; the budget may limit growth",
    )
    check.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=1x3x224x224",
        help="input shape where the model records none (repeatable)",
    )
    check.add_argument("--select", help="only these rules (comma-separated ids or names)")
    check.add_argument("--ignore", help="skip these rules (comma-separated ids or names)")
    check.add_argument(
        "--fail-on",
        choices=["error", "warning", "info"],
        help="lowest severity that fails the gate (default: error)",
    )
    check.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    check.add_argument(
        "-j", "--jobs", type=_positive(int), metavar="N",
        help="models checked in parallel, each in its own worker process (default: CPU count)",
    )  # fmt: skip
    check.add_argument(
        "--timeout", type=_positive(float), metavar="SECONDS",
        help="time limit per model; a model over it is MG902 (default: config, else 300)",
    )  # fmt: skip
    check.add_argument(
        "--no-cache", action="store_true",
        help="neither read nor write the result cache (also MODELGATE_NO_CACHE=1)",
    )  # fmt: skip
    check.add_argument(
        "--cache-dir", metavar="DIR",
        help="the result cache's folder (default: MODELGATE_CACHE_DIR, cache.dir in the "
        "config, else .modelgate_cache here)",
    )  # fmt: skip

    sub.add_parser("rules", help="list the rules")
    sub.add_parser(
        "targets", help="list the deployment targets and whether their toolchain is installed"
    )
    rule = sub.add_parser("rule", help="print a rule's documentation")
    rule.add_argument("rule", metavar="RULE", help="rule id or name, e.g. MG001")
    sub.add_parser("schema", help="print the config JSON Schema")
    return parser


def entry() -> None:
    """The console script: :func:`main`, then exit. When the run imported torch and
    coremltools (the parent imports them once for its workers to share), the interpreter's
    teardown of them takes about 2 s after the report is out; skip it, as a forked process
    does. Everything modelgate writes is flushed and closed by then."""
    code = main()
    if "torch" in sys.modules:
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe (| head)
                stream.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help/--version
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "rules":
        return _rules()
    if args.command == "targets":
        return _targets()
    if args.command == "rule":
        return _rule(args.rule)
    if args.command == "schema":
        return _schema()
    return _check(args)


def _rules() -> int:
    from modelgate.registry import documentation
    from modelgate.rules import REGISTRY

    for module in REGISTRY:
        summary = documentation(module).splitlines()[0]
        print(f"{module.ID}  {module.NAME:<26} {module.SEVERITY:<8} {summary}")
    return EXIT_PASS


def _targets() -> int:
    """One line per target: name, label, whether its packages are installed (and how to get
    them), whether MG003 checks it by default, its compression presets."""
    import importlib.util

    name = max(len(t.name) for t in TARGETS)
    label = max(len(t.label) for t in TARGETS)
    for target in TARGETS:
        missing = [p for p in target.requires if importlib.util.find_spec(p) is None]
        state = "installed" if not missing else f"needs {', '.join(missing)}: {target.install}"
        default = "default" if target.default else "opt-in"
        presets = f"; compress: {', '.join(target.presets)}" if target.presets else ""
        print(f"{target.name:<{name}}  {target.label:<{label}}  {default:<7}  {state}{presets}")
    return EXIT_PASS


def _rule(key: str) -> int:
    from modelgate.registry import UnknownRule, documentation
    from modelgate.rules import REGISTRY

    try:
        module = REGISTRY.get(key)
    except UnknownRule as exc:
        print(f"modelgate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"# {module.ID} {module.NAME}\n")
    print(f"Default severity: {module.SEVERITY}\n")
    print(documentation(module))
    return EXIT_PASS


def _schema() -> int:
    from importlib import resources

    print(resources.files("modelgate").joinpath("schema.json").read_text("utf-8"), end="")
    return EXIT_PASS


def _positive(kind: type) -> object:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
        return value

    return parse


def _require_toolchains(settings: CheckSettings) -> None:
    """Refuse, before any work (exit 2), conversions whose packages are not installed."""
    import importlib.util

    from modelgate.config import ConfigError

    for converter in settings.converters:
        target = TARGETS.get(converter)
        for package in target.requires:
            if importlib.util.find_spec(package) is None:
                raise ConfigError(f"converting to {converter} needs {package}: {target.install}")


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def _options(args: argparse.Namespace) -> Options:
    """What the ``check`` flags say, for :func:`modelgate.options.apply`."""
    from modelgate.options import Options

    return Options(
        config=args.config,
        select=_split(args.select),
        ignore=_split(args.ignore),
        targets=tuple(args.target or ()),
        fail_on=args.fail_on,
        convert=tuple(args.convert or ()),
        compress=tuple(args.compress or ()),
        static=args.static,
        baseline=bool(args.baseline),
        input_shapes=tuple(args.input_shape),
        jobs=args.jobs,
        timeout=args.timeout,
        no_cache=args.no_cache,
        cache_dir=args.cache_dir,
    )


def _check(args: argparse.Namespace) -> int:
    from modelgate import discover, driver, options
    from modelgate.config import ConfigError
    from modelgate.registry import UnknownRule
    from modelgate.reporters import render, under_actions

    opts = _options(args)
    try:
        config, cli_inputs = options.load(opts)
        _require_toolchains(config.checks)
    except (ConfigError, UnknownRule) as exc:
        print(f"modelgate: {exc}", file=sys.stderr)
        return EXIT_USAGE

    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        print(f"modelgate: no such file or folder: {missing[0]}", file=sys.stderr)
        return EXIT_USAGE
    found = discover.discover(args.paths)
    paths = found.files
    if not paths:
        print("modelgate: no model files found", file=sys.stderr)
        return EXIT_USAGE

    baselines: dict[str, str] = {}
    missing_baselines: dict[str, str] = {}
    if args.baseline:
        from modelgate.baseline import BaselineError, pair

        try:
            baselines, missing_baselines = pair(args.paths, paths, args.baseline)
        except BaselineError as exc:
            print(f"modelgate: {exc}", file=sys.stderr)
            return EXIT_USAGE
    report = driver.run(paths, config, cli_inputs, jobs=opts.jobs, baselines=baselines,
                        found=found)  # fmt: skip
    for model, path in zip(report.models, paths, strict=True):
        if path in missing_baselines:
            model.notes.append(missing_baselines[path])
    color = args.color == "always" or (
        args.color == "auto" and args.output is None and sys.stdout.isatty()
        and "NO_COLOR" not in os.environ
    )  # fmt: skip
    fmt = args.format or ("github" if under_actions() and args.output is None else "text")
    shown = report
    if fmt in ("github", "sarif", "markdown") or args.summary:
        from modelgate import repo  # annotations and SARIF want repository-relative paths

        located = repo.relocate(report, repo.find_root() or os.getcwd())
        shown = report if fmt in ("text", "json") else located
        if args.summary:
            try:
                with open(args.summary, "a", encoding="utf-8") as fh:
                    fh.write(render(located, "markdown"))
            except OSError as exc:
                print(f"modelgate: cannot write {args.summary}: {exc.strerror}", file=sys.stderr)
                return EXIT_USAGE
    text = render(shown, fmt, color=color)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            print(f"modelgate: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    else:
        sys.stdout.write(guard_workflow_commands(text) if fmt in ("text", "markdown") else text)
    return EXIT_PASS if report.passed else EXIT_FAIL


def guard_workflow_commands(text: str) -> str:
    """Under GitHub Actions, a log line starting with ``::`` is a workflow command. Text output
    quotes names from the model file, which a hostile model can fill with newlines and
    commands: wrap it as the github format wraps its full report. JSON and SARIF escape
    newlines in strings, so no line of theirs can start a command."""
    from modelgate.reporters import under_actions

    if not under_actions():
        return text
    from modelgate.reporters.github import verbatim

    return "\n".join(verbatim(text.rstrip("\n").splitlines())) + "\n"
