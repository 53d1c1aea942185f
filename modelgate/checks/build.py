"""Build a model from weights and the repository's code, in a child: import, load, export.

:func:`build` carries out a :class:`~modelgate.recipes.BuildPlan` in a child process
(:mod:`modelgate.checks.isolate`: the recipe's import or ``torch.export`` may crash, hang or
poison later conversions) and writes a ``.pt2`` that the engine then checks like any other.
What the child reports becomes a :class:`~modelgate.results.BuildResult` (MG111 for keys that
do not fit, MG112 for a build that failed).

Nothing from the model file runs: safetensors are read as tensors; a torch.save file is read
with ``torch.load(weights_only=True)`` after the pickle scan found it clean, with inert
stand-ins for the harmless values (``argparse.Namespace``, ``datetime``, ...) it holds beside
the weights. Only the repository's own code runs: the recipe's callable, and for a pickled
module the classes ``pickle.allow`` lists.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import re
import sys
import tempfile
from typing import Any

from modelgate.checks import isolate
from modelgate.checks.plan import TORCH_EXPORT
from modelgate.recipes import BuildPlan
from modelgate.results import BuildResult

_TORCH_NN = re.compile(r"^torch\.nn\.(modules\.)?[\w.]+$")


def build(plan: BuildPlan, timeout: float, memory_mb: int | None) -> BuildResult:
    """Build ``plan`` into a ``.pt2`` in a fresh temporary folder (``result.folder``, which the
    caller removes). The result says what was built from what, or why nothing was."""
    folder = tempfile.mkdtemp(prefix="modelgate-build-")
    out = os.path.join(folder, "model.pt2")
    missing = isolate.preload(("torch", "torch.export", *TORCH_EXPORT))
    result = BuildResult(plan.kind, plan.label, folder=folder)
    if missing:
        result.error = f"{missing[0]} is not installed: pip install 'modelgate-lint[torch]'"
        result.stage = "importing torch"
        return result
    outcome = isolate.run(_child, (plan, out), timeout=timeout, memory_mb=memory_mb, name="build")
    done = outcome.results.get("build") or {}
    keys = outcome.results.get("keys") or {}
    result.missing = list(keys.get("missing", ()))
    result.unexpected = list(keys.get("unexpected", ()))
    result.mismatched = [tuple(m) for m in keys.get("mismatched", ())]
    result.counts = dict(keys.get("counts", {}))
    result.notes = list(done.get("notes", ())) + list(keys.get("notes", ()))
    result.inputs = list(done.get("inputs", ()))
    result.seconds = round(outcome.seconds, 2)
    if outcome.failure is not None:
        result.error = outcome.failure.reason
        result.stage = (outcome.failure.stage or "").split(": ", 1)[-1] or None
    elif done.get("ok") and os.path.isfile(out):
        result.ok = True
        result.pt2 = out
    else:
        result.error = done.get("error") or "the build reported nothing"
        result.stage = done.get("stage")
        # a folder that only looks like a Hugging Face model, unless a recipe names it
        result.refused = bool(done.get("refused")) and plan.recipe is None
    return result


# ---------------------------------------------------------------------------------------------
# the child
# ---------------------------------------------------------------------------------------------


class BuildError(Exception):
    """A build that cannot go on, with the reason a user acts on."""


def _child(emit: Any, plan: BuildPlan, out: str) -> None:
    """The step in the child: every failure is reported as the build's, at its stage."""
    stages: list[str] = []

    def stage(name: str) -> None:
        stages.append(name)
        emit.stage(f"build: {name}")

    try:
        _build(emit, stage, plan, out)
    except Exception as exc:
        from modelgate.checks.errors import describe_error

        text = str(exc) if isinstance(exc, BuildError) else describe_error(exc)["error"]
        _stop(emit, stages[-1] if stages else None, text)


def _stop(emit: Any, stage: str | None, error: str) -> None:
    emit("build", {"ok": False, "stage": stage, "error": error})


