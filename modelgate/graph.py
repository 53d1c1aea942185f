"""One view of a model that every rule reads, whatever format it came from.

Loaders fill a :class:`ModelGraph`; rules only read it. Everything here is metadata: tensor
shapes and dtypes, never tensor values, so that a multi-GB checkpoint is checked in the time it
takes to read its header.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelgate.finding import SourceLocation
from modelgate.results import BudgetResult, BuildResult, ChecksResult

# Bytes per element of the dtype names modelgate uses (torch's names, lower case).
ITEMSIZE: dict[str, float] = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "complex128": 16,
    "complex64": 8,
    "complex32": 4,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint64": 8,
    "uint32": 4,
    "uint16": 2,
    "uint8": 1,
    "bool": 1,
    "float8_e4m3fn": 1,
    "float8_e4m3fnuz": 1,
    "float8_e5m2": 1,
    "float8_e5m2fnuz": 1,
    "float8_e8m0fnu": 1,
    "float4_e2m1fn_x2": 1,
    "qint8": 1,
    "quint8": 1,
    "qint32": 4,
    "quint4x2": 1,
    "quint2x4": 1,
    "int4": 0.5,
    "uint4": 0.5,
    "string": 0,
}

# Layer kinds rules reason about, from the class or op names that formats use for them.
_KINDS: dict[str, str] = {
    "linear": "linear",
    "lazylinear": "linear",
    "nonquantizabledynamicallyquantizablelinear": "linear",
    "gemm": "linear",
    "matmul": "linear",
    "embedding": "embedding",
    "embeddingbag": "embedding",
    "gather": "embedding",
    "conv1d": "conv",
    "conv2d": "conv",
    "conv3d": "conv",
    "convtranspose1d": "conv",
    "convtranspose2d": "conv",
    "convtranspose3d": "conv",
    "conv": "conv",
    "convtranspose": "conv",
    "batchnorm": "batchnorm",
    "batchnorm1d": "batchnorm",
    "batchnorm2d": "batchnorm",
    "batchnorm3d": "batchnorm",
    "syncbatchnorm": "batchnorm",
    "batchnormalization": "batchnorm",
    "dropout": "dropout",
    "dropout1d": "dropout",
    "dropout2d": "dropout",
    "dropout3d": "dropout",
    "alphadropout": "dropout",
    "featurealphadropout": "dropout",
    "adaptiveavgpool1d": "adaptive_pool",
    "adaptiveavgpool2d": "adaptive_pool",
    "adaptiveavgpool3d": "adaptive_pool",
    "adaptivemaxpool1d": "adaptive_pool",
    "adaptivemaxpool2d": "adaptive_pool",
    "adaptivemaxpool3d": "adaptive_pool",
    "layernorm": "norm",
    "groupnorm": "norm",
    "instancenorm1d": "norm",
    "instancenorm2d": "norm",
    "lstm": "rnn",
    "gru": "rnn",
    "rnn": "rnn",
    "multiheadattention": "attention",
}


def layer_kind(type_name: str) -> str | None:
    """Map "torch.nn.modules.linear.Linear", "Linear" or ONNX "Gemm" to a kind like "linear"."""
    short = type_name.rsplit(".", 1)[-1].lower()
    return _KINDS.get(short)


def dim_str(dim: int | str | None) -> str:
    return "?" if dim is None else str(dim)


def shape_str(shape: tuple[int | str | None, ...] | None) -> str:
    if shape is None:
        return "unknown"
    return "(" + ", ".join(dim_str(d) for d in shape) + ")"


@dataclass
class TensorInfo:
    """A weight, buffer, initializer or constant: its shape and dtype, not its values."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str = "parameter"  # parameter | buffer | constant | initializer | tensor
    external: str | None = None  # ONNX external data file, relative to the model

    @property
    def numel(self) -> int:
        return math.prod(self.shape) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return int(self.numel * ITEMSIZE.get(self.dtype, 4))


@dataclass
class Layer:
    """A module (PyTorch) or weight-carrying node (ONNX) with its own tensors."""

    path: str  # "head.2"; "" for the root module
    type: str  # "Linear", "torch.nn.modules.linear.Linear", "Gemm", or "" when unknown
    tensors: dict[str, TensorInfo] = field(default_factory=dict)  # local name -> tensor
    attrs: dict[str, Any] = field(default_factory=dict)
    training: bool | None = None
    source: SourceLocation | None = None
    inferred: bool = False  # type guessed from tensor names (bare state dicts)

    @property
    def kind(self) -> str | None:
        return layer_kind(self.type) if self.type else None

    @property
    def short_type(self) -> str:
        return self.type.rsplit(".", 1)[-1] if self.type else "?"

    @property
    def numel(self) -> int:
        return sum(t.numel for t in self.tensors.values() if t.kind != "buffer")

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


