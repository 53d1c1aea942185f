"""The result cache: a model's report as the checks left it, read back while nothing that
decided it changed.

:mod:`modelgate.driver` looks every model up before the workers start
(:meth:`Store.lookup`) and stores the fresh results after (:meth:`Store.save`); only the
misses are checked, so a run of hits starts no worker and imports no toolchain. What is
stored is each model's report before the budget, the baselines and the verdict, which run on
every run: a changed budget, ``fail_on`` or per-file ignore reuses the entry and is judged
afresh. The key (:mod:`modelgate.cache_key`) is what decides that report; an entry
(:mod:`modelgate.cache_entry`) is untrusted input, ignored and replaced unless it is exactly
what this run would have written, never an error. Writes go to a temporary file renamed into
place, so parallel workers and parallel runs never see half an entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from modelgate import discover
from modelgate.cache_entry import MAX_ENTRY, cacheable, entry_text, read_entry
from modelgate.cache_key import Lookup, key_inputs, run_inputs
from modelgate.config import Config, InputSpec
from modelgate.report import ModelReport

__all__ = ["DEFAULT_DIR", "ENV_DIR", "ENV_OFF", "MAX_ENTRY", "RESULTS", "Store", "cacheable",
           "folder"]  # fmt: skip

DEFAULT_DIR = ".modelgate_cache"
ENV_DIR = "MODELGATE_CACHE_DIR"  # a folder, as --cache-dir
ENV_OFF = "MODELGATE_NO_CACHE"  # any value but "", "0", "false": as --no-cache
MAX_AGE = 30 * 24 * 3600  # seconds since an entry was last used before it is pruned
RESULTS = "results-v1"


def folder(config: Config) -> str | None:
    """The cache folder a run uses, or None when the cache is off."""
    off = os.environ.get(ENV_OFF, "").strip().lower() not in ("", "0", "false", "no")
    if off or not config.cache:
        return None
    return config.cache_dir or os.environ.get(ENV_DIR) or DEFAULT_DIR


@dataclass
class Store:
    """The cache folder of one run: :meth:`lookup` before the checks, :meth:`save` after."""

    root: str
    pending: dict[str, Lookup] = field(default_factory=dict)  # path -> its key, on a miss
    problems: list[str] = field(default_factory=list)  # why something was not written

    @classmethod
    def open(cls, config: Config) -> Store | None:
        where = folder(config)
        return cls(os.path.abspath(where)) if where else None

    def _entry(self, key: str) -> str:
        return os.path.join(self.root, RESULTS, f"{key}.json")

    def lookup(
        self,
        paths: list[str],
        config: Config,
        cli_inputs: tuple[InputSpec, ...] = (),
        jobs: int = 1,
    ) -> dict[str, ModelReport]:
        """{path: its cached report} for the paths with a valid entry; the others' keys are
        kept for :meth:`save`. Files are hashed ``jobs`` at a time (hashlib runs without
        the GIL)."""
        if not paths:
            return {}
        run = run_inputs(config, cli_inputs)
        with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(paths)))) as pool:
            found = list(pool.map(lambda p: self._one(p, config, cli_inputs, run), paths))
        hits = {}
        for path, (lookup, report) in zip(paths, found, strict=True):
            if report is not None:
                hits[path] = report
            elif lookup is not None:
                self.pending[path] = lookup
        return hits

    def _one(
        self, path: str, config: Config, cli_inputs: tuple[InputSpec, ...], run: dict[str, Any]
    ) -> tuple[Lookup | None, ModelReport | None]:
        lookup = key_inputs(path, config, cli_inputs, run)
        if lookup is None:
            return None, None
        report = read_entry(self._entry(lookup.key), lookup)
        if report is None:
            return lookup, None
        with contextlib.suppress(OSError):  # last used: pruning keeps it (a read-only cache)
            os.utime(self._entry(lookup.key))
        return lookup, _relocated(report, discover.display_path(path))

    def save(self, path: str, report: ModelReport) -> bool:
        """Store the fresh ``report`` of ``path`` when it may be cached; True when written."""
        lookup = self.pending.pop(path, None)
        if lookup is None or cacheable(report) is not None:
            return False
        try:
            now = os.stat(path)
        except OSError:
            return False
        if (now.st_size, now.st_mtime_ns) != lookup.stat:
            return False  # the file changed while it was checked
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        data = entry_text(lookup, report, created)
        if data is None:
            return False
        try:
            self._write(self._entry(lookup.key), data)
        except OSError as exc:
            self.problems.append(f"{exc.strerror or type(exc).__name__}")
            return False
        return True

    def _write(self, target: str, data: bytes) -> None:
        results = os.path.dirname(target)
        self._make_folder()
        os.makedirs(results, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # a folder or symlink in its place goes
            info = os.lstat(target)
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(target)
            elif not stat.S_ISREG(info.st_mode):
                os.unlink(target)
        fd, temporary = tempfile.mkstemp(dir=results, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def _make_folder(self) -> None:
        """The cache folder, with a ``.gitignore`` of ``*`` (git then ignores all of it, as
        with ruff's cache) and a CACHEDIR.TAG (backup tools skip it)."""
        os.makedirs(self.root, exist_ok=True)
        for name, text in (
            (".gitignore", "# created by modelgate\n*\n"),
            ("CACHEDIR.TAG", "Signature: 8a477f597d28d172789f06886806bc55\n"
                             "# modelgate's result cache: https://bford.info/cachedir/\n"),
        ):  # fmt: skip
            marker = os.path.join(self.root, name)
            if not os.path.lexists(marker):
                with contextlib.suppress(OSError), open(marker, "x", encoding="utf-8") as fh:
                    fh.write(text)

    def prune(self, max_age: float = MAX_AGE) -> None:
        """Remove entries unused for ``max_age`` seconds, and temporary files of runs that
        died writing."""
        results = os.path.join(self.root, RESULTS)
        try:
            names = os.listdir(results)
        except OSError:
            return
        cutoff = time.time() - max_age
        for name in names:
            path = os.path.join(results, name)
            with contextlib.suppress(OSError):
                info = os.lstat(path)
                old = info.st_mtime < cutoff
                stale_temporary = name.startswith(".tmp-") and info.st_mtime < time.time() - 3600
                if stat.S_ISREG(info.st_mode) and (old or stale_temporary):
                    os.unlink(path)

    def note(self) -> str | None:
        """A run note when results could not be stored, else None."""
        if not self.problems:
            return None
        return (
            f"cache: results not stored in {self.root} ({self.problems[0]}); the run is "
            "unaffected (--no-cache turns the cache off)"
        )


def _relocated(report: ModelReport, display: str) -> ModelReport:
    """A cached report under the path this run names the file by (the same bytes may have
    been checked under another name: the base branch's version exported by the Action),
    with its latency labelled as measured when the entry was made."""
    old = report.path
    report.path = display
    report.findings = [
        dataclasses.replace(f, location=dataclasses.replace(f.location, path=display))
        if f.location.path == old
        else f
        for f in report.findings
    ]
    latency = report.metrics.get("latency")
    if isinstance(latency, dict):
        latency["cached"] = report.cached
    return report
