"""Checkpoints as training frameworks really write them, built here with torch.

Lightning and transformers are not installed: their classes are stand-ins whose
``__module__`` / ``__qualname__`` are the real ones, put into ``sys.modules`` only while a file
is saved (and while torch loads it back), so the pickles name exactly what the frameworks'
pickles name. Where a finding predicts what ``torch.load(weights_only=True)`` does, the test
runs torch both ways: without the globals MG904 names it fails, with them (the fix's own code)
it loads; where MG904 says no global helps, allowing them does not help.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import enum
import fractions
import json
import os
import pathlib
import random
import re
import signal
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from modelgate import config as cfg  # noqa: E402
from modelgate import discover, driver, engine  # noqa: E402
from modelgate.loaders import Policy, load, pickles  # noqa: E402

# ---------------------------------------------------------------------------------------------
# the frameworks' classes, under their real names
# ---------------------------------------------------------------------------------------------


class AttributeDict(dict):
    """lightning.fabric.utilities.data.AttributeDict as Lightning defines it."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(key) from exc

    def __setattr__(self, key: str, val: Any) -> None:
        self[key] = val


class IntervalStrategy(str, enum.Enum):  # transformers.trainer_utils.IntervalStrategy
    NO = "no"
    STEPS = "steps"
    EPOCH = "epoch"


class SchedulerType(str, enum.Enum):  # transformers.trainer_utils.SchedulerType
    LINEAR = "linear"
    COSINE = "cosine"


@dataclasses.dataclass
class TrainingArguments:  # transformers.training_args.TrainingArguments, in brief
    output_dir: str = "out"
    learning_rate: float = 5e-5
    num_train_epochs: float = 3.0
    eval_strategy: IntervalStrategy = IntervalStrategy.STEPS
    save_strategy: IntervalStrategy = IntervalStrategy.STEPS
    lr_scheduler_type: SchedulerType = SchedulerType.LINEAR
    save_steps: int = 500
    seed: int = 42

    def __post_init__(self) -> None:  # the real one does far more: not inert
        self.logging_dir = os.path.join(self.output_dir, "runs")


_FRAMEWORK = {
    "lightning.fabric.utilities.data": {"AttributeDict": AttributeDict},
    "transformers.trainer_utils": {
        "IntervalStrategy": IntervalStrategy,
        "SchedulerType": SchedulerType,
    },
    "transformers.training_args": {"TrainingArguments": TrainingArguments},
}


@contextlib.contextmanager
def frameworks() -> Iterator[None]:
    """The stand-ins importable under their real module names, for as long as it lasts."""
    added = []
    for module, classes in _FRAMEWORK.items():
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
        for cls_name, cls in classes.items():
            cls.__module__ = module
            cls.__qualname__ = cls_name
            setattr(sys.modules[module], cls_name, cls)
    try:
        yield
    finally:
        for name in added:
            del sys.modules[name]


def save(obj: Any, path: Path) -> Path:
    with frameworks():
        torch.save(obj, str(path))
    return path


def tiny_model() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    )  # fmt: skip


def trained(model: Any) -> tuple[Any, Any]:
    """An AdamW optimizer and a LambdaLR scheduler after one step (state for every param)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    scheduler.step()
    return optimizer, scheduler


def lightning_checkpoint(model: Any, hyper_parameters: Any) -> dict[str, Any]:
    """What Lightning 2.x's checkpoint connector dumps (Trainer.save_checkpoint)."""
    optimizer, scheduler = trained(model)
    return {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": model.state_dict(),
        "loops": {
            "fit_loop": {
                "state_dict": {},
                "epoch_loop.state_dict": {"_batches_that_stepped": 120},
                "epoch_progress": {
                    "total": {"ready": 4, "started": 4, "processed": 3, "completed": 3},
                    "current": {"ready": 4, "started": 4, "processed": 3, "completed": 3},
                },
            },
            "validate_loop": {"state_dict": {}},
        },
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, "
            "'every_n_epochs': 1, 'train_time_interval': None}": {
                "monitor": "val_loss",
                "best_model_score": torch.tensor(0.25),
                "best_model_path": "/runs/ckpt/epoch=2.ckpt",
                "current_score": torch.tensor(0.25),
                "dirpath": "/runs/ckpt",
                "best_k_models": {"/runs/ckpt/epoch=2.ckpt": torch.tensor(0.25)},
                "kth_best_model_path": "/runs/ckpt/epoch=2.ckpt",
                "kth_value": torch.tensor(0.25),
                "last_model_path": "",
            }
        },
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": hyper_parameters,
    }


