"""modelgate: lint and gate machine-learning models before they ship to a device."""

from __future__ import annotations

__version__ = "0.1.0"
