"""``python -m modelgate``."""

from __future__ import annotations

from modelgate.cli import entry

entry()