def _build(emit: Any, stage: Any, plan: BuildPlan, out: str) -> None:
    import torch

    torch.manual_seed(0)
    if plan.root not in sys.path:
        sys.path.insert(0, plan.root)  # the repository's own modules, as its tests see them
    notes: list[str] = []
    if plan.kind == "huggingface":
        from modelgate.checks import hf_build, hf_folder

        stage("building the model from config.json with transformers")
        try:
            built = hf_build.build(plan.folder or "", list(plan.inputs) or None)
        except hf_folder.BuildRefused as exc:  # not built: a note, or MG112 when a recipe asked
            emit("build", {"ok": False, "stage": "reading config.json", "error": str(exc),
                           "refused": True})  # fmt: skip
            return
        stage("loading the weights")
        keys = {
            "missing": list(built.missing),
            "unexpected": list(built.unexpected),
            "mismatched": [[m] if isinstance(m, str) else list(m) for m in built.mismatched],
        }
        emit("keys", keys)
        if any(keys.values()):
            _stop(emit, "loading the weights", "the weights do not fit the architecture")
            return
        module, notes, used = built.module, list(built.notes), list(built.inputs_used)
        args = tuple(built.args)
        if built.kwargs:  # positional, as modelgate's steps call an exported program
            names = [str(i["name"]) for i in used]
            module = _positional(module, names)
            given = {**dict(zip(names, args, strict=False)), **built.kwargs}  # args lead
            args = tuple(given[n] for n in names)
    else:
        if plan.kind == "recipe":
            stage(f"calling {plan.recipe.build if plan.recipe else '?'}")
            module = _make(plan)
            stage("loading the weights")
            state = _state_dict(plan)
            keys = _fit(module, state, plan)
            emit("keys", keys)
            if keys["missing"] or keys["unexpected"] or keys["mismatched"]:
                _stop(
                    emit, "loading the weights", "the checkpoint does not fit the recipe's module"
                )
                return
        else:
            stage("loading the pickled module with its allowed classes")
            module = _pickled_module(plan)
        if not plan.inputs:
            _stop(emit, "choosing its inputs", "the recipe gives no inputs to export the model "
                  "with: add inputs: [{name: x, shape: [1, 3, 224, 224]}] to it")  # fmt: skip
            return
        args = tuple(_tensor(shape, dtype) for _, shape, dtype in plan.inputs)
        used = [{"name": n, "shape": list(s), "dtype": d} for n, s, d in plan.inputs]
    module.eval()
    stage("exporting with torch.export")
    program = torch.export.export(module, args)
    stage("saving the exported program")
    torch.export.save(program, out)
    emit("build", {"ok": True, "inputs": used, "notes": notes})


