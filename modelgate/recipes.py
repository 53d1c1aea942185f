"""Build recipes: how a file of weights alone becomes a model that is checked like a ``.pt2``.

Most files a model repository commits hold weights without an architecture (a state dict, a
Lightning ``.ckpt``, safetensors, a Hugging Face folder). The architecture is in the
repository's own code or in ``config.json``, and every exporter needs it anyway. A recipe in the
config names it::

    models:
      - path: "checkpoints/*.pth"
        build: "models.net:build"      # module:callable in the repository -> nn.Module
        kwargs: {num_classes: 10}
        inputs: [{name: image, shape: [1, 3, 224, 224]}]

This module decides, in the parent and without importing torch, which files are built and
how (a :class:`BuildPlan`); :mod:`modelgate.checks.build` carries the plan out in a child
process. Three kinds:

- ``recipe``: the file matches a ``models:`` entry with ``build:``;
- ``huggingface``: the file is in (or is) a folder whose ``config.json`` names an
  architecture: no recipe needed (a ``models:`` entry without ``build:`` may give its inputs);
- ``pickled_module``: a whole pickled ``nn.Module`` whose classes ``pickle.allow`` lists.

The trust line: a recipe runs the repository's own code, with the trust of running its tests;
nothing from a model file runs (weights are read from safetensors, or with
``torch.load(weights_only=True)`` after the pickle scan found nothing unsafe).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

from modelgate.globs import glob_match
from modelgate.graph import ModelGraph

# formats whose file holds weights that a recipe can fill
WEIGHT_FORMATS = ("state_dict", "checkpoint", "safetensors", "sharded")
_CALLABLE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_MAX_CODE_FILES = 2000  # files of the recipe's package hashed into the cache key


@dataclass(frozen=True)
class Recipe:
    """One ``models:`` entry of the config."""

    path: str  # glob, relative to the config's folder
    build: str | None = None  # "module:callable"; None: Hugging Face or inputs only
    kwargs: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[tuple[str, tuple[int, ...], str], ...] = ()  # (name, shape, dtype)
    state_dict: str | None = None  # where the weights sit in a checkpoint (dotted); None: found
    prefix: str | None = None  # key prefix to strip ("model."); None: the one that fits

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "build": self.build,
            "kwargs": self.kwargs,
            "inputs": [list(i) for i in self.inputs],
            "state_dict": self.state_dict,
            "prefix": self.prefix,
        }


@dataclass(frozen=True)
class BuildPlan:
    """What the child builds for one file, handed to :mod:`modelgate.checks.build`."""

    kind: str  # recipe | huggingface | pickled_module
    path: str  # the file whose weights are loaded (the index of a sharded checkpoint)
    root: str  # the repository folder put first on sys.path (the config's folder)
    format: str  # the file's format as the loader read it
    recipe: Recipe | None = None
    folder: str | None = None  # a Hugging Face folder
    inputs: tuple[tuple[str, tuple[int, ...], str], ...] = ()
    state_key: str | None = None  # where the loader found the state dict ("state_dict")
    allowed: tuple[str, ...] = ()  # pickled_module: pickle.allow, the classes imported for real
    needs: tuple[str, ...] = ()  # globals torch.load(weights_only=True) rejects by default

    @property
    def label(self) -> str:
        """How the report names what built the model."""
        if self.kind == "recipe" and self.recipe is not None:
            return f"recipe {self.recipe.build}"
        if self.kind == "huggingface":
            return "transformers from config.json"
        return "its allowed classes (pickle.allow)"


SCHEMA: dict[str, Any] = {
    "models": {
        "description": "build recipes: how files of weights alone (state dicts, checkpoints, "
        "safetensors) become a model checked like a .pt2; matched by glob, first match wins",
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "path": {
                    "description": "glob of the files, relative to this config file's folder",
                    "type": "string",
                    "minLength": 1,
                },
                "build": {
                    "description": "module:callable in the repository that returns the "
                    "nn.Module (omit for a Hugging Face folder)",
                    "type": "string",
                    "pattern": _CALLABLE.pattern,
                },
                "kwargs": {"description": "keyword arguments of the callable", "type": "object"},
                "inputs": {"$ref": "#/properties/inputs"},
                "state_dict": {
                    "description": "where the state dict sits in a checkpoint, dotted "
                    "(default: found, e.g. state_dict in a Lightning checkpoint)",
                    "type": "string",
                },
                "prefix": {
                    "description": "key prefix to strip (default: the one that makes the keys "
                    "fit, e.g. model. or module.; empty string: none)",
                    "type": "string",
                },
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    }
}


def parse(doc: Any) -> tuple[Recipe, ...]:
    """The ``models:`` entries of a validated config document."""
    out = []
    for entry in doc or []:
        inputs = tuple(
            (i.get("name") or f"input_{n}", tuple(i["shape"]), i.get("dtype", "float32"))
            for n, i in enumerate(entry.get("inputs") or [])
        )
        out.append(
            Recipe(
                path=entry["path"],
                build=entry.get("build"),
                kwargs=dict(entry.get("kwargs") or {}),
                inputs=inputs,
                state_dict=entry.get("state_dict"),
                prefix=entry.get("prefix"),
            )
        )
    return tuple(out)


def match(path: str, recipes: tuple[Recipe, ...], root: str) -> Recipe | None:
    """The first recipe whose glob matches ``path`` (relative to ``root``, the config's
    folder; a bare name matches in any folder, as in ``ignore:``)."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root)).replace(os.sep, "/")
    if rel.startswith("../"):
        return None
    for recipe in recipes:
        if glob_match(rel, recipe.path) or glob_match(rel, recipe.path.rstrip("/") + "/*"):
            return recipe
    return None


