"""MG903 native-code on graphs built in memory: graph -> the exact findings.

The archive scan records members that are compiled code (by suffix, or an ELF / Mach-O / PE
header) as ``graph.native_code``; members of nested archives and shards are named with "!".
"""

from __future__ import annotations

import pytest
import rule_cases as rc

AOTI = "model/data/aotinductor/model/model.so"
NESTED = "archive/extras.pt!archive/kernels.cubin"
SHARD = "pytorch_model-00001-of-00002.bin!pytorch_model-00001-of-00002/libops.dylib"


def native(*members: str, fmt: str = "torch_export") -> rc.ModelGraph:
    return rc.graph(fmt, native_code=list(members))


def finding(member: str, severity: str = "error") -> tuple[str, str, str, str]:
    return (
        severity,
        member,
        f"native:{member}",
        f"{member} is native code: loading this archive runs it",
    )


CASES = [
    pytest.param(native(AOTI), {}, [finding(AOTI)], id="aotinductor-shared-library-fires"),
    pytest.param(
        native("archive/lib.so", NESTED, fmt="torch_save"),
        {},
        [finding("archive/lib.so"), finding(NESTED)],
        id="each-member-in-order-nested-archives-too",
    ),
    pytest.param(native(SHARD, fmt="sharded_state_dict"), {}, [finding(SHARD)], id="in-a-shard"),
    pytest.param(
        # the rule's own advice for repositories that ship AOTInductor packages on purpose
        native(AOTI),
        {"rules": {"native-code": "warning"}},
        [finding(AOTI, "warning")],
        id="set-to-warning-by-name",
    ),
    pytest.param(native(), {}, [], id="exported-program-without-binaries-does-not"),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg903(graph, conf, expected) -> None:
    assert rc.run("MG903", graph, **conf).findings == expected