def _positional(model: Any, names: list[str]) -> Any:
    """``model`` called by keyword, wrapped so that the exported program takes its inputs by
    position under their own names (modelgate's steps call a program positionally)."""
    import torch

    if not all(n.isidentifier() for n in names):
        raise BuildError(f"input names are not identifiers: {names}")
    params = ", ".join(names)
    call = ", ".join(f"{n}={n}" for n in names)
    space: dict[str, Any] = {}
    exec(f"def forward(self, {params}):\n    return self.model({call})\n", space)

    class Positional(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.model = inner

    Positional.forward = space["forward"]
    return Positional(model)


def _tensor(shape: tuple[int, ...], dtype: str) -> Any:
    import torch

    kind = getattr(torch, dtype)
    if kind.is_floating_point:
        return torch.randn(shape, dtype=kind)
    return torch.zeros(shape, dtype=kind)


def _resolve(dotted: str, what: str) -> Any:
    """``package.module:attr.attr`` or ``package.module.Class``, imported from the repository."""
    if ":" in dotted:
        module_name, _, attr = dotted.partition(":")
    else:
        module_name, _, attr = dotted.rpartition(".")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise BuildError(f"cannot import {module_name} for {what}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BuildError(f"{module_name} has no {attr} ({what})")
        obj = getattr(obj, part)
    return obj


def _make(plan: BuildPlan) -> Any:
    import torch

    recipe = plan.recipe
    assert recipe is not None and recipe.build
    factory = _resolve(recipe.build, "the recipe")
    if not callable(factory):
        raise BuildError(f"{recipe.build} is not callable")
    module = factory(**recipe.kwargs)
    if not isinstance(module, torch.nn.Module):
        raise BuildError(f"{recipe.build} returned {type(module).__name__}, not an nn.Module")
    return module


class _Inert:
    """What a harmless non-tensor value of a checkpoint (``argparse.Namespace``,
    ``datetime``) becomes under ``torch.load(weights_only=True)``: it keeps nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _torch_load(path: str, needs: tuple[str, ...]) -> Any:
    import torch

    stand_ins = [(_Inert, name) for name in needs]
    with torch.serialization.safe_globals(stand_ins):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # a legacy (non-zip) file cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)


def _state_dict(plan: BuildPlan) -> dict[str, Any]:
    """The checkpoint's tensors by key, from wherever the weights sit in it."""
    path, fmt = plan.path, plan.format
    if fmt.startswith("sharded"):
        from modelgate.loaders.sharded import read_index

        _, shards = read_index(path)
        merged: dict[str, Any] = {}
        for shard in shards:
            merged.update(_read_file(os.path.join(os.path.dirname(path), shard), plan))
        return merged
    state = _read_file(path, plan)
    where = (plan.recipe.state_dict if plan.recipe else None) or plan.state_key
    if fmt == "checkpoint" and where:
        for part in where.split("."):
            if not isinstance(state, dict) or part not in state:
                raise BuildError(f"the checkpoint has no {where!r} entry")
            state = state[part]
    if not isinstance(state, dict):
        raise BuildError(f"the weights are a {type(state).__name__}, not a state dict")
    return state


def _read_file(path: str, plan: BuildPlan) -> Any:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    return _torch_load(path, plan.needs)


def _fit(module: Any, state: dict[str, Any], plan: BuildPlan) -> dict[str, Any]:
    """Load ``state`` into ``module`` when its keys and shapes fit; what does not fit, else."""
    import torch

    own = module.state_dict()
    state = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    given = plan.recipe.prefix if plan.recipe is not None else None
    prefix = given if given is not None else _best_prefix(list(state), set(own))
    notes = []
    if prefix:
        outside = [k for k in state if not k.startswith(prefix)]
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        notes.append(
            f"the checkpoint's keys carry the prefix {prefix!r}, stripped"
            + (f"; {len(outside)} keys outside it were left out" if outside else "")
        )
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = [
        [k, list(state[k].shape), list(own[k].shape)]
        for k in sorted(own)
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        module.load_state_dict(state, strict=True)
        dtypes = {str(v.dtype).removeprefix("torch.") for v in state.values()}
        kept = {str(v.dtype).removeprefix("torch.") for v in own.values()}
        if dtypes != kept:
            notes.append(
                f"weights stored as {', '.join(sorted(dtypes))} were loaded into the module's "
                f"{', '.join(sorted(kept))} parameters, as load_state_dict does"
            )
    return {
        "missing": missing,
        "unexpected": unexpected,
        "mismatched": mismatched,
        "counts": {"checkpoint": len(state), "module": len(own)},
        "notes": notes,
    }


def _best_prefix(keys: list[str], own: set[str]) -> str:
    """The key prefix (``model.``, ``module.``, ``net.model.``) whose removal makes the most
    keys fit the module; none when stripping nothing fits as well."""
    candidates = {""}
    for key in keys:
        parts = key.split(".")
        for depth in (1, 2):
            if len(parts) > depth:
                candidates.add(".".join(parts[:depth]) + ".")

    def fits(prefix: str) -> int:
        return sum(1 for k in keys if k.startswith(prefix) and k[len(prefix) :] in own)

    return max(sorted(candidates), key=lambda p: (fits(p), p == ""))


def _pickled_module(plan: BuildPlan) -> Any:
    """A whole pickled nn.Module, loaded with ``weights_only=True`` and exactly the classes it
    needs: those ``pickle.allow`` lists, imported from the repository, and torch.nn's own.
    Any other global it needs refuses the build."""
    import torch

    real = []
    for name in plan.needs:
        allowed = any(fnmatch.fnmatchcase(name, pattern) for pattern in plan.allowed)
        if allowed or _TORCH_NN.match(name):
            real.append((_resolve(name, "the pickled module"), name))
        else:
            raise BuildError(
                f"the pickled module needs {name}, which pickle.allow does not list; "
                "nothing was loaded"
            )
    with torch.serialization.safe_globals(real):
        module = torch.load(plan.path, map_location="cpu", weights_only=True)
    if not isinstance(module, torch.nn.Module):
        raise BuildError(f"the file holds a {type(module).__name__}, not an nn.Module")
    return module
