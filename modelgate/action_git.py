"""What the Action compares with: the base ref, the files that changed since it, and the
base versions of changed models, exported from git to check as their baselines."""

from __future__ import annotations

import contextlib
import json
import os
import posixpath


def base_ref(explicit: str) -> str | None:
    """The ref to compare with: the input, else the pull request's base branch, else the
    commit before a push (from the event payload)."""
    if explicit:
        return explicit
    if os.environ.get("GITHUB_BASE_REF"):
        return os.environ["GITHUB_BASE_REF"]
    event_path = os.environ.get("GITHUB_EVENT_PATH")
    if event_path and os.path.isfile(event_path):
        try:
            with open(event_path, encoding="utf-8") as fh:
                before = json.load(fh).get("before")
        except (OSError, ValueError, AttributeError):
            return None
        if isinstance(before, str) and before.strip("0"):
            return before
    return None


def compare_with_base(ref: str, root: str) -> tuple[str, dict[str, str | None], str]:
    """(the merge base of ``ref`` and HEAD, {changed file: its path there, None when added},
    the base's label for the report). Raises :class:`modelgate.repo.GitError`."""
    from modelgate import repo

    base_commit = repo.merge_base(repo.resolve_ref(ref, root), "HEAD", cwd=root)
    changes = {c.path: c.base_path for c in repo.changed_files(base_commit, cwd=root)}
    label = f"{ref}@{base_commit[:7]}" if ref != base_commit else base_commit[:12]
    return base_commit, changes, label


def model_changed(path: str, changes: dict[str, str | None]) -> bool:
    """Whether the model at ``path`` changed: its file, or a file that is part of it (a shard
    of an index, the external data of an ONNX file)."""
    from modelgate import discover

    if path in changes:
        return True
    folder = posixpath.dirname(path)
    return any(posixpath.join(folder, name) in changes for name in discover.companions(path))


def keep_changed(
    models: list[str], changes: dict[str, str | None], label: str
) -> tuple[list[str], str]:
    """(the ``models`` that changed against the base, the note that says how many)."""
    kept = [p for p in models if model_changed(p, changes)]
    return kept, (
        f"checked the {len(kept)} of {len(models)} selected model files that "
        f"changed against {label}"
    )


def base_paths(models: list[str], changes: dict[str, str | None]) -> dict[str, str]:
    """{changed model: its path at the base}, for those of ``models`` the base has."""
    bases = {p: changes.get(p, p) for p in models if model_changed(p, changes)}
    return {p: b for p, b in bases.items() if b is not None}


def export_baselines(
    bases: dict[str, str], ref: str, label: str, root: str, folder: str
) -> tuple[dict[str, str], dict[str, tuple[str, str]], dict[str, str]]:
    """Write each changed model's version at ``ref`` (``git show``) under ``folder``.

    Returns what :func:`modelgate.driver.run` takes: {model: exported file},
    {model: (its path at the base, ``label``)}, and {model: why it has no baseline}. The engine
    then checks both versions together with the same config, so budget limits on growth and
    the new-findings marks work as for ``modelgate check --baseline``."""
    from modelgate import discover, repo

    files: dict[str, str] = {}
    names: dict[str, tuple[str, str]] = {}
    missing: dict[str, str] = {}
    for i, (path, base_path) in enumerate(sorted(bases.items())):
        dest = os.path.join(folder, str(i), *base_path.split("/"))
        try:
            repo.export_file(ref, base_path, dest, cwd=root)
        except repo.GitError as exc:
            missing[path] = f"no baseline: {exc}"
            continue
        for name in discover.companions(dest):  # its shards or external data, at the base too
            with contextlib.suppress(repo.GitError):  # one missing there is the baseline's MG902
                repo.export_file(ref, posixpath.join(posixpath.dirname(base_path), name),
                                 os.path.join(os.path.dirname(dest), name), cwd=root)  # fmt: skip
        files[path] = dest
        names[path] = (base_path, label)
    return files, names, missing
