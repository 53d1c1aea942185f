"""Which globals a pickle may name, and how: the allow-list and the :class:`Policy`.

A pickle names globals (a module and a name) and the unpickler imports and uses them; that is
how loading a pickle runs code. This module holds the one decision both readers of a pickle
share: the static scanner (:mod:`modelgate.loaders.pickle_scan`) reports every global it does
not allow, and the inert unpickler (:mod:`modelgate.loaders.inert`) refuses to stand one in.

The allow-list is what tensors and plain containers need (it mirrors torch's own
``weights_only`` unpickler), plus PyTorch's own ``torch.nn`` module classes in class position,
so that a pickled ``nn.Module`` can be read as a module tree, plus values training frameworks
put into checkpoints that do nothing when rebuilt (``argparse.Namespace``, ``pathlib`` paths,
``datetime`` values, ``collections`` containers, Lightning's ``AttributeDict``, omegaconf's
``DictConfig`` / ``ListConfig`` and their nodes; see :data:`INERT`), each rebuilt as a
stand-in of its shape, plus joblib's array wrappers where a joblib file is read
(:data:`JOBLIB_WRAPPERS`). Users extend it in the config. Everything else stays out: fail
closed.
"""

from __future__ import annotations

import _compat_pickle
import fnmatch
import re
from dataclasses import dataclass

# Storage classes as pickled by torch.save, by the dtype they hold.
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "QInt8Storage": "qint8",
    "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
    "UntypedStorage": "uint8",
}

TORCH_DTYPES = frozenset(
    {
        "float64", "float32", "float16", "bfloat16", "complex128", "complex64", "complex32",
        "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8", "bool",
        "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
        "float4_e2m1fn_x2", "qint8", "quint8", "qint32", "quint4x2", "quint2x4",
        "bits16", "bits1x8", "bits2x4", "bits4x2", "bits8",
        *(f"int{i}" for i in range(1, 8)), *(f"uint{i}" for i in range(1, 8)),
        # legacy aliases torch pickles under
        "float", "double", "half", "long", "int", "short", "cfloat", "cdouble",
    }
)  # fmt: skip

QSCHEMES = frozenset(
    {
        "per_tensor_affine",
        "per_tensor_symmetric",
        "per_channel_affine",
        "per_channel_symmetric",
        "per_channel_affine_float_qparams",
    }
)

TENSOR_REBUILDERS = frozenset(
    {
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_qtensor",
        "_rebuild_sparse_tensor",
        "_rebuild_nested_tensor",
        "_rebuild_meta_tensor_no_storage",
        "_rebuild_wrapper_subclass",
        "_rebuild_device_tensor_from_numpy",
        "_rebuild_device_tensor_from_cpu_tensor",
    }
)

# Globals a checkpoint of tensors and plain containers needs, by how they may be used.
ALLOWED: dict[str, frozenset[str]] = {
    "collections.OrderedDict": frozenset({"call", "class", "ref"}),
    "builtins.set": frozenset({"call", "ref"}),
    "builtins.frozenset": frozenset({"call", "ref"}),
    "builtins.bytearray": frozenset({"call", "ref"}),
    "builtins.complex": frozenset({"call", "ref"}),
    "builtins.slice": frozenset({"call", "ref"}),
    "builtins.range": frozenset({"call", "ref"}),
    "builtins.list": frozenset({"ref"}),
    "builtins.dict": frozenset({"ref"}),
    "builtins.tuple": frozenset({"ref"}),
    "builtins.int": frozenset({"ref"}),
    "builtins.float": frozenset({"ref"}),
    "builtins.str": frozenset({"ref"}),
    "builtins.object": frozenset({"ref"}),
    "_codecs.encode": frozenset({"call"}),
    "torch.Size": frozenset({"call", "ref"}),
    "torch.device": frozenset({"call", "ref"}),
    "torch.Tensor": frozenset({"ref", "class"}),
    "torch.nn.parameter.Parameter": frozenset({"ref", "class"}),
    "torch.nn.parameter.Buffer": frozenset({"ref", "class"}),
    "torch.serialization._get_layout": frozenset({"call"}),
    "torch._tensor._rebuild_from_type_v2": frozenset({"call"}),
    "numpy.core.multiarray._reconstruct": frozenset({"call"}),
    "numpy._core.multiarray._reconstruct": frozenset({"call"}),
    "numpy.core.multiarray.scalar": frozenset({"call"}),
    "numpy._core.multiarray.scalar": frozenset({"call"}),
    "numpy.ndarray": frozenset({"ref", "class"}),
    "numpy.dtype": frozenset({"call", "ref"}),
    # protocols 0 and 1 pickle an instance as _reconstructor(cls, base, state): it calls
    # base.__new__(cls) (and base.__init__ unless base is object); cls and base are globals of
    # their own, checked as references, and only harmless types are allowed as those
    "copyreg._reconstructor": frozenset({"call"}),
    "typing.Any": frozenset({"ref"}),  # omegaconf's ref_type / element_type
}

