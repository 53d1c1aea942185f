"""What the conversion, compression and measurement checks do, from the config and the CLI.

Config keys (all optional; nothing runs unless ``convert`` or ``compress`` asks for it, or the
budget names a figure only a run of the model gives)::

    convert: [coreml, onnx]
    compress: palettize-4            # or a list; the first is the one the budget judges
    coreml: {deployment_target: iOS18, compute_precision: float16, weight_threshold: 2048,
             group_size: 16, block_size: 32}
    measure: {samples: 8, seed: 0, warmup: 2, runs: 10, threads: 1, drift: true, latency: true}
    isolation: {timeout: 600, memory_mb: 8192}

Each target's own section (``coreml:``) is declared by its module in ``targets/``. Only the
standard library here and in those declarations: the config is read before anything heavy is
imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelgate.targets import REGISTRY


@dataclass(frozen=True)
class MeasureSettings:
    samples: int = 8  # seeded synthetic inputs the drift is measured on
    seed: int = 0
    warmup: int = 2  # latency: untimed runs first
    runs: int = 10  # latency: timed runs (median and p90 reported)
    threads: int = 1  # torch / ONNX Runtime threads for every run
    drift: bool = True
    latency: bool = True


@dataclass(frozen=True)
class IsolationSettings:
    timeout: float | None = None  # seconds per conversion step; None: what the model has left
    memory_mb: int | None = None  # address-space limit of each step; None: no limit


@dataclass(frozen=True)
class CheckSettings:
    convert: tuple[str, ...] = ()
    compress: tuple[str, ...] = ()
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    isolation: IsolationSettings = field(default_factory=IsolationSettings)
    targets: Mapping[str, Any] = field(default_factory=dict)  # each target's own section

    def of(self, target: str) -> Any:
        """A target's own settings (its defaults when the config has no section for it)."""
        if target in self.targets:
            return self.targets[target]
        return REGISTRY.get(target).parse_settings({})

    @property
    def converters(self) -> tuple[str, ...]:
        """What is converted, in target order: a compression preset implies the conversion
        of the target that offers it."""
        owners = {o.name for o in map(REGISTRY.preset_owner, self.compress) if o is not None}
        wanted = set(self.convert) | owners
        return tuple(name for name in REGISTRY.names() if name in wanted)

    @property
    def active(self) -> bool:
        return bool(self.convert or self.compress)


def parse(doc: dict[str, Any]) -> CheckSettings:
    """Settings from a validated config document."""
    convert = doc.get("convert") or ()
    compress = doc.get("compress") or ()
    if isinstance(convert, str):
        convert = (convert,)
    if isinstance(compress, str):
        compress = (compress,)
    return CheckSettings(
        convert=tuple(dict.fromkeys(convert)),
        compress=tuple(dict.fromkeys(compress)),
        measure=MeasureSettings(**(doc.get("measure") or {})),
        isolation=IsolationSettings(**(doc.get("isolation") or {})),
        targets={t.name: t.parse_settings(doc.get(t.name)) for t in REGISTRY},
    )


def schema() -> dict[str, Any]:
    """The config schema's properties for these settings (merged into build_schema)."""
    convert_item = {"enum": list(REGISTRY.names())}
    presets = REGISTRY.presets()
    preset = {"enum": list(presets)}
    count = {"type": "integer", "minimum": 1}
    owners = " / ".join(t.label for t in REGISTRY if t.presets)
    sections = {t.name: t.settings_schema() for t in REGISTRY}
    return {
        "convert": {
            "description": "converters to run on the model (each in a child process with a "
            "time limit): " + ", ".join(REGISTRY.names()),
            "oneOf": [convert_item, {"type": "array", "items": convert_item, "uniqueItems": True}],
        },
        "compress": {
            "description": f"data-free {owners} compression presets (implies the {owners} "
            "conversion); with a list, the first is the one the budget judges: "
            + ", ".join(f"{p.name} ({p.about})" for p in presets.values()),
            "oneOf": [preset, {"type": "array", "items": preset, "uniqueItems": True}],
        },
        "measure": {
            "description": "measurements on seeded synthetic inputs",
            "type": "object",
            "properties": {
                "samples": {**count, "description": "inputs drift is measured on", "default": 8},
                "seed": {"type": "integer", "minimum": 0, "default": 0},
                "warmup": {"type": "integer", "minimum": 0, "default": 2},
                "runs": {**count, "description": "timed latency runs", "default": 10},
                "threads": {**count, "description": "CPU threads for every run", "default": 1},
                "drift": {"type": "boolean", "default": True},
                "latency": {"type": "boolean", "default": True},
            },
            "additionalProperties": False,
        },
        "isolation": {
            "description": "limits of the child process each conversion step runs in",
            "type": "object",
            "properties": {
                "timeout": {
                    "description": "seconds per step (default: what is left of the model's "
                    "timeout); a step over it is reported, the rest of the report survives",
                    "type": "number",
                    "exclusiveMinimum": 0,
                },
                "memory_mb": {
                    "description": "address-space limit per step in MB, virtual memory "
                    "including the 2-3 GB torch and coremltools map (default: none)",
                    "type": "integer",
                    "minimum": 256,
                },
            },
            "additionalProperties": False,
        },
        **{name: section for name, section in sections.items() if section is not None},
    }
