"""``--format json``: the report as a JSON document whose shape is a contract.

``{"modelgate": VERSION, "passed": bool, "models": [{"path", "format", "passed", "findings":
[{"rule", "name", "severity", "message", "location", "fix"}], "metrics"}]}``; other keys
may be added, none of these removed or renamed.
"""

from __future__ import annotations

import json

from modelgate.report import Report


def render(report: Report, color: bool = False) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False, default=str) + "\n"
