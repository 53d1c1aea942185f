"""Sharded checkpoints: an ``*.index.json`` beside the shards it maps tensors to.

Hugging Face writes ``model.safetensors.index.json`` with ``model-0000X-of-0000N.safetensors``
(and ``pytorch_model.bin.index.json`` with ``.bin`` shards, each a ``torch.save`` state dict).
The index's ``weight_map`` names the shard of every tensor; the shards together are one model.
Each shard is read as any file of its format (headers and pickle metadata only, every pickle
scanned); the graph is their union, so shares, parameters and layers are the whole model's.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable

from modelgate.graph import ModelGraph
from modelgate.loaders.errors import Unreadable

MAX_INDEX = 64 * 1024 * 1024  # a real index is a few hundred kB
MAX_SHARDS = 100_000
INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json", ".pt.index.json",
                  ".pth.index.json")  # fmt: skip


def is_index(path: str) -> bool:
    return path.lower().endswith(".index.json")


def read_index(path: str) -> tuple[dict[str, str], list[str]]:
    """The index's tensor -> shard map and its shards in order. Raises :class:`Unreadable`."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise Unreadable(f"cannot open: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise Unreadable("not a regular file: refused without opening it")
    if info.st_size > MAX_INDEX:
        raise Unreadable(f"shard index of {info.st_size:,} bytes (limit {MAX_INDEX:,})")
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(MAX_INDEX).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Unreadable(f"shard index is not valid JSON ({str(exc)[:120]})") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise Unreadable("not a sharded checkpoint index: no weight_map of tensors to shards")
    shards: dict[str, None] = {}
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or not _plain_name(shard):
            raise Unreadable(
                f"shard index maps tensor {tensor[:80]!r} to {str(shard)[:80]!r}, which is not "
                "a file name beside the index"
            )
        shards[shard] = None
        if len(shards) > MAX_SHARDS:
            raise Unreadable(f"shard index names more than {MAX_SHARDS:,} shards")
    return weight_map, list(shards)


def _plain_name(name: str) -> bool:
    """A file in the index's own folder: no path, not the index kind again."""
    return (
        0 < len(name) <= 255
        and "/" not in name
        and "\\" not in name
        and name not in (".", "..")
        and "\0" not in name
        and not name.lower().endswith(".json")
    )


def load(path: str, graph: ModelGraph, read: Callable[[str, ModelGraph], None]) -> None:
    """Read every shard the index names (``read`` is the loader for one file) into ``graph``."""
    from modelgate.loaders.torch_pickle import infer_layers

    weight_map, shards = read_index(path)
    folder = os.path.dirname(path)
    formats: set[str] = set()
    owner: dict[str, str] = {}
    needs: set[str] = set()
    blocked: dict[str, str] = {}
    member: str | None = None
    unread: set[str] = set()
    failed: Unreadable | None = None  # the first shard that cannot be read; the rest are
    for shard in shards:  # still read, so that none escapes the pickle scan
        sub = ModelGraph(os.path.join(folder, shard))
        try:
            if not os.path.lexists(sub.path):
                raise Unreadable("missing, although the index lists it")
            read(sub.path, sub)
        except Unreadable as exc:
            where = f"{shard}!{exc.member}" if exc.member else shard
            failed = failed or Unreadable(
                f"shard {shard}: {exc.reason}", member=where, hint=exc.hint
            )
            unread.add(shard)
        graph.file_size += sub.file_size
        if any(i.usage != "class" for i in sub.pickle_issues) and not sub.tensors:
            unread.add(shard)  # unsafe, so not unpickled: MG901 says why
        formats.add(sub.format)
        for issue in sub.pickle_issues:
            issue.member = f"{shard}!{issue.member}"
            graph.pickle_issues.append(issue)
        graph.native_code.extend(f"{shard}!{m}" for m in sub.native_code)
        graph.notes.extend(f"{shard}: {note}" for note in sub.notes)
        weights_only = sub.metadata.get("weights_only")
        if weights_only:
            needs.update(weights_only["needs"])
            blocked.update(weights_only["blocked"])
            member = member or f"{shard}!{weights_only['member']}"
        if "safetensors" in sub.metadata and "safetensors" not in graph.metadata:
            graph.metadata["safetensors"] = sub.metadata["safetensors"]
        for name, info in sub.tensors.items():
            if name in owner:
                failed = failed or Unreadable(
                    f"tensor {name[:120]!r} is in both {owner[name]} and {shard}", member=shard
                )
            owner[name] = shard
            graph.tensors[name] = info
    if failed is not None:
        raise failed
    for tensor, shard in weight_map.items():
        if owner.get(tensor) != shard and shard not in unread:
            held = f"it is in {owner[tensor]}" if tensor in owner else "no shard holds it"
            raise Unreadable(
                f"the index maps tensor {tensor[:120]!r} to {shard}, but {held}", member=shard
            )
    unlisted = sum(1 for name in owner if name not in weight_map)
    kind = formats.pop() if len(formats) == 1 else "mixed"
    graph.format = f"sharded_{kind}"
    graph.metadata["shards"] = shards
    graph.notes.append(
        f"sharded checkpoint: {len(shards)} shard{'s' if len(shards) != 1 else ''} "
        f"({_names(shards)}) checked as one model"
        + (f"; {unlisted} tensors in the shards are not in the index" if unlisted else "")
    )
    if needs or blocked:
        graph.metadata["weights_only"] = {
            "member": member,
            "needs": sorted(needs),
            "blocked": dict(sorted(blocked.items())),
        }
    graph.layers.clear()
    infer_layers(graph)


def _names(shards: list[str]) -> str:
    return ", ".join(shards) if len(shards) <= 3 else f"{shards[0]} … {shards[-1]}"