def check(path: Path, doc: dict[str, Any] | None = None) -> Any:
    return engine.check_file(str(path), cfg.from_dict(doc or {}))


def findings(report: Any) -> list[tuple[str, str, str | None]]:
    return sorted((f.rule, f.severity, f.location.member) for f in report.findings)


def only(report: Any, rule: str) -> Any:
    (found,) = [f for f in report.findings if f.rule == rule]
    return found


def safe_globals_of(fix: str) -> list[Any]:
    """The objects the MG904 fix allows, by running its own code (add_safe_globals replaced by
    collecting its argument, so no process-wide state changes)."""
    code = fix.removeprefix("where the file is loaded: ")
    namespace: dict[str, Any] = {}
    imports, _, call = code.rpartition("; ")
    if imports:
        exec(imports, namespace)  # the fix's own import line
    inner = re.fullmatch(r"torch\.serialization\.add_safe_globals\((.*)\)", call)
    assert inner is not None, fix
    with frameworks():
        return eval(inner.group(1), namespace)  # the fix's own list


def weights_only_load(path: Path, allowed: list[Any]) -> str | None:
    """None when ``torch.load(weights_only=True)`` loads the file with ``allowed``, else why."""
    with frameworks(), torch.serialization.safe_globals(allowed):
        try:
            torch.load(str(path), weights_only=True)
        except Exception as exc:  # torch's UnpicklingError
            return str(exc)
    return None


# ---------------------------------------------------------------------------------------------
# inert values: no MG901 / MG902, MG904 says what weights_only needs, checked with torch
# ---------------------------------------------------------------------------------------------


def test_lightning_checkpoint_with_a_namespace_is_read_and_mg904_is_right(tmp_path: Path):
    args = argparse.Namespace(lr=1e-3, batch_size=32, data_dir=pathlib.PosixPath("/data/imgs"))
    path = save(lightning_checkpoint(tiny_model(), {"args": args}), tmp_path / "epoch3.ckpt")
    report = check(path)
    assert report.format == "checkpoint"
    assert findings(report) == [("MG904", "info", "epoch3/data.pkl")]
    mg904 = only(report, "MG904")
    assert mg904.message == (
        "torch.load(weights_only=True) rejects 2 globals this pickle uses: "
        "argparse.Namespace, pathlib.PosixPath"
    )
    assert mg904.fix == (
        "where the file is loaded: import argparse, pathlib; "
        "torch.serialization.add_safe_globals([argparse.Namespace, pathlib.PosixPath])"
    )
    assert report.notes == [
        "also holds training state: optimizer_states: 1 × optimizer state; "
        "lr_schedulers: 1 × LR scheduler state"
    ]
    assert report.metrics["parameters"] == sum(p.numel() for p in tiny_model().parameters())
    # torch agrees both ways
    assert "argparse.Namespace" in (weights_only_load(path, []) or "")
    assert weights_only_load(path, safe_globals_of(mg904.fix)) is None


def test_attribute_dict_is_inert_but_weights_only_cannot_fill_it(tmp_path: Path):
    hparams = AttributeDict(lr=1e-3, layers=4)
    path = save(lightning_checkpoint(tiny_model(), hparams), tmp_path / "last.ckpt")
    report = check(path)
    assert report.format == "checkpoint"
    assert findings(report) == [("MG904", "info", "last/data.pkl")]
    mg904 = only(report, "MG904")
    assert mg904.message == (
        "torch.load(weights_only=True) cannot load this file, even with add_safe_globals: "
        "lightning.fabric.utilities.data.AttributeDict is filled item by item with SETITEM(S), "
        "which it allows only on dict, OrderedDict and Counter"
    )
    assert "AttributeDict" in (weights_only_load(path, []) or "")
    assert "Can only SETITEM" in (weights_only_load(path, [AttributeDict]) or "")
    graph = load(str(path), Policy())
    assert graph.tensors.keys() == tiny_model().state_dict().keys()


