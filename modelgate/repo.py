"""The repository around the models: its root, what git says changed, a file's version on
another ref, and recorded Python source paths mapped into the checkout.

Models record absolute paths from the machine that exported them
(``/home/alice/proj/models/net.py``); annotations and SARIF need paths relative to the
repository (``models/net.py``). :func:`map_source` finds the longest tail of the recorded path
that exists in the working tree. Only the standard library and ``git`` are used.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from modelgate.finding import Finding
from modelgate.report import Report

_SEP = re.compile(r"[\\/]+")
_DRIVE = re.compile(r"^[A-Za-z]:$")


class GitError(Exception):
    """A git command failed; the message says what to do about it."""


def find_root(start: str = ".") -> str | None:
    """The nearest folder from ``start`` upward that holds ``.git`` (a folder or a file)."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return str(folder)
    return None


def in_repo(path: str) -> bool:
    """True for a repository-relative POSIX path (what :func:`relocate` leaves in reports)."""
    return bool(path) and not (
        os.path.isabs(path)
        or path.startswith(("../", "<"))
        or path == ".."
        or "\\" in path
        or _DRIVE.match(path[:2]) is not None
    )


def map_source(file: str, root: str, cwd: str | None = None) -> str | None:
    """``file`` as a repository-relative path, or None when no such file is in the checkout.

    A relative ``file`` is first taken relative to ``cwd``; then the longest tail of its path
    components that names a file under ``root`` wins, so ``/home/alice/proj/models/net.py``
    becomes ``models/net.py`` in a checkout of ``proj``. Windows paths work the same way.
    """
    root_path = Path(root).resolve()
    if not os.path.isabs(file) and "\\" not in file and not _DRIVE.match(file[:2]):
        local = Path(cwd or os.getcwd(), file).resolve()
        if local.is_file() and local.is_relative_to(root_path):
            return local.relative_to(root_path).as_posix()
    parts = [p for p in _SEP.split(file) if p and p != "."]
    if parts and _DRIVE.match(parts[0]):
        parts = parts[1:]
    if ".." in parts:  # a tail must not climb out of the repository
        parts = parts[len(parts) - parts[::-1].index("..") :]
    for start in range(len(parts)):
        tail = parts[start:]
        if (root_path.joinpath(*tail)).is_file():
            return "/".join(tail)
    return None


def relocate(report: Report, root: str, cwd: str | None = None) -> Report:
    """A copy of ``report`` whose paths are relative to the repository ``root``.

    Model paths inside the repository become root-relative; each finding's recorded source
    becomes the repository file it names (:func:`map_source`) or, when the repository has no
    such file, stays as recorded but absolute, so that :func:`in_repo` tells the two apart.
    """
    cwd = cwd or os.getcwd()
    cache: dict[str, str | None] = {}

    def source_path(file: str) -> str:
        if file not in cache:
            cache[file] = map_source(file, root, cwd)
        mapped = cache[file]
        if mapped is not None:
            return mapped
        return file if not in_repo(file) else os.path.abspath(os.path.join(cwd, file))

    def finding(f: Finding, model_path: str) -> Finding:
        location = replace(f.location, path=model_path)
        if location.source is not None:
            location = replace(
                location, source=replace(location.source, file=source_path(location.source.file))
            )
        return replace(f, location=location)

    models = []
    for m in report.models:
        path = _model_path(m.path, root, cwd)
        models.append(replace(m, path=path, findings=[finding(f, path) for f in m.findings]))
    return replace(report, models=models)


def _model_path(path: str, root: str, cwd: str) -> str:
    absolute = Path(cwd, path).resolve() if not os.path.isabs(path) else Path(path).resolve()
    root_path = Path(root).resolve()
    if absolute.is_relative_to(root_path):
        return absolute.relative_to(root_path).as_posix()
    return path


# ---------------------------------------------------------------------------------------------
# git
# ---------------------------------------------------------------------------------------------


def git(*args: str, cwd: str = ".") -> str:
    """Run git and return its output; GitError with git's own message when it fails."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except FileNotFoundError:
        raise GitError("git is not installed (changed-files-only and baselines need it)") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitError(f"git {' '.join(args)}: {message[-1] if message else 'failed'}")
    return done.stdout.decode("utf-8", "surrogateescape")


def resolve_ref(ref: str, cwd: str = ".") -> str:
    """The commit a branch name, tag or sha names, trying ``origin/<ref>`` too (the checkout
    action fetches the base branch only as a remote branch)."""
    for candidate in (ref, f"origin/{ref}", f"refs/remotes/origin/{ref}"):
        try:
            return git(
                "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", cwd=cwd
            ).strip()
        except GitError:
            continue
    raise GitError(
        f"base ref {ref!r} is not in this clone: check out with fetch-depth: 0 "
        "(actions/checkout) or fetch it first"
    )


def merge_base(base: str, head: str = "HEAD", cwd: str = ".") -> str:
    """Where the branch left ``base``: what a pull request's diff is computed against."""
    try:
        return git("merge-base", base, head, cwd=cwd).strip()
    except GitError:
        raise GitError(
            f"no merge base between {base[:12]} and {head}: the clone is too shallow; check out "
            "with fetch-depth: 0"
        ) from None


@dataclass(frozen=True)
class Change:
    path: str  # in the working tree, repository-relative
    base_path: str | None  # the same file on the base ref (renamed from), None when added


def changed_files(base: str, cwd: str = ".") -> list[Change]:
    """Files that differ between commit ``base`` and the working tree, deletions left out.

    Renames are followed, so a moved model is compared with its old self."""
    out = git("diff", "--name-status", "-z", "-M", "--no-ext-diff", base, "--", cwd=cwd)
    fields = out.split("\0")
    changes: list[Change] = []
    i = 0
    while i < len(fields) and fields[i]:
        status = fields[i]
        if status[:1] in "RC":
            old, new = fields[i + 1], fields[i + 2]
            changes.append(Change(new, old if status[0] == "R" else None))
            i += 3
            continue
        path = fields[i + 1]
        if status[:1] != "D":
            changes.append(Change(path, None if status[:1] == "A" else path))
        i += 2
    return changes


def export_file(ref: str, path: str, dest: str, cwd: str = ".") -> None:
    """Write ``path`` as it is at ``ref`` to ``dest``, streamed (models can be many GB).

    ``git cat-file --filters`` is ``git show ref:path`` plus the checkout filters, so a file
    stored in git-lfs comes out as the model, not as its pointer, when git-lfs is set up."""
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    with open(dest, "wb") as fh:
        try:
            done = subprocess.run(
                ["git", "cat-file", "--filters", f"{ref}:{path}"],
                cwd=cwd,
                stdout=fh,
                stderr=subprocess.PIPE,
                check=False,
            )
        except FileNotFoundError:
            raise GitError("git is not installed (baselines need it)") from None
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitError(f"cannot read {path} at {ref[:12]}: {message[-1] if message else 'failed'}")