def plan(graph: ModelGraph, config: Any, match_as: str | None = None) -> BuildPlan | None:
    """How ``graph``'s file is built into a model, or None when it is not (it has a graph of
    its own, it is unsafe or unreadable, or nothing says how). ``match_as``: the path the
    recipes are matched against (a baseline exported from git matches as its model)."""
    if graph.unreadable is not None or graph.pickle_issues or graph.native_code:
        return None
    recipes = getattr(config, "models", ()) or ()
    root = getattr(config, "root", ".")
    recipe = match(match_as or graph.path, recipes, root)
    inputs = recipe.inputs if recipe is not None else ()
    needs = tuple((graph.metadata.get("weights_only") or {}).get("needs", ()))
    allowed = tuple(getattr(config, "pickle_allow", ()) or ())
    if graph.format == "pickled_module" and allowed:
        return BuildPlan("pickled_module", graph.path, root, graph.format, recipe, None, inputs,
                         allowed=allowed, needs=needs)  # fmt: skip
    if not graph.format.startswith(WEIGHT_FORMATS):
        return None
    state_key = graph.metadata.get("state_dict_key")
    if recipe is not None and recipe.build:
        return BuildPlan("recipe", graph.path, root, graph.format, recipe, None, inputs,
                         state_key, needs=needs)  # fmt: skip
    from modelgate.checks import hf_folder

    folder = hf_folder.hf_folder(graph.path)
    if folder is not None:
        return BuildPlan("huggingface", graph.path, root, graph.format, recipe, folder, inputs)
    return None


def fingerprint(path: str, config: Any, match_as: str | None = None) -> dict[str, Any] | None:
    """What of a build reaches the result and is not the model file: the recipe and the
    digests of the code it imports (its top-level package's Python files), or a Hugging Face
    folder's config.json. Part of the result cache's key (:mod:`modelgate.cache_key`)."""
    recipes = getattr(config, "models", ()) or ()
    root = getattr(config, "root", ".")
    recipe = match(match_as or path, recipes, root)
    out: dict[str, Any] = {}
    if recipe is not None:
        out["recipe"] = recipe.to_dict()
        if recipe.build:
            out["code"] = _code_digest(root, recipe.build.split(":", 1)[0])
    if getattr(config, "pickle_allow", ()):
        modules = {a.rsplit(".", 1)[0] for a in config.pickle_allow if "." in a}
        out["allowed_code"] = {m: _code_digest(root, m) for m in sorted(modules)}
    from modelgate.checks import hf_folder

    folder = hf_folder.hf_folder(path)
    if folder is not None:
        out["hf_config"] = _file_digest(os.path.join(folder, "config.json"))
    return out or None


def _code_digest(root: str, module: str) -> str | None:
    """SHA-256 over the Python files of ``module``'s top-level package (or module) under
    ``root``: a change to the model code is a change to the built model."""
    top = module.split(".", 1)[0].strip("*")
    if not top:
        return None
    package = os.path.join(root, top)
    files: list[str] = []
    if os.path.isdir(package):
        for folder, dirs, names in os.walk(package):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
            files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
            if len(files) > _MAX_CODE_FILES:
                break
    elif os.path.isfile(package + ".py"):
        files.append(package + ".py")
    if not files:
        return None
    digest = hashlib.sha256()
    for name in files[:_MAX_CODE_FILES]:
        digest.update(os.path.relpath(name, root).encode() + b"\0")
        digest.update((_file_digest(name) or "").encode())
    return digest.hexdigest()


def _file_digest(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