# Values training frameworks put into checkpoints, which do nothing when rebuilt: a class here
# only stores what the pickle hands it (no __setstate__, __init__ or __reduce__ of its own that
# runs code). Each is rebuilt as an inert stand-in of the same shape (a record, a dict, a list or
# a str); torch's weights_only unpickler needs them added (rule MG904).
INERT_RECORDS = frozenset(
    {
        "argparse.Namespace",  # Lightning hyper_parameters, scripts that save their args
        "types.SimpleNamespace",
        *(f"pathlib.{c}" for c in ("Path", "PosixPath", "WindowsPath", "PurePath",
                                   "PurePosixPath", "PureWindowsPath")),
        *(f"pathlib._local.{c}" for c in ("Path", "PosixPath", "WindowsPath", "PurePath",
                                          "PurePosixPath", "PureWindowsPath")),  # Python 3.13
        *(f"datetime.{c}" for c in ("datetime", "date", "time", "timedelta", "timezone")),
        # omegaconf (Hydra configs): containers and value nodes whose __setstate__ only stores
        # the state; a structured config's own classes and enums are globals of their own
        "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig",
        "omegaconf.base.ContainerMetadata", "omegaconf.base.Metadata",
        *(f"omegaconf.nodes.{c}Node" for c in ("Any", "String", "Integer", "Float", "Boolean",
                                              "Bytes", "Path", "Enum")),
        # a Hugging Face Trainer's training_args.bin: a dataclass of settings and the enums
        # its fields hold (an enum called with its value only looks the member up)
        "transformers.training_args.TrainingArguments",
        "transformers.training_args_seq2seq.Seq2SeqTrainingArguments",
        "transformers.training_args.OptimizerNames",
        "transformers.debug_utils.DebugOption",
        *(f"transformers.trainer_utils.{c}" for c in ("IntervalStrategy", "SaveStrategy",
                                                      "SchedulerType", "HubStrategy",
                                                      "EvaluationStrategy", "FSDPOption")),
    }
)  # fmt: skip
INERT_DICTS = frozenset(
    {
        "collections.Counter",
        "collections.defaultdict",  # its default_factory is a global of its own, checked alone
        # Lightning's dict with attribute access (no __setitem__ or __setstate__ of its own)
        "lightning.fabric.utilities.data.AttributeDict",
        "lightning_fabric.utilities.data.AttributeDict",
        "lightning.pytorch.utilities.parsing.AttributeDict",
        "pytorch_lightning.utilities.parsing.AttributeDict",
    }
)
INERT_LISTS = frozenset({"collections.deque"})
INERT_STRS = frozenset({"torch.torch_version.TorchVersion"})  # torch.__version__
INERT = INERT_RECORDS | INERT_DICTS | INERT_LISTS | INERT_STRS
ALLOWED.update({name: frozenset({"call", "class", "ref"}) for name in INERT})

# joblib writes each numpy array as a wrapper object followed by the array's bytes (or, for an
# object array, by a pickle of its own): the wrappers only carry shape, dtype and order (or,
# for joblib < 0.10, the name of a companion .npy file). Allowed where joblib reads the file.
JOBLIB_WRAPPERS = frozenset(
    {
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "joblib.numpy_pickle.NDArrayWrapper",
        "joblib.numpy_pickle.ZNDArrayWrapper",
        "joblib.numpy_pickle_compat.NDArrayWrapper",
        "joblib.numpy_pickle_compat.ZNDArrayWrapper",
    }
)

