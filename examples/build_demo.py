"""Build the demo models: one that ships, and ones with the deployment bugs modelgate catches.

    python examples/build_demo.py demo/

good.pt2            a small CNN with global pooling, exported in eval mode
bad.pt2             the same backbone with the classic mistakes: a flattened 24x24 feature map
                    into a 4.7M-parameter Linear, an adaptive pool that does not divide its
                    input, and an export in training mode (dropout and batch statistics live)
bad_state_dict.pt   a checkpoint of a model cast with .half() (Core ML fails at BatchNorm)
repo/               a repository with model code (models/net.py), a Lightning-style checkpoint
                    and a modelgate.yaml whose build recipe makes the checkpoint a model
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
    _repository(out / "repo")
    print(f"wrote {out}/good.pt2, {out}/bad.pt2, {out}/bad_state_dict.pt, {out}/repo/")


NET_PY = """import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, classes=10, width=16):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(12)  # a 64x64 map: 64 % 12 != 0
        self.head = nn.Linear(width * 12 * 12, classes)

    def forward(self, image):
        x = self.pool(torch.relu(self.bn(self.conv(image))))
        return self.head(torch.flatten(x, 1))


def build(classes=10):
    return Net(classes)
"""
RECIPE = """models:
  - path: "checkpoints/*.ckpt"
    build: "models.net:build"      # module:callable in this repository
    kwargs: {classes: 10}
    inputs: [{name: image, shape: [1, 3, 128, 128]}]
"""


def _repository(root: Path) -> None:
    """A checkpoint that holds weights only, and the recipe that builds it from the code."""
    import importlib.util

    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "checkpoints").mkdir(exist_ok=True)
    (root / "models" / "__init__.py").write_text("")
    (root / "models" / "net.py").write_text(NET_PY)
    (root / "modelgate.yaml").write_text(RECIPE)
    spec = importlib.util.spec_from_file_location("demo_net", root / "models" / "net.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    net = module.build()
    state = {f"model.{k}": v for k, v in net.state_dict().items()}  # a LightningModule's keys
    torch.save({"epoch": 3, "state_dict": state, "hyper_parameters": {"classes": 10}},
               root / "checkpoints" / "last.ckpt")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo")
