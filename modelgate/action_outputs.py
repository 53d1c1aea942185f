"""Where the Action's results go: files it writes, the job summary it appends to, step
outputs in ``$GITHUB_OUTPUT``, and the step's log."""

from __future__ import annotations

import os
import sys

from modelgate.reporters import under_actions


def default_output_dir() -> str:
    """Where reports go by default: the runner's temp folder, outside the checkout."""
    temp = os.environ.get("RUNNER_TEMP")
    return os.path.join(temp, "modelgate") if temp else "."


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


def append_file(path: str, text: str) -> None:
    """Add ``text`` to the end of ``path`` (the job summary)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def write_file(path: str, text: str) -> None:
    """Write ``text`` to ``path``, creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def log(message: str) -> None:
    """A line of the step's log."""
    print(f"modelgate: {message}", flush=True)


def print_error(message: str) -> None:
    """Say why the step could not run: on stderr, and as an annotation under Actions."""
    from modelgate.reporters.github import command

    if under_actions():
        print(command("error", message, title="modelgate"))
    print(f"modelgate: {message}", file=sys.stderr)
