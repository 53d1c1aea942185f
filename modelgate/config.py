"""Configuration: ``modelgate.yaml`` or ``[tool.modelgate]`` in pyproject.toml.

One config model, validated against the JSON Schema that ships in the package
(``modelgate schema`` prints it). The schema is generated from the rule registry, so every
rule option is validated; ``tests/test_config.py`` keeps the shipped file in step.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from modelgate import limits as budget_limits
from modelgate import recipes
from modelgate.checks import settings as check_settings
from modelgate.checks.settings import CheckSettings
from modelgate.finding import SEVERITIES
from modelgate.globs import glob_match
from modelgate.limits import Limit
from modelgate.targets import REGISTRY as TARGETS

CONFIG_NAMES = ("modelgate.yaml", "modelgate.yml", ".modelgate.yaml", ".modelgate.yml")
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")
SCHEMA_FILE = "schema.json"


class ConfigError(Exception):
    """A config problem; the message names the key (exit code 2)."""


@dataclass(frozen=True)
class InputSpec:
    name: str | None
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class RuleSetting:
    enabled: bool = True
    severity: str | None = None  # None: the rule's default
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    """The validated configuration."""

    path: str | None = None
    root: str = "."
    targets: tuple[str, ...] = field(default_factory=TARGETS.defaults)
    asked_targets: tuple[str, ...] = ()  # targets the config or --target named (not defaults)
    inputs: tuple[InputSpec, ...] = ()
    rules: dict[str, RuleSetting] = field(default_factory=dict)  # by rule id
    ignore: dict[str, tuple[str, ...]] = field(default_factory=dict)  # glob -> rule ids
    pickle_allow: tuple[str, ...] = ()
    fail_on: str = "error"
    timeout: float = 300.0  # seconds one model's check may take before it is MG902
    checks: CheckSettings = field(default_factory=CheckSettings)  # convert, compress, measure
    budget: dict[str, Limit] = field(default_factory=dict)  # metric -> limit
    cache: bool = True  # reuse results of files checked before (modelgate.cache)
    cache_dir: str | None = None  # None: MODELGATE_CACHE_DIR, else .modelgate_cache here
    models: tuple[recipes.Recipe, ...] = ()  # build recipes (modelgate.recipes)
    build: bool = True  # build weights-only files into models (off with --static)
    # the path recipes match instead of a file's own: a baseline exported from git, or given
    # with --baseline, matches as the model it is the baseline of
    recipe_paths: dict[str, str] = field(default_factory=dict)

    def setting(self, rule_id: str) -> RuleSetting:
        return self.rules.get(rule_id, RuleSetting())

    def ignored(self, display_path: str) -> dict[str, set[str]]:
        """Rule ids ignored for ``display_path``, by the glob that ignores them."""
        out: dict[str, set[str]] = {}
        posix = display_path.replace(os.sep, "/")
        for glob, ids in self.ignore.items():
            if glob_match(posix, glob):
                out[glob] = set(ids)
        return out


# ---------------------------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------------------------


def build_schema() -> dict[str, Any]:
    """The config schema, generated from the rule registry and the check/budget sections."""
    from modelgate.rules import REGISTRY

    severity = {"enum": ["off", *SEVERITIES]}
    rule_props: dict[str, Any] = {}
    for module in REGISTRY:
        options = {name: opt.json_schema() for name, opt in module.OPTIONS.items()}
        entry = {
            "description": f"{module.ID} {module.NAME}",
            "oneOf": [
                severity,
                {
                    "type": "object",
                    "properties": {"severity": severity, **options},
                    "additionalProperties": False,
                },
            ],
        }
        rule_props[module.ID] = entry
        rule_props[module.NAME] = {"$ref": f"#/properties/rules/properties/{module.ID}"}
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/modelgate/modelgate/schema.json",
        "title": "modelgate configuration",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "targets": {
                "description": "converters the model must pass",
                "type": "array",
                "items": {"enum": list(TARGETS.names())},
                "uniqueItems": True,
            },
            "inputs": {
                "description": "input shapes, where the model does not record them",
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "shape": {
                            "type": "array",
                            "items": {"type": "integer", "minimum": 0},
                            "minItems": 1,
                        },
                        "dtype": {"enum": list(DTYPES)},
                    },
                    "required": ["shape"],
                    "additionalProperties": False,
                },
            },
            "rules": {
                "description": "per rule: off, a severity, or an object of severity and options",
                "type": "object",
                "properties": rule_props,
                "additionalProperties": False,
            },
            "ignore": {
                "description": "per-file ignores: glob -> rule ids or names",
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
            "pickle": {
                "type": "object",
                "properties": {
                    "allow": {
                        "description": "extra globals (module.name, glob patterns) pickles may use",
                        "type": "array",
                        "items": {"type": "string"},
                    }
                },
                "additionalProperties": False,
            },
            "fail_on": {
                "description": "lowest severity that fails the gate",
                "enum": list(SEVERITIES),
            },
            "timeout": {
                "description": "seconds one model's check may take (default 300); a model "
                "that takes longer is reported unreadable (MG902)",
                "type": "number",
                "exclusiveMinimum": 0,
            },
            "cache": {
                "description": "the result cache: a file checked before with the same "
                "settings and toolchains is not checked again (default: on, in "
                ".modelgate_cache in the current folder)",
                "type": "object",
                "properties": {
                    "enabled": {"type": "boolean", "default": True},
                    "dir": {
                        "description": "the cache folder, relative to this config file's",
                        "type": "string",
                        "minLength": 1,
                    },
                },
                "additionalProperties": False,
            },
            **recipes.SCHEMA,
            **check_settings.schema(),
            **budget_limits.schema({t.name: t.label for t in TARGETS}),
        },
    }
    return schema


def shipped_schema() -> dict[str, Any]:
    """The schema file in the package (what ``modelgate schema`` prints)."""
    text = resources.files("modelgate").joinpath(SCHEMA_FILE).read_text("utf-8")
    return json.loads(text)


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


def discover(start: str = ".") -> str | None:
    """The nearest config file from ``start`` upward, stopping at the repository root."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        for name in CONFIG_NAMES:
            candidate = folder / name
            if candidate.is_file():
                return str(candidate)
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and "[tool.modelgate" in pyproject.read_text("utf-8", "replace"):
            return str(pyproject)
        if (folder / ".git").exists():
            break
    return None


