"""Model definitions for the tests, the demo and the benchmarks (module level, so that
``torch.save(model)`` can pickle them as ``torchmodels.<Class>``)."""

from __future__ import annotations

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
