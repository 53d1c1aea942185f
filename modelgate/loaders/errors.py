"""The one error loaders raise: the file cannot be read, with a one-line reason."""

from __future__ import annotations


class Unreadable(Exception):
    """Becomes finding MG902; ``reason`` is what a person needs, in one line."""

    def __init__(self, reason: str, member: str | None = None, hint: str | None = None) -> None:
        super().__init__(reason)
        line = reason.strip().splitlines()[0] if reason.strip() else "unreadable"
        self.reason = line if len(line) <= 400 else line[:399] + "…"  # names come from the file
        self.member = member
        self.hint = hint
        # the zip's structure or bytes, which readers take differently (modelgate.loaders.archive):
        # every entry of such a file is scanned before the refusal stands (zip_salvage)
        self.structural = False


class NeedsExtra(Unreadable):
    """The format is recognised but reading it needs an optional dependency."""

    def __init__(self, what: str, extra: str, package: str) -> None:
        super().__init__(
            f"{what}: reading it needs {package}; install modelgate-lint[{extra}]",
            hint=f'pip install "modelgate-lint[{extra}]" (pre-commit: additional_dependencies: '
            f'["modelgate-lint[{extra}]"])',
        )
        self.extra = extra
