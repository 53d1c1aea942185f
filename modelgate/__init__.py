"""modelgate: lint and gate machine-learning models before they ship to a device."""

from __future__ import annotations

__version__ = "0.1.0"

# the documented exit codes of `modelgate check` and the Action (README, "Exit codes")
EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