# PyTorch's own layer classes: read as module structure when used as classes (NEWOBJ).
# Module path segments are lower case and the class is the last segment: an attribute path
# through a module (``torch.nn.modules.module.os.X``) never matches.
_TORCH_MODULE_CLASS = re.compile(
    r"^torch\.(ao\.)?nn\.(modules|quantized|qat|intrinsic)(\.[a-z_][a-z0-9_]*)*\.[A-Z]\w*$"
)
_NUMPY_DTYPE_CLASS = re.compile(r"^numpy\.dtypes\.\w+DType$")

# TorchScript archives: classes of the compilation unit, and TorchScript's own rebuilders.
_TORCHSCRIPT_CLASS = re.compile(r"^__torch__(\.\w+)+$")
_TORCHSCRIPT_PICKLE = re.compile(r"^torch\.jit\._pickle\.(restore_type_tag|build_\w+)$")
# C++ classes bound to TorchScript (``torch.classes.<ns>.<name>``): their ``__setstate__`` is
# native code that runs at load. Only PyTorch's own packed-weight namespaces are allowed.
_TORCH_CLASS = re.compile(r"^__torch__\.torch\.classes\.(\w+)\.\w+$")
TORCH_CLASS_NAMESPACES = frozenset({"quantized", "xnnpack", "mkldnn", "onednn", "sparse", "rnn"})


def resolve(module: str, name: str, proto: int) -> str:
    """The global the unpickler would import: Python 2 names are mapped below protocol 3."""
    if proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def qualified(module: str, name: str) -> str:
    """The dotted name of a global, with pickle's Python 2 module names mapped."""
    return resolve(module, name, 2)


@dataclass
class Policy:
    """What a scan accepts. ``extra`` holds the user's glob patterns from the config."""

    extra: tuple[str, ...] = ()
    torchscript: bool = False  # allow TorchScript's own class and rebuild names
    joblib: bool = False  # allow joblib's array wrappers (a joblib.dump file)

    def allows(self, name: str, usage: str) -> bool:
        if self.extra_allows(name):
            return True
        if usage == "build":  # BUILD on a global patches a class or function at load
            return False
        if self.joblib and name in JOBLIB_WRAPPERS:
            return usage in ("class", "ref")
        allowed = ALLOWED.get(name)
        if allowed is not None:
            return usage in allowed
        module, _, short = name.rpartition(".")
        if module == "torch":
            if short in STORAGE_DTYPES or short in TORCH_DTYPES or short in QSCHEMES:
                return usage == "ref" or (usage == "call" and short in STORAGE_DTYPES)
            if short.endswith("Tensor") and short[:-6] + "Storage" in STORAGE_DTYPES:
                return usage in ("ref", "class")
            return False
        if module in ("torch.cuda", "torch.storage"):
            return short in STORAGE_DTYPES and usage in ("ref", "call")
        if module == "torch._utils":
            return short in TENSOR_REBUILDERS and usage == "call"
        if _TORCH_MODULE_CLASS.match(name):
            return usage == "class"
        if _NUMPY_DTYPE_CLASS.match(name):
            return usage in ("ref", "call")
        if self.torchscript:
            custom = _TORCH_CLASS.match(name)
            if custom is not None:
                return usage == "class" and custom.group(1) in TORCH_CLASS_NAMESPACES
            if _TORCHSCRIPT_CLASS.match(name):
                return usage in ("class", "ref")
            if _TORCHSCRIPT_PICKLE.match(name):
                return usage == "call"
        return False

    def extra_allows(self, name: str, dotted: bool = False) -> bool:
        """True when the user's allow-list admits ``name``. Dotted lookups (``module`` +
        ``a.b.c``) can walk from a trusted module anywhere, so only an exact entry admits one,
        never a glob."""
        if dotted:
            return name in self.extra
        return any(fnmatch.fnmatchcase(name, pat) for pat in self.extra)
