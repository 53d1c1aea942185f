"""MG904 weights-only-globals on graphs built in memory: graph -> the exact findings and fixes.

The torch pickle loader records, for a pickle it read as inert values, the globals
``torch.load(weights_only=True)`` rejects by default and the containers it cannot fill, as
``graph.metadata["weights_only"] = {"member": ..., "needs": [...], "blocked": {...}}``.
"""

from __future__ import annotations

import pytest
import rule_cases as rc

from modelgate.graph import PickleIssue

REJECTS = "torch.load(weights_only=True) rejects"
CANNOT = "torch.load(weights_only=True) cannot load this file, even with add_safe_globals:"
SETITEM = (
    "is filled item by item with SETITEM(S), which it allows only on dict, OrderedDict and Counter"
)
APPEND = "is filled item by item with APPEND(S), which it allows only on list"
LAYERS = [
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.dropout.Dropout",
    "torch.nn.modules.linear.Linear",
]
NUMPY = [
    "numpy._core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    "numpy.dtypes.Float32DType",
    "numpy.dtypes.Float64DType",
    "numpy.ndarray",
]
MANY = [f"mypkg.hparams.Config{i:02d}" for i in range(14)]


def checkpoint(member: str, needs=(), blocked=None, fmt="checkpoint", issues=()) -> rc.ModelGraph:
    g = rc.graph(fmt, pickle_issues=list(issues))
    g.metadata["weights_only"] = {"member": member, "needs": list(needs), "blocked": blocked or {}}
    return g


WHOLE_MODULE_CLASS = PickleIssue(
    "whole/data.pkl",
    "torchmodels.WithDropout",
    "instantiates class torchmodels.WithDropout, which loading would import and run",
    "class",
)

CASES = [
    pytest.param(
        checkpoint("epoch3/data.pkl", ["argparse.Namespace", "pathlib.PosixPath"]),
        {},
        [
            (
                "info",
                "epoch3/data.pkl",
                "weights-only",
                f"{REJECTS} 2 globals this pickle uses: argparse.Namespace, pathlib.PosixPath",
            )
        ],
        id="lightning-hparams-namespace-and-path",
    ),
    pytest.param(
        checkpoint("m/data.pkl", ["mypackage.extras.Custom"], fmt="torch_save"),
        {},
        [
            (
                "info",
                "m/data.pkl",
                "weights-only",
                f"{REJECTS} 1 global this pickle uses: mypackage.extras.Custom",
            )
        ],
        id="one-allowed-class-is-one-global",
    ),
    pytest.param(
        checkpoint("pickle", MANY, fmt="state_dict"),
        {},
        [
            (
                "info",
                "pickle",
                "weights-only",
                f"{REJECTS} 14 globals this pickle uses: " + ", ".join(MANY[:12]) + " and 2 more",
            )
        ],
        id="legacy-layout-and-more-than-twelve-names",
    ),
    pytest.param(
        checkpoint("whole/data.pkl", LAYERS, fmt="pickled_module", issues=[WHOLE_MODULE_CLASS]),
        {"rules": {"weights-only-globals": "warning"}},
        [
            (
                "warning",
                "whole/data.pkl",
                "weights-only",
                f"{REJECTS} 4 globals this pickle uses: {', '.join(LAYERS)} (the MG901 globals "
                "come on top)",
            )
        ],
        id="unsafe-pickle-says-mg901-comes-on-top-at-the-configured-severity",
    ),
    pytest.param(
        checkpoint(
            "last/data.pkl",
            ["lightning.fabric.utilities.data.AttributeDict"],
            {"lightning.fabric.utilities.data.AttributeDict": SETITEM},
        ),
        {},
        [
            (
                "info",
                "last/data.pkl",
                "weights-only",
                f"{CANNOT} lightning.fabric.utilities.data.AttributeDict {SETITEM}",
            )
        ],
        id="attribute-dict-cannot-be-loaded-at-all",
    ),
    pytest.param(
        checkpoint(
            "model/data.pkl",
            ["collections.defaultdict", "collections.deque"],
            {"collections.defaultdict": SETITEM, "collections.deque": APPEND},
            fmt="torch_save",
            issues=[WHOLE_MODULE_CLASS],
        ),
        {},
        [
            (
                "info",
                "model/data.pkl",
                "weights-only",
                f"{CANNOT} collections.defaultdict {SETITEM}; collections.deque {APPEND} (the "
                "MG901 globals come on top)",
            )
        ],
        id="every-container-it-cannot-fill",
    ),
    pytest.param(rc.graph("state_dict"), {}, [], id="plain-state-dict-does-not"),
    pytest.param(
        # MG901 alone: a pickle that was not unpickled records no weights_only needs
        rc.graph("torch_save", pickle_issues=[WHOLE_MODULE_CLASS]),
        {},
        [],
        id="unsafe-pickle-alone-does-not",
    ),
]


@pytest.mark.parametrize(("graph", "conf", "expected"), CASES)
def test_mg904(graph, conf, expected) -> None:
    assert rc.run("MG904", graph, **conf).findings == expected


LOADED = "where the file is loaded: "

CASES_FIXES = [
    pytest.param(
        ["argparse.Namespace", "pathlib.PosixPath"],
        f"{LOADED}import argparse, pathlib; "
        "torch.serialization.add_safe_globals([argparse.Namespace, pathlib.PosixPath])",
        id="imports-each-module",
    ),
    pytest.param(
        ["builtins.set"],
        f"{LOADED}torch.serialization.add_safe_globals([set])",
        id="builtins-need-no-import",
    ),
    pytest.param(
        NUMPY,
        f"{LOADED}import numpy._core.multiarray, numpy.dtypes; "
        f"torch.serialization.add_safe_globals([{', '.join(NUMPY)}])",
        id="numpy-imported-by-its-deepest-modules",
    ),
    pytest.param(
        ["numpy.core.multiarray._reconstruct"],
        f"{LOADED}import numpy.core.multiarray; torch.serialization.add_safe_globals(["
        '(numpy.core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct")])',
        id="numpy-1-name-is-allowed-under-the-name-the-pickle-uses",
    ),
    pytest.param(
        MANY,
        f"{LOADED}import mypkg.hparams; torch.serialization.add_safe_globals([{', '.join(MANY)}])",
        id="fix-names-all-of-them",
    ),
]


@pytest.mark.parametrize(("needs", "fix"), CASES_FIXES)
def test_mg904_fix(needs, fix) -> None:
    assert rc.run("MG904", checkpoint("model/data.pkl", needs)).fixes == [fix]


def test_mg904_fix_when_nothing_helps() -> None:
    graph = checkpoint("model/data.pkl", blocked={"collections.deque": APPEND})
    assert rc.run("MG904", graph).fixes == [
        "save these as plain dicts and lists (dict(hparams), list(queue)) before torch.save, or "
        "load the file with weights_only=False only where you trust it"
    ]
