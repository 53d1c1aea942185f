"""Reading pickles without running them: the names other modules import, from where they live.

Two steps, both needed, each in its own module:

1. :mod:`modelgate.loaders.pickle_scan` walks the opcode stream statically and reports every
   global the :mod:`modelgate.loaders.allowlist` does not allow (fail closed);
   :mod:`modelgate.loaders.pickle_stream` does so for each pickle of a legacy torch.save file.
2. :mod:`modelgate.loaders.inert` unpickles into stand-ins whose ``find_class`` never imports
   anything, so that even a global the scanner missed cannot run.

:mod:`modelgate.loaders.weights_only` predicts what ``torch.load(weights_only=True)`` accepts,
and :mod:`modelgate.loaders.bounds` holds the size limits every reader applies. This module
only re-exports, for callers that import ``pickles`` (the TorchScript and torch.export loaders,
tests).
"""

from __future__ import annotations

from modelgate.loaders.allowlist import ALLOWED as _ALLOWED
from modelgate.loaders.allowlist import Policy
from modelgate.loaders.bounds import MAX_DIM, MAX_RANK, brief
from modelgate.loaders.inert import (
    NDArrayStub,
    StorageRef,
    Stub,
    TensorStub,
    _Record,
    load_inert,
    load_inert_keys,
)
from modelgate.loaders.pickle_scan import ScanResult, is_pickle, scan
from modelgate.loaders.pickle_stream import LEGACY_MAGIC, scan_sequence
from modelgate.loaders.weights_only import NUMPY_DTYPE_CLASSES as _NUMPY_DTYPE_CLASSES
from modelgate.loaders.weights_only import numpy_dtype_classes, torch_default_allows

__all__ = [
    "LEGACY_MAGIC",
    "MAX_DIM",
    "MAX_RANK",
    "_ALLOWED",
    "_NUMPY_DTYPE_CLASSES",
    "NDArrayStub",
    "Policy",
    "ScanResult",
    "StorageRef",
    "Stub",
    "TensorStub",
    "_Record",
    "brief",
    "is_pickle",
    "load_inert",
    "load_inert_keys",
    "numpy_dtype_classes",
    "scan",
    "scan_sequence",
    "torch_default_allows",
]
