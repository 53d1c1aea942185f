"""Reporters: pure functions from a :class:`~modelgate.report.Report` to text."""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import import_module

from modelgate.report import Report

# format name -> module with render(report, color=False) -> str; imported when used
FORMATS = {
    "text": "modelgate.reporters.text",
    "json": "modelgate.reporters.json_report",
    "github": "modelgate.reporters.github",
    "sarif": "modelgate.reporters.sarif",
    "markdown": "modelgate.reporters.markdown",
}


def under_actions() -> bool:
    """GitHub Actions sets GITHUB_ACTIONS=true; then annotations are the default output."""
    return os.environ.get("GITHUB_ACTIONS") == "true"


def renderer(fmt: str) -> Callable[..., str]:
    return import_module(FORMATS[fmt]).render  # type: ignore[no-any-return]


def render(report: Report, fmt: str, color: bool = False) -> str:
    return renderer(fmt)(report, color=color)
