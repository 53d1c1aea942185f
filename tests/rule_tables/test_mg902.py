"""MG902 unreadable-model on graphs built in memory: graph -> the exact findings and fixes.

A loader that cannot read a file sets ``graph.unreadable`` (one line), the archive member or
shard it failed in, and a hint; the other rules do not run on such a graph.
"""

from __future__ import annotations

import pytest
import rule_cases as rc


def unreadable(reason: str, member: str | None = None, hint: str | None = None, fmt="unknown"):
    g = rc.graph(fmt, unreadable=reason, unreadable_member=member)
    if hint is not None:
        g.metadata["unreadable_hint"] = hint
    return g


EMPTY = unreadable("empty file (0 bytes)")
LFS = unreadable(
    "git-lfs pointer, not the model: run git lfs pull (in GitHub Actions: actions/checkout "
    "with lfs: true)",
    fmt="lfs-pointer",
)
MISSING_SHARD = unreadable(
    "shard pytorch_model-00001-of-00002.bin: missing, although the index lists it",
    member="pytorch_model-00001-of-00002.bin",
    fmt="sharded_state_dict",
)
TRUNCATED_ONNX = unreadable(
    "truncated ONNX protobuf: graph needs bytes up to 1,048,704, the file has 524,288 "
    "(524,416 missing)",
    hint="re-export or re-download the model; check that the copy finished",
    fmt="onnx",
)

CASES = [
    pytest.param(EMPTY, {}, [("error", "", "unreadable", "empty file (0 bytes)")], id="empty-file"),
    pytest.param(
        LFS,
        {},
        [
            (
                "error",
                "",
                "unreadable",
                "git-lfs pointer, not the model: run git lfs pull (in GitHub Actions: "
                "actions/checkout with lfs: true)",
            )
        ],
        id="git-lfs-pointer",
    ),
    pytest.param(
        MISSING_SHARD,
        {},
        [
            (
                "error",
                "pytorch_model-00001-of-00002.bin",
                "unreadable",
                "shard pytorch_model-00001-of-00002.bin: missing, although the index lists it",
            )
        ],
        id="missing-shard-points-at-the-shard",
    ),
    pytest.param(
        TRUNCATED_ONNX,
        {"rules": {"MG902": "warning"}},
        [
            (
                "warning",
                "",
                "unreadable",
                "truncated ONNX protobuf: graph needs bytes up to 1,048,704, the file has "
                "524,288 (524,416 missing)",
            )
        ],
        id="truncated-onnx-at-the-configured-severity",
    ),
    pytest.param(
        # readable, however bad otherwise: an unsafe pickle is MG901's
        rc.graph("torch_save", notes=["the pickle was not read: it is unsafe"]),
        {},
        [],
        id="readable-file-does-not",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg902(graph, conf, expected) -> None:
    assert rc.run("MG902", graph, **conf).findings == expected


CASES_FIXES = [
    pytest.param(
        TRUNCATED_ONNX,
        ["re-export or re-download the model; check that the copy finished"],
        id="the-loaders-hint-is-the-fix",
    ),
    pytest.param(EMPTY, [None], id="no-hint-no-fix"),
]


@pytest.mark.parametrize(("graph", "fixes"), CASES_FIXES)
def test_mg902_fix(graph, fixes) -> None:
    assert rc.run("MG902", graph).fixes == fixes
