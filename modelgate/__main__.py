"""``python -m modelgate``."""

from __future__ import annotations

import sys

from modelgate.cli import main

sys.exit(main())
