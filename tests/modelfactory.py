"""Builds small, seeded models with known problems and writes them in each format.

Used by the tests, the demo and the benchmarks. The models live in ``torchmodels.py``, so
that source lines recorded by torch.export / TorchScript point at a known file.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any


def build(name: str, **kwargs: Any) -> Any:
    """A seeded instance of one of :mod:`torchmodels`' models."""
    import torch
    import torchmodels

    torch.manual_seed(0)
    return torchmodels.MODELS[name](**kwargs)


class Factory:
    """Writes models into ``folder``; each method returns the file's path."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / name

    # -- PyTorch ------------------------------------------------------------------------------
    def state_dict(self, model: Any, name: str = "model.pt", wrap: str | None = None,
                   legacy: bool = False) -> Path:  # fmt: skip
        import torch

        obj: Any = model.state_dict()
        if wrap:
            obj = {"epoch": 3, wrap: obj, "optimizer": {"state": {}, "param_groups": []}}
        path = self.path(name)
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
        return path

    def whole_module(self, model: Any, name: str = "whole.pt") -> Path:
        import torch

        path = self.path(name)
        torch.save(model, path)
        return path

    def torchscript(self, model: Any, shape: tuple[int, ...] = (1, 3, 16, 16),
                    name: str = "model.ts.pt") -> Path:  # fmt: skip
        import torch

        path = self.path(name)
        torch.manual_seed(0)
        torch.jit.trace(model, torch.randn(*shape)).save(str(path))
        return path

    def pt2(self, model: Any, shape: tuple[int, ...] = (1, 3, 16, 16), name: str = "model.pt2",
            dynamic_shapes: Any = None) -> Path:  # fmt: skip
        import torch

        path = self.path(name)
        torch.manual_seed(0)
        ep = torch.export.export(model, (torch.randn(*shape),), dynamic_shapes=dynamic_shapes)
        torch.export.save(ep, str(path))
        return path

    def safetensors(self, tensors: dict[str, Any], name: str = "model.safetensors") -> Path:
        from safetensors.torch import save_file

        path = self.path(name)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
        return path

    # -- torch-free -----------------------------------------------------------------------------
    def onnx(self, nodes: list[Any], inputs: list[Any], outputs: list[Any],
             initializers: list[Any] = (), name: str = "model.onnx", opset: int = 17) -> Path:  # type: ignore[assignment]  # fmt: skip
        import onnx

        graph = onnx.helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        path = self.path(name)
        onnx.save(model, str(path))
        return path

    def raw(self, data: bytes, name: str) -> Path:
        path = self.path(name)
        path.write_bytes(data)
        return path

    def torch_zip(self, pickled: bytes, name: str = "evil.pt",
                  extra: dict[str, bytes] | None = None,
                  folder: str = "archive") -> Path:  # fmt: skip
        """A torch.save-style zip whose data.pkl is ``pickled`` (for hostile tests)."""
        path = self.path(name)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(f"{folder}/data.pkl", pickled)
            zf.writestr(f"{folder}/byteorder", b"little")
            zf.writestr(f"{folder}/version", b"3\n")
            for member, data in (extra or {}).items():
                zf.writestr(f"{folder}/{member}", data)
        return path


def pickle_bytes(obj: Any, protocol: int = 2) -> bytes:
    buf = io.BytesIO()
    pickle.Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()