def test_pathlib_and_datetime_values(tmp_path: Path):
    when = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc)
    obj = {
        "state_dict": tiny_model().state_dict(),
        "saved_at": when,
        "trained_for": datetime.timedelta(hours=3),
        "day": datetime.date(2024, 5, 1),
        "out_dir": pathlib.PosixPath("/runs/7"),
        "config_file": pathlib.PurePosixPath("conf/train.yaml"),
        "counts": collections.Counter(cat=3, dog=2),
        "torch_version": torch.__version__,  # a TorchVersion, not a str
    }
    path = save(obj, tmp_path / "model.pt")
    report = check(path)
    assert findings(report) == [("MG904", "info", "model/data.pkl")]
    mg904 = only(report, "MG904")
    assert mg904.message == (
        "torch.load(weights_only=True) rejects 7 globals this pickle uses: datetime.date, "
        "datetime.datetime, datetime.timedelta, datetime.timezone, pathlib.PosixPath, "
        "pathlib.PurePosixPath, torch.torch_version.TorchVersion"
    )
    assert weights_only_load(path, []) is not None
    assert weights_only_load(path, safe_globals_of(mg904.fix)) is None


def test_numpy_values_name_the_dtype_classes_torch_checks(tmp_path: Path):
    obj = {
        "state_dict": tiny_model().state_dict(),
        "mean": np.zeros(3, dtype=np.float32),
        "best": np.float64(0.25),
    }
    path = save(obj, tmp_path / "model.pt")
    mg904 = only(check(path), "MG904")
    assert mg904.message == (
        "torch.load(weights_only=True) rejects 6 globals this pickle uses: "
        "numpy._core.multiarray._reconstruct, numpy._core.multiarray.scalar, numpy.dtype, "
        "numpy.dtypes.Float32DType, numpy.dtypes.Float64DType, numpy.ndarray"
    )
    without_classes = [g for g in safe_globals_of(mg904.fix) if "DType" not in repr(g)]
    assert "numpy.dtypes" in (weights_only_load(path, without_classes) or "")
    assert weights_only_load(path, safe_globals_of(mg904.fix)) is None


def test_defaultdict_and_deque_cannot_be_weights_only_loaded(tmp_path: Path):
    obj = {
        "state_dict": tiny_model().state_dict(),
        "history": collections.defaultdict(list, {"loss": [0.5, 0.25]}),
        "recent": collections.deque([0.5, 0.25], maxlen=10),
    }
    path = save(obj, tmp_path / "model.pt")
    report = check(path)
    assert findings(report) == [("MG904", "info", "model/data.pkl")]
    assert only(report, "MG904").message == (
        "torch.load(weights_only=True) cannot load this file, even with add_safe_globals: "
        "collections.defaultdict is filled item by item with SETITEM(S), which it allows only "
        "on dict, OrderedDict and Counter; collections.deque is filled item by item with "
        "APPEND(S), which it allows only on list"
    )
    allowed = [collections.defaultdict, collections.deque, list]
    assert "Can only" in (weights_only_load(path, allowed) or "")


def test_whole_module_lists_the_layer_classes_torch_needs(tmp_path: Path):
    path = tmp_path / "whole.pt"
    torch.save(tiny_model().eval(), str(path))
    report = check(path)
    assert findings(report) == [("MG904", "info", "whole/data.pkl")]
    fix = only(report, "MG904").fix
    assert "torch.nn.modules.container.Sequential" in fix
    assert weights_only_load(path, []) is not None
    assert weights_only_load(path, safe_globals_of(fix)) is None


def test_a_plain_state_dict_has_no_mg904(tmp_path: Path):
    path = save(tiny_model().state_dict(), tmp_path / "model.pt")
    assert findings(check(path)) == []
    assert weights_only_load(path, []) is None


def test_torch_default_allow_list_matches_torch() -> None:
    from torch._weights_only_unpickler import _get_allowed_globals

    allowed = set(_get_allowed_globals())
    names = allowed | set(pickles._ALLOWED) | {
        "torch.float", "torch.UntypedStorage", "torch.cuda.QInt8Storage",
        "torch.sparse.BoolTensor", "torch.nn.modules.linear.Linear", "os.system",
    }  # fmt: skip
    wrong = sorted(n for n in names if pickles.torch_default_allows(n) != (n in allowed))
    assert wrong == []


