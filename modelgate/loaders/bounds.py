"""Bounds on what a hostile file may declare, and a repr that stays short for its values.

Every reader of an untrusted file (pickles, safetensors headers, torch.export configs) checks
sizes against the same bounds and quotes the values it refuses with :func:`brief`, so that a
file cannot make modelgate allocate, loop or print without limit.
"""

from __future__ import annotations

import reprlib
from typing import Any

# Sizes a tensor can have: torch indexes with int64; more dims than this is not a checkpoint.
MAX_DIM = 2**62
MAX_RANK = 256
MAX_GLOBALS = 100_000  # distinct globals one pickle may name (scanned or stood in)

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 40, 40, 40


def brief(value: Any) -> str:
    """A short repr that stays short (and fast) for hostile values: huge ints, shared or
    deeply nested containers."""
    return _REPR.repr(value)
