"""What the conversion, compression and measurement checks do, from the config and the CLI.

Config keys (all optional; nothing runs unless ``convert`` or ``compress`` asks for it, or the
budget names a figure only a run of the model gives)::

    convert: [coreml, onnx]
    compress: palettize-4            # or a list; the first is the one the budget judges
    coreml: {deployment_target: iOS18, compute_precision: float16, weight_threshold: 2048,
             group_size: 16, block_size: 32}
    measure: {samples: 8, seed: 0, warmup: 2, runs: 10, threads: 1, drift: true, latency: true}
    isolation: {timeout: 600, memory_mb: 8192}

Only the standard library here: the config is read before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CONVERTERS = ("coreml", "onnx")


@dataclass(frozen=True)
class Preset:
    """A data-free Core ML compression recipe a person can read by name."""

    name: str
    api: str  # palettize | quantize (coremltools.optimize.coreml)
    options: dict[str, Any]
    min_target: str  # the oldest deployment target whose ops can hold the result
    about: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "palettize-8",
            "palettize",
            {"mode": "kmeans", "nbits": 8, "granularity": "per_tensor"},
            "iOS16",
            "8-bit k-means lookup table per tensor",
        ),
        Preset(
            "palettize-6",
            "palettize",
            {"mode": "kmeans", "nbits": 6, "granularity": "per_tensor"},
            "iOS16",
            "6-bit k-means lookup table per tensor",
        ),
        Preset(
            "palettize-4",
            "palettize",
            {"mode": "kmeans", "nbits": 4, "granularity": "per_grouped_channel"},
            "iOS18",
            "4-bit k-means lookup table per group of output channels",
        ),
        Preset(
            "int8",
            "quantize",
            {"mode": "linear_symmetric", "dtype": "int8", "granularity": "per_channel"},
            "iOS16",
            "8-bit linear symmetric quantization per output channel",
        ),
        Preset(
            "int4",
            "quantize",
            {"mode": "linear_symmetric", "dtype": "int4", "granularity": "per_block"},
            "iOS18",
            "4-bit linear symmetric quantization per block of input channels",
        ),
    )
}

# Deployment targets by name; macOS releases share the iOS release's ML program opset.
TARGETS = {f"iOS{n}": n for n in (15, 16, 17, 18, 26)}
TARGETS.update({"macOS12": 15, "macOS13": 16, "macOS14": 17, "macOS15": 18, "macOS26": 26})
PRECISIONS = ("float16", "float32")


@dataclass(frozen=True)
class CoreMLSettings:
    deployment_target: str | None = None  # None: the oldest target the presets allow
    compute_precision: str = "float16"
    weight_threshold: int = 2048  # coremltools' default: smaller weights stay as they are
    group_size: int = 16  # palettize-4: output channels sharing one lookup table
    block_size: int = 32  # int4: input channels sharing one scale

    def target_for(self, presets: tuple[str, ...]) -> str:
        """The deployment target the conversion uses: the configured one, else the oldest
        that every requested preset allows (iOS18 for the 4-bit presets, else iOS16)."""
        if self.deployment_target:
            return self.deployment_target
        needed = [PRESETS[p].min_target for p in presets if p in PRESETS]
        return max(needed, key=lambda t: TARGETS[t], default="iOS16")


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
    coreml: CoreMLSettings = field(default_factory=CoreMLSettings)
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    isolation: IsolationSettings = field(default_factory=IsolationSettings)

    @property
    def converters(self) -> tuple[str, ...]:
        """What is converted: compression is Core ML's, so it implies the Core ML conversion."""
        wanted = set(self.convert) | ({"coreml"} if self.compress else set())
        return tuple(c for c in CONVERTERS if c in wanted)

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
        coreml=CoreMLSettings(**(doc.get("coreml") or {})),
        measure=MeasureSettings(**(doc.get("measure") or {})),
        isolation=IsolationSettings(**(doc.get("isolation") or {})),
    )


def schema() -> dict[str, Any]:
    """The config schema's properties for these settings (merged into build_schema)."""
    convert_item = {"enum": list(CONVERTERS)}
    preset = {"enum": list(PRESETS)}
    count = {"type": "integer", "minimum": 1}
    return {
        "convert": {
            "description": "converters to run on the model (each in a child process with a "
            "time limit): coreml, onnx",
            "oneOf": [convert_item, {"type": "array", "items": convert_item, "uniqueItems": True}],
        },
        "compress": {
            "description": "data-free Core ML compression presets (implies the Core ML "
            "conversion); with a list, the first is the one the budget judges: "
            + ", ".join(f"{p.name} ({p.about})" for p in PRESETS.values()),
            "oneOf": [preset, {"type": "array", "items": preset, "uniqueItems": True}],
        },
        "coreml": {
            "description": "Core ML conversion and compression settings",
            "type": "object",
            "properties": {
                "deployment_target": {
                    "description": "minimum deployment target (default: iOS16, iOS18 for the "
                    "4-bit presets)",
                    "enum": list(TARGETS),
                },
                "compute_precision": {"enum": list(PRECISIONS), "default": "float16"},
                "weight_threshold": {
                    "description": "weights with at most this many elements stay uncompressed",
                    "type": "integer",
                    "minimum": 0,
                    "default": 2048,
                },
                "group_size": {
                    "description": "palettize-4: output channels per lookup table",
                    "enum": [4, 8, 16, 32, 64],
                    "default": 16,
                },
                "block_size": {
                    "description": "int4: input channels per scale",
                    "enum": [8, 16, 32, 64, 128],
                    "default": 32,
                },
            },
            "additionalProperties": False,
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
    }
