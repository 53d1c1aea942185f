"""Regenerate modelgate/schema.json from the rule registry: python tools/gen_schema.py"""

from __future__ import annotations

import json
from pathlib import Path

from modelgate.config import build_schema

TARGET = Path(__file__).resolve().parent.parent / "modelgate" / "schema.json"

if __name__ == "__main__":
    TARGET.write_text(json.dumps(build_schema(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {TARGET}")
