"""What the Action's inputs say: ``INPUT_*`` variables, true/false flags, path lists, the
shard, and the model files the ``paths`` input selects.

``action.yml`` maps the action's inputs to ``INPUT_*`` variables (which keeps them out of the
shell); :mod:`modelgate.action` reads them as its options' defaults.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

TRUE = ("1", "true", "yes", "on")


class ActionError(Exception):
    """Bad input or an unusable checkout; the message says what to change (exit 2)."""


def read_input(name: str, default: str = "") -> str:
    """The input ``name`` from ``INPUT_NAME`` (dashes as underscores), stripped."""
    return os.environ.get(f"INPUT_{name.upper().replace('-', '_')}", default).strip()


def is_true(value: str | bool) -> bool:
    """Whether an input says yes (``true``, ``1``, ``yes``, ``on``)."""
    return value if isinstance(value, bool) else value.strip().lower() in TRUE


def split_paths(text: str) -> list[str]:
    """Globs from an input: one per line or comma-separated; ``#`` starts a comment."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        out.extend(part.strip() for part in line.split(",") if part.strip())
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """ "2/4" -> (2, 4): the second of four jobs. Models go round-robin over the sorted list."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ActionError(f"shard must look like 2/4 (this job / jobs), got {text!r}") from None
    if not 1 <= index <= count:
        raise ActionError(f"shard {text}: the index must be between 1 and {count}")
    return index, count


def take_shard(models: list[str], shard: tuple[int, int]) -> tuple[list[str], str]:
    """(this job's share of ``models``, the note that says how many)."""
    index, count = shard
    share = sorted(models)[index - 1 :: count]
    return share, f"shard {index}/{count}: {len(share)} of {len(models)} model files"


def select(patterns: Sequence[str], root: str) -> tuple[list[str], list[str]]:
    """(model files, patterns that matched nothing), as repository-relative POSIX paths.

    A folder means the model files under it (by extension); a glob may use ``**``; a file
    named exactly is read whatever its extension."""
    from modelgate.discover import discover_files
    from modelgate.engine import MODEL_SUFFIXES, expand_paths

    found: list[str] = []
    unmatched = []
    for pattern in patterns:
        hits = sorted(glob.glob(pattern, root_dir=root, recursive=True))
        hits = [h for h in hits if ".git" not in h.replace(os.sep, "/").split("/")]
        if not hits:
            unmatched.append(pattern)
            continue
        folders = [h for h in hits if os.path.isdir(os.path.join(root, h))]
        files = [h for h in hits if os.path.isfile(os.path.join(root, h))]
        if any(c in pattern for c in "*?["):  # a glob picks model files; a name, any file
            files = [f for f in files if f.lower().endswith(MODEL_SUFFIXES)]
        walked = expand_paths([os.path.join(root, f) for f in folders])
        found.extend(os.path.relpath(w, root) for w in walked)
        if any(c in pattern for c in "*?["):  # shards and ONNX external data, as a walk does
            matched = discover_files([os.path.join(root, f) for f in files]).files
            files = [os.path.relpath(m, root) for m in matched]
        found.extend(files)
    seen: set[str] = set()
    out = []
    for path in (os.path.normpath(p).replace(os.sep, "/") for p in found):
        if path not in seen:
            seen.add(path)
            out.append(path)
    return out, unmatched
