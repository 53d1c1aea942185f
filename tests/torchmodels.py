"""Model definitions for the tests, the demo and the benchmarks (module level, so that
``torch.save(model)`` can pickle them as ``torchmodels.<Class>``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


class Clean(nn.Module):
    """conv, bn, relu, global pool, linear: converts everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class FlattenHead(nn.Module):
    """The oversized head: pool to a large map, flatten, one huge Linear."""

    def __init__(self, pool: tuple[int, int] = (16, 16), out: int = 256) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.head = nn.Linear(8 * pool[0] * pool[1], out)  # the line MG001 points at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv(x)))
        return self.head(torch.flatten(x, 1))  # source line of the linear op


class WithDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = x.mean(dim=(2, 3))
        return self.fc(self.drop(x))


class OddPool(nn.Module):
    """AdaptiveAvgPool2d((7, 7)) after a 10x10 map: 10 % 7 != 0."""

    def __init__(self, out: tuple[int, int] = (7, 7)) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return torch.nonzero(y > 0)


class TwoUnsupported(nn.Module):
    """kthvalue (no converter in coremltools or torch.onnx) and erfinv (none either)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.kthvalue(x, 2, dim=1).values
        return torch.erfinv(torch.tanh(v))


class CumProd(nn.Module):
    """cumprod: coremltools converts it; torch.onnx decomposes it into prims::prod and fails."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumprod(x, dim=1)


class Compressible(nn.Module):
    """Weights big enough for Core ML compression (over 2048 elements), two of which the
    4-bit presets skip: the stem's 3 input channels (int4 blocks of 32) and the head's 100
    outputs (palettize-4 groups of 16)."""

    def __init__(self, head: int = 100) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 5, padding=2)  # 2400 weights, 3 input channels
        self.bn = nn.BatchNorm2d(32)
        self.conv = nn.Conv2d(32, 64, 3, padding=1)  # 18432 weights
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, head)  # 6400 weights, 100 outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.conv(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class Constant(nn.Module):
    """Answers every input with the same vector: a bias of -1000 keeps the ReLU shut, so the
    output is the head's bias, and a relative error of it would mean nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3, padding=1)
        self.fc = nn.Linear(64, 64)  # 4096 weights: compressed
        with torch.no_grad():
            self.conv.bias.fill_(-1000.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class HardswishCNN(nn.Module):
    """conv, hardswish, mean, linear: the edge targets' model that converts and runs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.Hardswish()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


class Sorts(nn.Module):
    """sort, topk and cumsum: ops that converters lower and runtimes may lack."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values, _ = torch.sort(x, dim=1)
        top = torch.topk(x, 2, dim=1).values
        return torch.cumsum(values, 1)[:, :2] + top


class Encoder(nn.Module):
    """Two transformer encoder layers over an embedding, with a causal mask."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.emb = nn.Embedding(50, 16)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(ids.shape[1])
        return self.enc(self.emb(ids), mask=mask, is_causal=True)


class Spectrum(nn.Module):
    """The magnitude of a real FFT."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(x).abs()


Dynamic = tuple[str, int]  # a dynamic dimension: its name and its minimum

# the edge targets' five models (the LiteRT and ONNX Runtime Mobile tests, MG003's predictions),
# each file with its model, example input and dynamic dimensions: the dynamic CNN's batch runs
# from 2 up, so that its example batch of 2 is the one modelgate fills the dimension with
EDGE: dict[str, tuple[type[nn.Module], Callable[[], torch.Tensor], dict[int, Dynamic] | None]] = {
    "cnn.pt2": (HardswishCNN, lambda: torch.randn(1, 3, 16, 16), None),
    "encoder.pt2": (Encoder, lambda: torch.randint(0, 50, (1, 8)), None),
    "sorts.pt2": (Sorts, lambda: torch.randn(1, 8), None),
    "spectrum.pt2": (Spectrum, lambda: torch.randn(1, 8), None),
    "dynamic.pt2": (HardswishCNN, lambda: torch.randn(2, 3, 16, 16), {0: ("batch", 2)}),
}
_EDGE_ROOT: list[Path] = []  # built once a session, for every module that checks them


def edge_models(mktemp: Callable[[str], Path]) -> Path:
    """The folder (made by ``mktemp``, once) holding :data:`EDGE`'s models, seeded, each
    saved with ``torch.export.save`` under its file name."""
    if _EDGE_ROOT:
        return _EDGE_ROOT[0]
    root = mktemp("edge")
    torch.manual_seed(0)
    for name, (model, sample, dynamic) in EDGE.items():
        dims = {d: torch.export.Dim(n, min=low) for d, (n, low) in (dynamic or {}).items()}
        program = torch.export.export(
            model().eval(), (sample(),), dynamic_shapes=(dims,) if dims else None
        )
        torch.export.save(program, root / name)
    _EDGE_ROOT.append(root)
    return root


MODELS = {
    "clean": Clean,
    "flatten_head": FlattenHead,
    "dropout": WithDropout,
    "odd_pool": OddPool,
    "data_dependent": DataDependent,
    "two_unsupported": TwoUnsupported,
    "cumprod": CumProd,
    "compressible": Compressible,
    "constant": Constant,
}
