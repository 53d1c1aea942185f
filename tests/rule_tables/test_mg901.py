"""MG901 unsafe-pickle on graphs built in memory: graph -> the exact findings and fixes.

The loaders record what the pickle scanner found as ``graph.pickle_issues``; members are
named as the archive holds them ("epoch3/data.pkl"), inside nested archives and shards
with "!" ("shard.bin!shard/data.pkl").
"""

from __future__ import annotations

import pytest
import rule_cases as rc

from modelgate.graph import PickleIssue


def torch_save(*issues: PickleIssue, **kw) -> rc.ModelGraph:
    """A torch.save zip; an unsafe pickle is not unpickled, so no tensors were read."""
    return rc.graph("torch_save", pickle_issues=list(issues), **kw)


SYSTEM = PickleIssue("archive/data.pkl", "posix.system", "calls posix.system while loading", "call")
TRUNCATED = PickleIssue(
    "archive/data.pkl", None, "cannot follow the pickle: it ends before STOP (truncated)", "stream"
)
WHOLE_MODULE = PickleIssue(
    "whole/data.pkl",
    "torchmodels.WithDropout",
    "instantiates class torchmodels.WithDropout, which loading would import and run",
    "class",
)
SHARD = "pytorch_model-00002-of-00002.bin!pytorch_model-00002-of-00002/data.pkl"
INTERVAL = PickleIssue(
    SHARD,
    "transformers.trainer_utils.IntervalStrategy",
    "calls transformers.trainer_utils.IntervalStrategy while loading",
    "call",
)
SETSTATE = PickleIssue(
    "model/code/__torch__/net.py",
    "os.system",
    "TorchScript code calls os.system; the archive defines __setstate__, which torch.jit.load runs",
    "call",
)

CASES = [
    pytest.param(
        torch_save(SYSTEM),
        {},
        [
            (
                "error",
                "archive/data.pkl",
                "archive/data.pkl:posix.system",
                "archive/data.pkl: calls posix.system while loading",
            )
        ],
        id="os-system-payload-fires",
    ),
    pytest.param(
        torch_save(TRUNCATED),
        {},
        [
            (
                "error",
                "archive/data.pkl",
                "archive/data.pkl:stream",
                "archive/data.pkl: cannot follow the pickle: it ends before STOP (truncated)",
            )
        ],
        id="stream-that-cannot-be-followed-fails-closed",
    ),
    pytest.param(
        rc.graph("pickled_module", pickle_issues=[WHOLE_MODULE]),
        {},
        [
            (
                "error",
                "whole/data.pkl",
                "whole/data.pkl:torchmodels.WithDropout",
                "whole/data.pkl: instantiates class torchmodels.WithDropout, which loading "
                "would import and run",
            )
        ],
        id="pickled-module-class-fires",
    ),
    pytest.param(
        # a missing shard makes the model unreadable (MG902); the unsafe one is still named
        rc.graph(
            "sharded_torch_save",
            pickle_issues=[INTERVAL],
            unreadable="shard pytorch_model-00001-of-00002.bin: missing, although the index "
            "lists it",
            unreadable_member="pytorch_model-00001-of-00002.bin",
        ),
        {},
        [
            (
                "error",
                SHARD,
                f"{SHARD}:transformers.trainer_utils.IntervalStrategy",
                f"{SHARD}: calls transformers.trainer_utils.IntervalStrategy while loading",
            )
        ],
        id="unsafe-shard-fires-in-an-unreadable-model",
    ),
    pytest.param(
        rc.graph("torchscript", pickle_issues=[SETSTATE]),
        {"rules": {"unsafe-pickle": "warning"}},
        [
            (
                "warning",
                "model/code/__torch__/net.py",
                "model/code/__torch__/net.py:os.system",
                "model/code/__torch__/net.py: TorchScript code calls os.system; the archive "
                "defines __setstate__, which torch.jit.load runs",
            )
        ],
        id="torchscript-setstate-code-at-the-configured-severity",
    ),
    pytest.param(
        torch_save(SYSTEM, TRUNCATED),
        {},
        [
            (
                "error",
                "archive/data.pkl",
                "archive/data.pkl:posix.system",
                "archive/data.pkl: calls posix.system while loading",
            ),
            (
                "error",
                "archive/data.pkl",
                "archive/data.pkl:stream",
                "archive/data.pkl: cannot follow the pickle: it ends before STOP (truncated)",
            ),
        ],
        id="every-issue-in-scan-order",
    ),
    pytest.param(
        # inert values torch.load(weights_only=True) rejects are MG904's, not MG901's
        torch_save(
            metadata={
                "weights_only": {
                    "member": "m/data.pkl",
                    "needs": ["argparse.Namespace"],
                    "blocked": {},
                },
            }
        ),
        {},
        [],
        id="clean-pickle-does-not",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg901(graph, conf, expected) -> None:
    assert rc.run("MG901", graph, **conf).findings == expected


NEVER_ALLOW = (
    "do not load this file: {} runs code; never add it to pickle.allow. If the file is yours, "
    "re-save the state dict or safetensors"
)
TRUST = (
    "save the state dict instead (torch.save(model.state_dict())), or if you trust {}, allow it "
    'in modelgate.yaml: pickle: {{allow: ["{}"]}}'
)

CASES_FIXES = [
    pytest.param(SYSTEM, NEVER_ALLOW.format("posix.system"), id="code-runner-is-never-allowed"),
    pytest.param(
        TRUNCATED,
        "a checkpoint of tensors never needs this: re-save the state dict or safetensors "
        "(pickle.allow cannot admit a stream modelgate cannot follow)",
        id="unfollowable-stream-cannot-be-allowed",
    ),
    pytest.param(
        WHOLE_MODULE,
        TRUST.format("its class", "torchmodels.WithDropout"),
        id="own-class-can-be-allowed",
    ),
    pytest.param(
        INTERVAL,
        TRUST.format("a function it calls", "transformers.trainer_utils.IntervalStrategy"),
        id="called-global-can-be-allowed",
    ),
    pytest.param(
        # pickling torch.load writes its real name: GLOBAL 'torch.serialization load'
        PickleIssue(
            "archive/data.pkl",
            "torch.serialization.load",
            "calls torch.serialization.load while loading",
            "call",
        ),
        NEVER_ALLOW.format("torch.serialization.load"),
        id="torch-load-by-its-pickled-name-is-never-allowed",
    ),
]


@pytest.mark.parametrize(("issue", "fix"), CASES_FIXES)
def test_mg901_fix(issue, fix) -> None:
    assert rc.run("MG901", torch_save(issue)).fixes == [fix]