def read_document(path: str) -> dict[str, Any]:
    """The raw config mapping from a YAML file or a pyproject.toml."""
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not UTF-8 text") from None
    if path.endswith(".toml"):
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML in {path}: {exc}") from None
        return doc.get("tool", {}).get("modelgate", {})
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"invalid YAML in {path}{where}: {getattr(exc, 'problem', exc)}"
        ) from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"invalid config {path}: the top level must be a mapping")
    return doc


def load(path: str | None = None, start: str = ".") -> Config:
    """Load and validate the config at ``path`` (or the one discovered from ``start``)."""
    if path is None:
        path = discover(start)
    if path is None:
        return Config()
    doc = read_document(path)
    config = from_dict(doc, source=path)
    config.path = path
    config.root = str(Path(path).resolve().parent)
    if config.cache_dir is not None:  # relative to the config file, not to where it runs
        config.cache_dir = os.path.join(config.root, config.cache_dir)
    return config


def from_dict(doc: dict[str, Any], source: str = "config") -> Config:
    validate(doc, source)
    from modelgate.rules import REGISTRY

    rules: dict[str, RuleSetting] = {}
    for key, value in (doc.get("rules") or {}).items():
        module = REGISTRY.get(key)
        if isinstance(value, str):
            rules[module.ID] = RuleSetting(value != "off", None if value == "off" else value)
        else:
            sev = value.get("severity")
            options = {k: v for k, v in value.items() if k != "severity"}
            rules[module.ID] = RuleSetting(
                sev != "off", None if sev in (None, "off") else sev, options
            )
    ignore: dict[str, tuple[str, ...]] = {}
    for glob, keys in (doc.get("ignore") or {}).items():
        ids = []
        for key in keys:
            if key not in REGISTRY:
                raise ConfigError(f'invalid config: unknown rule "{key}" under ignore."{glob}"')
            ids.append(REGISTRY.get(key).ID)
        ignore[glob] = tuple(ids)
    inputs = tuple(
        InputSpec(i.get("name"), tuple(i["shape"]), i.get("dtype", "float32"))
        for i in doc.get("inputs") or []
    )
    return Config(
        targets=tuple(doc.get("targets", TARGETS.defaults())),
        asked_targets=tuple(doc.get("targets", ())),
        inputs=inputs,
        rules=rules,
        ignore=ignore,
        pickle_allow=tuple((doc.get("pickle") or {}).get("allow", ())),
        fail_on=doc.get("fail_on", Config.fail_on),
        timeout=float(doc.get("timeout", Config.timeout)),
        checks=check_settings.parse(doc),
        budget=budget_limits.parse(doc.get("budget")),
        cache=bool((doc.get("cache") or {}).get("enabled", True)),
        cache_dir=(doc.get("cache") or {}).get("dir"),
        models=recipes.parse(doc.get("models")),
    )