@dataclass
class ValueInfo:
    """A graph input, output or intermediate value. Dims are ints, symbol names, or None."""

    name: str
    shape: tuple[int | str | None, ...] | None = None
    dtype: str | None = None

    @property
    def dynamic_dims(self) -> list[int]:
        if self.shape is None:
            return []
        return [i for i, d in enumerate(self.shape) if not isinstance(d, int)]


@dataclass
class Op:
    """One node of the computation graph.

    ``target`` is canonical: "aten::linear" for PyTorch ops (overload in ``overload``),
    "onnx::Gemm" or "com.microsoft::Attention" for ONNX.
    """

    name: str
    target: str
    overload: str | None = None
    inputs: list[str] = field(default_factory=list)  # value names ("" where not a value)
    outputs: list[str] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)  # constant arguments by schema name
    module: str | None = None  # owning module path
    module_type: str | None = None
    source: SourceLocation | None = None

    @property
    def namespace(self) -> str:
        return self.target.split("::", 1)[0] if "::" in self.target else ""

    @property
    def opname(self) -> str:
        return self.target.split("::", 1)[-1]


@dataclass
class PickleIssue:
    """A global a pickle names that is not on the allow-list, or a stream that cannot be read."""

    member: str
    global_name: str | None  # "os.system"; None when the stream itself could not be followed
    detail: str
    usage: str = "call"  # call | class | ref | stream | native


@dataclass
class ModelGraph:
    """Everything modelgate knows about one model file."""

    path: str
    format: str = "unknown"  # state_dict | checkpoint | pickled_module | torchscript | ...
    file_size: int = 0
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    layers: dict[str, Layer] = field(default_factory=dict)
    ops: list[Op] = field(default_factory=list)
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)
    values: dict[str, ValueInfo] = field(default_factory=dict)
    has_graph: bool = False  # ops are known (not just weights)
    input_source: str | None = None  # where input shapes came from: model | config | cli
    training: bool | None = None  # the root module's training flag, when saved
    symbols: dict[str, dict[str, Any]] = field(default_factory=dict)  # symbol -> min/max
    metadata: dict[str, Any] = field(default_factory=dict)
    pickle_issues: list[PickleIssue] = field(default_factory=list)
    unreadable: str | None = None  # one-line reason the file could not be read
    unreadable_member: str | None = None
    notes: list[str] = field(default_factory=list)  # what the reader could not do, and why
    native_code: list[str] = field(default_factory=list)  # archive members that are binaries
    # how a file of weights was built into this model (modelgate.checks.build); None: not built
    build: BuildResult | None = field(default=None, repr=False)
    # what the checks found (modelgate.checks.pipeline), before the rules run; None: not run
    checks: ChecksResult | None = field(default=None, repr=False)
    # the budget judged (modelgate.budget), on the view the budget rules run on
    budget: BudgetResult | None = field(default=None, repr=False)
    # set by loaders that can compute value shapes once input shapes are final (TorchScript)
    infer_shapes: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    # -- derived views ---------------------------------------------------------------------
    @property
    def parameter_count(self) -> int:
        return sum(t.numel for t in self.tensors.values() if t.kind in ("parameter", "initializer"))

    @property
    def weight_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def value(self, name: str) -> ValueInfo | None:
        return self.values.get(name)

    def no_graph_reason(self) -> str:
        """Why there are no ops to check: what the loader said it needs, else the format's."""
        for note in self.notes:
            if "need" in note:  # the loader says what is missing (a package, the file's code)
                return note
        return f"a {self.format.replace('_', ' ')} holds weights only, no graph of ops"

    def ops_of(self, *targets: str) -> list[Op]:
        wanted = set(targets)
        return [op for op in self.ops if op.target in wanted]

    def first_source(self, module: str) -> SourceLocation | None:
        """The first source line recorded for an op of ``module`` (or its layer's own)."""
        layer = self.layers.get(module)
        if layer is not None and layer.source is not None:
            return layer.source
        for op in self.ops:
            if op.module == module and op.source is not None:
                return op.source
        return None
