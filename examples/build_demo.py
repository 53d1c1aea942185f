"""Build the demo models: one that ships, and ones with the deployment bugs modelgate catches.

    python examples/build_demo.py demo/

good.pt2            a small CNN with global pooling, exported in eval mode
bad.pt2             the same backbone with the classic mistakes: a flattened 24x24 feature map
                    into a 4.7M-parameter Linear, an adaptive pool that does not divide its
                    input, and an export in training mode (dropout and batch statistics live)
bad_state_dict.pt   a checkpoint of a model cast with .half() (Core ML fails at BatchNorm)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn


class Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(x)))


class GoodNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.backbone(x)), 1))


class BadNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.pool = nn.AdaptiveAvgPool2d((24, 24))  # 32x32 feature map: 32 % 24 != 0
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(32 * 24 * 24, 256)  # 4.7M parameters fed by a flattened map
        self.head = nn.Linear(256, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.backbone(x)), 1)
        return self.head(torch.relu(self.fc(self.drop(x))))


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 128, 128)

    good = GoodNet().eval()
    torch.export.save(torch.export.export(good, (x,)), str(out / "good.pt2"))

    bad = BadNet().train()  # forgot .eval()
    torch.export.save(torch.export.export(bad, (x,)), str(out / "bad.pt2"))

    half = GoodNet().eval().half()
    torch.save({"epoch": 12, "model": half.state_dict()}, out / "bad_state_dict.pt")
    print(f"wrote {out}/good.pt2, {out}/bad.pt2, {out}/bad_state_dict.pt")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo")