def validate(doc: dict[str, Any], source: str = "config") -> None:
    """Raise ConfigError naming the first offending key."""
    import jsonschema

    # targets registered at run time (plugins, tests) are in the built schema only
    schema = build_schema() if TARGETS.added() else shipped_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: (len(e.absolute_path), str(e.path)))
    if errors:
        raise ConfigError(f"invalid config {source}: {_describe(errors[0], doc)}")


def _describe(error: Any, doc: dict[str, Any]) -> str:
    from modelgate.rules import REGISTRY

    path = list(error.absolute_path)
    dotted = ".".join(str(p) for p in path) or "(top level)"
    if error.validator == "oneOf" and len(path) == 2 and path[0] == "rules":
        # a rule entry: explain against the object form, which is what carries options
        value = error.instance
        module = REGISTRY.get(str(path[1]))
        if isinstance(value, dict):
            for key in value:
                if key != "severity" and key not in module.OPTIONS:
                    known = ", ".join(module.OPTIONS) or "none"
                    return f'unknown option "{key}" for rule "{module.ID}" (options: {known})'
            for sub in sorted(error.context, key=lambda e: len(e.absolute_path), reverse=True):
                if sub.absolute_path:
                    key = list(sub.absolute_path)[-1]
                    return f'option "{key}" of rule "{module.ID}": {sub.message}'
        return (
            f"rules.{path[1]}: expected one of off, error, warning, info, or a mapping of "
            f"severity and options, got {value!r}"
        )
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        name = extra[0] if extra else "?"
        if path == ["rules"]:
            return f'unknown rule "{name}" under rules (known: {", ".join(REGISTRY.ids())})'
        if path == ["budget", budget_limits.TARGETS_KEY]:
            known = ", ".join(TARGETS.names())
            return f'unknown target "{name}" under budget.targets (known: {known})'
        if path[:2] == ["budget", budget_limits.TARGETS_KEY] and len(path) == 3:
            own = ", ".join(budget_limits.PER_TARGET)
            return (
                f'unknown figure "{name}" for target "{path[2]}" under budget.targets '
                f"(a target's own figures: {own})"
            )
        where = f" under {dotted}" if path else ""
        known = ", ".join(error.schema.get("properties", {}))
        return f'unknown key "{name}"{where} (known: {known})'
    return f"{dotted}: {error.message}"


def parse_input_shape(text: str) -> InputSpec:
    """ "x=1x3x224x224", "1x3x224x224" or "x=1,3,224,224:float16" -> InputSpec."""
    name: str | None = None
    dtype = "float32"
    spec = text.strip()
    if "=" in spec:
        name, spec = spec.split("=", 1)
        name = name.strip() or None
    if ":" in spec:
        spec, dtype = spec.rsplit(":", 1)
        if dtype not in DTYPES:
            raise ConfigError(f"--input-shape {text}: unknown dtype {dtype!r}")
    parts = [p for p in re.split(r"[x,× ]+", spec.strip("()[] ")) if p]
    if not parts or not all(p.isdigit() for p in parts):
        raise ConfigError(f"--input-shape {text}: expected NAME=1x3x224x224")
    return InputSpec(name, tuple(int(p) for p in parts), dtype)
