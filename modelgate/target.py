"""What a deployment-target module declares, and the registry that checks and holds them.

A target is a plain module in ``targets/`` (installed as ``modelgate.targets``), registered
explicitly in ``targets/__init__.py`` as rules are in ``rules/__init__.py``. It owns all that is
particular to its runtime; the engine, the pipeline, the rules and the reporters read it
through :class:`Target` and name no target themselves::

    NAME = "coreml"                     # --target / --convert value, config key, result key
    LABEL = "Core ML"                   # in messages: "will not convert to Core ML"
    EXTRA = "coreml"                    # pip install 'modelgate-lint[coreml]'
    REQUIRES = ("torch", "coremltools") # packages a conversion needs (checked before work)
    CONVERSION = "Core ML conversion"   # what converting to it is called
    CONVERTING = "converting to Core ML"  # the stage its step reports while converting
    def op_verdict(name, fmt, dialect): ...   # MG003: why an op will not convert, or None
                                        # (not needed with PREDICTS = False: no static table,
                                        # or with OP_TABLE = "x_ops.json": an observed one)
    def step(emit, job, model, samples, reference): ...  # in the child: convert and measure

Optional declarations, with their defaults, are the fields of :class:`Target` below.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

_NAME = re.compile(r"^[a-z][a-z0-9_]*(-[a-z0-9_]+)*$")  # "coreml", "ort-mobile"
_REQUIRED = ("NAME", "LABEL", "EXTRA", "REQUIRES", "CONVERSION", "CONVERTING")
FAIL_KINDS = ("error", "timeout", "memory", "crash")


class TargetError(Exception):
    pass


def _default_fixes(label: str) -> dict[str, str]:
    return {
        "error": f"rewrite what the {label} toolchain names in its message, or report it",
        "timeout": "raise the time limit (timeout: / --timeout, isolation.timeout)",
        "memory": "raise isolation.memory_mb, or convert on a machine with more memory",
        "crash": f"the {label} toolchain crashed: report it with the model",
    }


@dataclass(frozen=True, eq=False)  # one object per registered target: compared by identity
class Target:
    """One registered target, its declarations read once (missing optional ones defaulted)."""

    module: ModuleType
    name: str
    label: str
    extra: str
    requires: tuple[str, ...]
    conversion: str
    converting: str
    # checked by MG003 when the config names no targets (targets added later default to off,
    # so that upgrading modelgate does not fail models that passed)
    default: bool = False
    # MG003's fix for an op it cannot take
    op_fix: str = "rewrite it with ops the converter supports"
    # MG003 can judge its ops statically (op_verdict); else only its conversion tells
    predicts: bool = True
    # the op table its module ships, observed on torch's samples (tools/gen_target_ops.py):
    # with it, op_verdict, op_outside and kernel_ops read the table
    op_table: str | None = None
    # the rule that reports its failed conversions (else MG107 conversion-failed)
    failure_rule: str | None = None
    failure_fixes: Mapping[str, str] = field(default_factory=dict)
    # stages after its conversion worked (a failure there is not the converter's, for MG003)
    later_stages: frozenset[str] = frozenset()
    # a failure's label by the stage it happened at (default: the conversion)
    stage_labels: Mapping[str, str] = field(default_factory=dict)
    # its converter needs fixed input shapes (MG005 applies)
    fixed_shapes: bool = False
    # compression presets it offers, by name: objects with ``name`` and ``about``
    presets: Mapping[str, Any] = field(default_factory=dict)
    # MG104 / the report: what its drift is of
    drift_label: str = ""
    drift_of: str = ""
    # the runtime on this machine that runs what it made; when set, it times the latency
    runtime: str | None = None
    # file formats it checks as given (not converted): {"onnx": "the ONNX file"}
    file_formats: Mapping[str, str] = field(default_factory=dict)
    file_check: str = ""  # what that check is called ("ONNX Runtime session of the ONNX file")
    file_fixes: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<target {self.name} ({self.module.__name__})>"

    # -- hooks (module functions; defaults when a module leaves one out) ----------------------
    def refuses(self, fmt: str) -> str | None:
        """Why it cannot take a model of file format ``fmt`` at all, or None."""
        hook = getattr(self.module, "refuses", None)
        return hook(fmt) if hook else None

    def op_verdict(self, name: str, fmt: str, dialect: str | None) -> Any:
        """MG003's verdict on one op (an object with ``status`` and ``reason``), or None."""
        hook = getattr(self.module, "op_verdict", None)
        if hook is None and self.op_table:
            return self.observed().verdict(name)
        return hook(name, fmt, dialect) if hook else None

    def op_outside(self, op: Any, graph: Any) -> str | None:
        """MG003: why its op table does not speak for this use of ``op`` (a dtype its
        observations never had), or None."""
        return self.observed().outside(op, graph) if self.op_table else None

    def kernel_ops(self, kernel: str) -> list[str]:
        """MG108: the graph ops (``OpOverload.name()``) that made its program need ``kernel``
        on the samples, when the runtime names the kernel otherwise than the graph names the
        op (LiteRT's ``STABLEHLO_SORT`` for ``aten::topk``)."""
        return self.observed().producing(kernel) if self.op_table else []

    def observed(self) -> Any:
        """Its observed op table (:class:`modelgate.opsupport.Observed`)."""
        from modelgate import opsupport

        package = self.module.__name__.rpartition(".")[0] or self.module.__name__
        return opsupport.observed(package, str(self.op_table), self.runtime or self.label)

    def file_issues(self, graph: Any) -> tuple[list[Any], str | None]:
        """MG003 on a file it checks as given: (issues, a note or None)."""
        hook = getattr(self.module, "file_issues", None)
        return hook(graph) if hook else ([], None)

    def notes(self, fmt: str, result: Mapping[str, Any]) -> list[str]:
        """What its conversion rule says beside a finding (onnx.checker's verdict, ...)."""
        hook = getattr(self.module, "notes", None)
        return list(hook(fmt, result)) if hook else []

    def summary(self, result: Mapping[str, Any]) -> str | None:
        """Its report section: one line on a result that converted ("iOS16, 28 ops")."""
        hook = getattr(self.module, "summary", None)
        return hook(result) if hook else None

    def modules(self, job: Any) -> list[str]:
        """What its step imports, preloaded once per worker."""
        hook = getattr(self.module, "modules", None)
        return list(hook(job)) if hook else []

    def warm(self) -> None:
        """One-time setup paid once per worker before its steps fork from it (ExecuTorch's
        XNNPACK patterns); a failure here is left for the step to report."""
        hook = getattr(self.module, "warm", None)
        if hook is not None:
            with warnings.catch_warnings(), contextlib.suppress(Exception):
                warnings.simplefilter("ignore")  # the toolchain's deprecations, not the model's
                hook()  # a failure: the step runs the same code and says what went wrong

    def job_options(self, settings: Any) -> dict[str, Any]:
        """Options of its step's job from the check settings (a deployment target, ...)."""
        hook = getattr(self.module, "job_options", None)
        return dict(hook(settings)) if hook else {}

    @property
    def step(self) -> Callable[..., None]:
        return self.module.step

    @property
    def file_step(self) -> Callable[..., None] | None:
        return getattr(self.module, "file_step", None)

    @property
    def install(self) -> str:
        return f"pip install 'modelgate-lint[{self.extra}]'"

    def settings_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of its config section (the key is its NAME), or None."""
        hook = getattr(self.module, "settings_schema", None)
        return hook() if hook else None

    def parse_settings(self, doc: Mapping[str, Any] | None) -> Any:
        hook = getattr(self.module, "parse_settings", None)
        return hook(doc or {}) if hook else None


def _read(module: ModuleType) -> Target:
    where = module.__name__
    for key in _REQUIRED:
        if not getattr(module, key, None):
            raise TargetError(f"{where}: declares no {key}")
    name = module.NAME
    if not isinstance(name, str) or not _NAME.match(name):
        raise TargetError(
            f"{where}: NAME must be lower-case letters, digits, _ and inner -, got {name!r}"
        )
    predicts = bool(getattr(module, "PREDICTS", True))
    op_table = getattr(module, "OP_TABLE", None)
    for hook in ("op_verdict", "step") if predicts and not op_table else ("step",):
        if not callable(getattr(module, hook, None)):
            raise TargetError(f"{where}: no {hook}()")
    label = module.LABEL
    fixes = {**_default_fixes(label), **getattr(module, "FAILURE_FIXES", {})}
    file_formats = dict(getattr(module, "FILE_FORMATS", {}))
    if file_formats and not callable(getattr(module, "file_step", None)):
        raise TargetError(f"{where}: FILE_FORMATS without file_step()")
    return Target(
        module=module,
        name=name,
        label=label,
        extra=module.EXTRA,
        requires=tuple(module.REQUIRES),
        conversion=module.CONVERSION,
        converting=module.CONVERTING,
        default=bool(getattr(module, "DEFAULT", False)),
        op_fix=getattr(module, "OP_FIX", Target.op_fix),
        predicts=predicts,
        op_table=op_table,
        failure_rule=getattr(module, "FAILURE_RULE", None),
        failure_fixes=fixes,
        later_stages=frozenset(getattr(module, "LATER_STAGES", ())),
        stage_labels=dict(getattr(module, "STAGE_LABELS", {})),
        fixed_shapes=bool(getattr(module, "FIXED_SHAPES", False)),
        presets=dict(getattr(module, "PRESETS", {})),
        drift_label=getattr(module, "DRIFT_LABEL", "") or f"the {module.CONVERSION}",
        drift_of=getattr(module, "DRIFT_OF", "") or module.CONVERSION,
        runtime=getattr(module, "RUNTIME", None),
        file_formats=file_formats,
        file_check=getattr(module, "FILE_CHECK", "") or f"{label} check of the file",
        file_fixes={**fixes, **getattr(module, "FILE_FIXES", {})},
    )


class TargetRegistry:
    """Target modules by name, in registration order (the order of report rows and steps).
    Refuses duplicate names and presets two targets both claim."""

    def __init__(self, modules: Iterable[ModuleType]) -> None:
        self._targets: dict[str, Target] = {}
        self._added: list[str] = []  # registered after start-up: workers import these too
        for module in modules:
            self._add(module)

    def _add(self, module: ModuleType) -> Target:
        target = _read(module)
        if target.name in self._targets:
            raise TargetError(f"duplicate target {target.name}: {module.__name__}")
        for preset in target.presets:
            owner = self.preset_owner(preset)
            if owner is not None:
                raise TargetError(f"preset {preset} of {target.name} is {owner.name}'s already")
        self._targets[target.name] = target
        return target

    def register(self, module: ModuleType) -> Target:
        """Add a target at run time (a plugin, a test's toy); worker processes import it by
        its module name (:meth:`added`), so it must be importable there."""
        target = self._add(module)
        self._added.append(module.__name__)
        return target

    def unregister(self, name: str) -> None:
        module = self._targets.pop(name).module
        if module.__name__ in self._added:
            self._added.remove(module.__name__)

    def added(self) -> tuple[str, ...]:
        return tuple(self._added)

    def ensure(self, names: Iterable[str]) -> None:
        """Import and register the run-time targets a parent process had (in a worker)."""
        have = {t.module.__name__ for t in self._targets.values()}
        for name in names:
            if name not in have:
                self.register(importlib.import_module(name))

    def __iter__(self) -> Iterator[Target]:
        return iter(self._targets.values())

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def names(self) -> tuple[str, ...]:
        return tuple(self._targets)

    def defaults(self) -> tuple[str, ...]:
        """The targets MG003 checks when the config and the command line name none."""
        return tuple(t.name for t in self if t.default)

    def get(self, name: str) -> Target:
        target = self._targets.get(name)
        if target is None:
            raise TargetError(f'unknown target "{name}" (known: {", ".join(self._targets)})')
        return target

    def find(self, name: str) -> Target | None:
        return self._targets.get(name)

    def file_formats(self) -> set[str]:
        """Formats some target checks as given (ONNX): files of them hold no torch ops."""
        return {fmt for t in self for fmt in t.file_formats}

    def refusal(self, target: Target, fmt: str) -> str | None:
        """Why ``target`` cannot take a model of format ``fmt`` (its own reason, or that the
        format is a file another target checks as given), or None; the plan, MG003 and MG106
        all say it this way."""
        if fmt in target.file_formats:
            return None
        own = target.refuses(fmt)
        if own is None and fmt in self.file_formats():
            return f"it does not take {fmt} files"
        return own

    def presets(self) -> dict[str, Any]:
        """Every compression preset, by name, in target order."""
        return {name: p for t in self for name, p in t.presets.items()}

    def preset_owner(self, preset: str) -> Target | None:
        return next((t for t in self if preset in t.presets), None)
