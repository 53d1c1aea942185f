"""Every deployment target modelgate checks, one module per target, registered here explicitly.

Adding a target is one module in this folder and one line below (:mod:`modelgate.target` says
what a module declares); the order here is the order of the report's rows and of the steps.
"""

from __future__ import annotations

from modelgate.target import Target, TargetRegistry

from . import coreml, executorch, litert, onnx, ort_mobile

REGISTRY = TargetRegistry([coreml, onnx, executorch, litert, ort_mobile])

__all__ = ["REGISTRY", "Target"]