def test_numpy_dtype_class_names_are_numpys() -> None:
    for name, short in pickles._NUMPY_DTYPE_CLASSES.items():
        assert type(np.dtype(name)).__name__ == f"{short}DType"


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw  # BINUNICODE


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def test_inert_classes_stay_inert_under_a_hostile_state() -> None:
    """An allowed class is rebuilt as a stand-in: state that would patch a real class patches
    nothing, and a payload passed to an inert class is still MG901."""
    state = b"N}" + _text("__init__") + _text("patched") + b"s\x86"  # (None, {...}) slot state
    data = b"\x80\x02" + _global("argparse", "Namespace") + b")\x81" + state + b"b."
    scanned = pickles.scan(data, "pickle", Policy())
    assert scanned.issues == []
    rebuilt = pickles.load_inert(data, Policy(), class_stubs=False)
    assert isinstance(rebuilt, pickles.Stub) and rebuilt.qualname == "argparse.Namespace"
    assert argparse.Namespace.__init__ is not getattr(rebuilt, "__init__", None)
    assert "patched" not in repr(vars(argparse.Namespace))
    factory = _global("os", "system")
    data = b"\x80\x02" + _global("collections", "defaultdict") + factory + b"\x85R."
    issues = pickles.scan(data, "pickle", Policy()).issues
    assert [(i.global_name, i.usage) for i in issues] == [("os.system", "ref")]


# ---------------------------------------------------------------------------------------------
# MG901 fixes name pickle.allow
# ---------------------------------------------------------------------------------------------


def test_every_mg901_fix_names_pickle_allow(tmp_path: Path):
    class Custom:
        pass

    Custom.__module__, Custom.__qualname__ = "mypackage.extras", "Custom"
    sys.modules["mypackage"] = types.ModuleType("mypackage")
    sys.modules["mypackage.extras"] = types.ModuleType("mypackage.extras")
    sys.modules["mypackage.extras"].Custom = Custom  # type: ignore[attr-defined]
    try:
        path = save({"state_dict": tiny_model().state_dict(), "extra": Custom()}, tmp_path / "m.pt")
    finally:
        del sys.modules["mypackage.extras"], sys.modules["mypackage"]
    report = check(path)
    assert findings(report) == [("MG901", "error", "m/data.pkl")]
    fix = only(report, "MG901").fix
    assert fix.endswith('allow it in modelgate.yaml: pickle: {allow: ["mypackage.extras.Custom"]}')
    allowed = check(path, {"pickle": {"allow": ["mypackage.extras.Custom"]}})
    assert findings(allowed) == [("MG904", "info", "m/data.pkl")]
    assert only(allowed, "MG904").message.endswith("uses: mypackage.extras.Custom")


