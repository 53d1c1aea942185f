"""Globs over repository-relative paths, as ``ignore:`` and ``models:`` in the config use them."""

from __future__ import annotations

import fnmatch
import re


def glob_match(path: str, glob: str) -> bool:
    """Match a repository-relative path against a glob; "**/" spans folders, a bare name
    matches in any folder (as .gitignore does)."""
    path = path.removeprefix("./")
    if "/" not in glob:
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], glob)
    pattern = re.escape(glob.removeprefix("./"))
    pattern = pattern.replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
    pattern = pattern.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    return re.fullmatch(pattern, path) is not None