# ---------------------------------------------------------------------------------------------
# Hugging Face Trainer checkpoint folder: training state, not "not a model"
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trainer_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("run") / "checkpoint-500"
    folder.mkdir()
    model = tiny_model()
    optimizer, scheduler = trained(model)
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    save(optimizer.state_dict(), folder / "optimizer.pt")
    save(scheduler.state_dict(), folder / "scheduler.pt")
    rng = {  # Trainer._save_rng_state
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    save(rng, folder / "rng_state.pth")
    save(TrainingArguments(output_dir="out"), folder / "training_args.bin")
    state = {"global_step": 500, "epoch": 1.0, "log_history": [], "best_metric": None}
    (folder / "trainer_state.json").write_text(json.dumps(state))
    (folder / "config.json").write_text(json.dumps({"model_type": "tiny"}))
    return folder


@pytest.fixture(autouse=True)
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks each model in this process: worker processes are tested elsewhere and cost seconds."""
    from modelgate import parallel

    def check_all(paths: list[str], config: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [engine.check_file(p, config) for p in paths]

    monkeypatch.setattr(parallel, "check_all", check_all)


def run_folder(folder: Path, doc: dict[str, Any] | None = None) -> Any:
    found = discover.discover([str(folder)])
    return driver.run(found.files, cfg.from_dict(doc or {}), jobs=1, found=found)


def test_trainer_checkpoint_folder(trainer_folder: Path):
    report = run_folder(trainer_folder)
    by_name = {Path(m.path).name: m for m in report.models}
    assert sorted(by_name) == [
        "model.safetensors", "optimizer.pt", "rng_state.pth", "scheduler.pt", "training_args.bin"
    ]  # fmt: skip
    assert {n: m.format for n, m in by_name.items()} == {
        "model.safetensors": "safetensors",
        "optimizer.pt": "training_state",
        "scheduler.pt": "training_state",
        "rng_state.pth": "training_state",
        "training_args.bin": "training_state",
    }
    assert findings(by_name["model.safetensors"]) == []
    assert findings(by_name["optimizer.pt"]) == []
    assert findings(by_name["scheduler.pt"]) == []
    assert findings(by_name["rng_state.pth"]) == [("MG904", "info", "rng_state/data.pkl")]
    # the Trainer's settings and their enums are inert values (issue 12): what torch's own
    # weights_only load of it needs is MG904's, and nothing fails the gate
    assert findings(by_name["training_args.bin"]) == [("MG904", "info", "training_args/data.pkl")]
    assert only(by_name["training_args.bin"], "MG904").message == (
        "torch.load(weights_only=True) rejects 3 globals this pickle uses: "
        "transformers.trainer_utils.IntervalStrategy, transformers.trainer_utils.SchedulerType, "
        "transformers.training_args.TrainingArguments"
    )
    n_params = len(tiny_model().state_dict()) - 3  # BatchNorm buffers have no optimizer state
    assert by_name["optimizer.pt"].notes == [
        f"training state, not a model: optimizer state: {n_params} parameter states, "
        "1 param group; " + by_name["optimizer.pt"].notes[0].split("param group; ")[1]
    ]
    assert (
        by_name["rng_state.pth"]
        .notes[0]
        .startswith("training state, not a model: RNG state (cpu, numpy, python); 1 tensor")
    )
    assert by_name["training_args.bin"].notes[-1] == (
        "training state, not a model: Trainer arguments "
        "(transformers.training_args.TrainingArguments); 0 tensors (0.0 MB), scanned for unsafe "
        "pickles; model rules do not apply"
    )
    assert report.notes[0] == "scanned 5 files: 1 model, 4 training-state files"


def test_rng_state_mg904_fix_loads_with_torch(trainer_folder: Path):
    path = trainer_folder / "rng_state.pth"
    mg904 = only(check(path), "MG904")
    assert mg904.message == (
        "torch.load(weights_only=True) rejects 4 globals this pickle uses: "
        "numpy._core.multiarray._reconstruct, numpy.dtype, numpy.dtypes.UInt32DType, "
        "numpy.ndarray"
    )
    assert weights_only_load(path, []) is not None
    assert weights_only_load(path, safe_globals_of(mg904.fix)) is None


def test_training_args_allowed_is_still_training_state(trainer_folder: Path):
    allow = {"pickle": {"allow": ["transformers.training_args.*", "transformers.trainer_utils.*"]}}
    report = check(trainer_folder / "training_args.bin", allow)
    assert report.format == "training_state"
    assert findings(report) == [("MG904", "info", "training_args/data.pkl")]


# ---------------------------------------------------------------------------------------------
# sharded checkpoints are one model
# ---------------------------------------------------------------------------------------------


def lm_state_dict() -> dict[str, Any]:
    """A small language model: embedding, two blocks, an untied head."""
    torch.manual_seed(0)
    return {
        "model.embed_tokens.weight": torch.randn(64, 32),
        "model.layers.0.mlp.weight": torch.randn(32, 32),
        "model.layers.0.mlp.bias": torch.randn(32),
        "model.layers.1.mlp.weight": torch.randn(32, 32),
        "model.layers.1.mlp.bias": torch.randn(32),
        "lm_head.weight": torch.randn(64, 32),
    }


_SHARD_OF = {
    "model.embed_tokens.weight": 1, "model.layers.0.mlp.weight": 1, "model.layers.0.mlp.bias": 1,
    "model.layers.1.mlp.weight": 2, "model.layers.1.mlp.bias": 2, "lm_head.weight": 2,
}  # fmt: skip
MG001_SMALL = {"rules": {"MG001": {"min_parameters": 1000}}}


def write_sharded(folder: Path, kind: str) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(exist_ok=True)
    tensors = lm_state_dict()
    stem, ext = ("model", "safetensors") if kind == "safetensors" else ("pytorch_model", "bin")
    weight_map = {}
    for number in (1, 2):
        name = f"{stem}-0000{number}-of-00002.{ext}"
        part = {k: v for k, v in tensors.items() if _SHARD_OF[k] == number}
        if kind == "safetensors":
            save_file(part, str(folder / name), metadata={"format": "pt"})
        else:
            torch.save(part, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * 4 for t in tensors.values())
    index = folder / f"{stem}.{ext}.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (folder / "config.json").write_text("{}")
    return index


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_sharded_checkpoint_is_one_model(tmp_path: Path, kind: str):
    index = write_sharded(tmp_path / kind, kind)
    report = run_folder(index.parent, MG001_SMALL)
    (model,) = report.models
    assert Path(model.path).name == index.name
    assert model.format == (
        "sharded_safetensors" if kind == "safetensors" else "sharded_state_dict"
    )
    assert findings(model) == []  # lm_head is a third of the model, not two thirds of a shard
    total = sum(t.numel() for t in lm_state_dict().values())
    assert model.metrics["parameters"] == total
    head = {row["module"]: row for row in model.metrics["largest_layers"]}["lm_head"]
    assert head["share"] == round(64 * 32 * 4 / (total * 4), 4)
    shards = sorted(p.name for p in index.parent.glob("*-of-00002.*"))
    assert model.notes == [
        f"sharded checkpoint: 2 shards ({', '.join(shards)}) checked as one model"
    ]
    assert report.notes == [
        f"scanned 3 files: 1 model, 2 skipped: {', '.join(shards)} (shard of {index.name}, "
        "checked with it)"
    ]
    # one shard on its own is two thirds lm_head: what a per-shard check got wrong
    alone = check(index.parent / shards[1], MG001_SMALL)
    assert findings(alone) == [("MG001", "error", None)]


def test_a_shard_named_alone_is_checked_as_its_model(tmp_path: Path):
    index = write_sharded(tmp_path / "lm", "safetensors")
    shard = index.parent / "model-00002-of-00002.safetensors"
    found = discover.discover([str(shard)])
    assert found.files == [str(index)]
    assert found.notes == [
        f"{shard} is a shard of {index}: checked as that model, all its shards together"
    ]
    report = driver.run(found.files, cfg.from_dict(MG001_SMALL), jobs=1, found=found)
    assert [findings(m) for m in report.models] == [[]]
    assert report.notes == found.notes


def test_sharded_index_that_lies_is_mg902(tmp_path: Path):
    index = write_sharded(tmp_path / "lm", "safetensors")
    doc = json.loads(index.read_text())
    doc["weight_map"]["lm_head.weight"] = "model-00001-of-00002.safetensors"
    index.write_text(json.dumps(doc))
    report = check(index)
    assert findings(report) == [("MG902", "error", "model-00001-of-00002.safetensors")]
    assert only(report, "MG902").message == (
        "the index maps tensor 'lm_head.weight' to model-00001-of-00002.safetensors, but it is "
        "in model-00002-of-00002.safetensors"
    )
    doc["weight_map"]["lm_head.weight"] = "../elsewhere.safetensors"
    index.write_text(json.dumps(doc))
    assert only(check(index), "MG902").message == (
        "shard index maps tensor 'lm_head.weight' to '../elsewhere.safetensors', which is not a "
        "file name beside the index"
    )


def test_unsafe_bin_shard_is_mg901_on_that_shard(tmp_path: Path):
    index = write_sharded(tmp_path / "lm", "bin")
    shard = index.parent / "pytorch_model-00002-of-00002.bin"
    part = {k: v for k, v in lm_state_dict().items() if _SHARD_OF[k] == 2}
    save({**part, "when": datetime.datetime(2024, 1, 1), "third": fractions.Fraction(1, 3)}, shard)
    report = check(index)
    member = "pytorch_model-00002-of-00002.bin!pytorch_model-00002-of-00002/data.pkl"
    assert findings(report) == [("MG901", "error", member)]
    assert only(report, "MG901").message == (f"{member}: calls fractions.Fraction while loading")
    assert report.notes[0] == (
        "pytorch_model-00002-of-00002.bin: data.pkl was not read: its pickle is unsafe"
    )


def test_a_missing_shard_does_not_hide_an_unsafe_one(tmp_path: Path):
    index = write_sharded(tmp_path / "lm", "bin")
    (index.parent / "pytorch_model-00001-of-00002.bin").unlink()
    shard = index.parent / "pytorch_model-00002-of-00002.bin"
    save({"third": fractions.Fraction(1, 3)}, shard)
    report = check(index)
    assert findings(report) == [
        (
            "MG901",
            "error",
            "pytorch_model-00002-of-00002.bin!pytorch_model-00002-of-00002/data.pkl",
        ),
        ("MG902", "error", "pytorch_model-00001-of-00002.bin"),
    ]
    assert only(report, "MG902").message == (
        "shard pytorch_model-00001-of-00002.bin: missing, although the index lists it"
    )


# ---------------------------------------------------------------------------------------------
# ONNX external data and special files
# ---------------------------------------------------------------------------------------------


def test_onnx_external_data_is_part_of_its_model(tmp_path: Path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((16, 16), dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [weight],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder = tmp_path / "exported"
    folder.mkdir()
    onnx.save_model(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    torch.save(tiny_model().state_dict(), str(folder / "extra.pt"))
    found = discover.discover([str(folder)])
    assert found.files == [str(folder / "extra.pt"), str(folder / "model.onnx")]
    assert found.skipped == {str(folder / "weights.bin"): "ONNX external data of model.onnx"}
    report = driver.run(found.files, cfg.from_dict({}), jobs=1, found=found)
    assert [Path(m.path).name for m in report.models] == ["extra.pt", "model.onnx"]
    assert report.notes[0] == (
        "scanned 3 files: 2 models, 1 skipped: weights.bin (ONNX external data of model.onnx)"
    )


def test_a_model_named_as_external_data_is_still_checked(tmp_path: Path):
    """A .onnx cannot hide a pickle from a folder scan by naming it as its external data."""
    (tmp_path / "model.onnx").write_bytes(b"\x0a\x08location\x12\x07evil.pt" + b"\0" * 20)
    save({"x": TrainingArguments()}, tmp_path / "evil.pt")
    found = discover.discover([str(tmp_path)])
    assert str(tmp_path / "evil.pt") in found.files
    assert found.skipped == {}


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError("blocked on a special file")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_refused_without_opening_it(tmp_path: Path):
    fifo = tmp_path / "model.bin"
    os.mkfifo(fifo)
    os.mkfifo(tmp_path / "graph.onnx")  # discovery reads .onnx files for external data
    with deadline(20):
        found = discover.discover([str(tmp_path)])
        assert found.files == [str(tmp_path / "graph.onnx"), str(fifo)]
        report = check(fifo)
        mg = engine.check_file(str(Path("/dev/null")), cfg.from_dict({}))
    assert findings(report) == [("MG902", "error", None)]
    assert only(report, "MG902").message == (
        "is a FIFO (named pipe), not a model file: refused without opening it"
    )
    assert only(mg, "MG902").message == (
        "is a character device, not a model file: refused without opening it"
    )


def test_action_globs_skip_shards_and_external_data_as_a_walk_does(tmp_path: Path):
    """The Action's `paths: models/**` matches every file by glob; shards stand for their
    index and ONNX external data is part of its model, as in a folder scan."""
    from modelgate import action

    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    (tmp_path / "models").mkdir()
    write_sharded(tmp_path / "models" / "lm", "safetensors")
    weight = numpy_helper.from_array(np.ones((16, 16), dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [weight],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (tmp_path / "models" / "cnn").mkdir()
    onnx.save_model(model, str(tmp_path / "models" / "cnn" / "model.onnx"),
                    save_as_external_data=True, location="w.bin", size_threshold=0)  # fmt: skip
    selected, unmatched = action.select(["models/**"], str(tmp_path))
    assert (selected, unmatched) == (
        ["models/cnn/model.onnx", "models/lm/model.safetensors.index.json"],
        [],
    )
    # a glob on the files themselves gives the same models
    selected, _ = action.select(["models/**/*.*"], str(tmp_path))
    assert selected == ["models/cnn/model.onnx", "models/lm/model.safetensors.index.json"]
