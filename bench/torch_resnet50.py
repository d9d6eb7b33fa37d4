"""PyTorch CPU baseline: the sample's ResNet50 layout, timed on random 32x32 batches.

Runs inside bench/.venv-torch (created by train_throughput.py); prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """Convolution without bias, batch norm, optional ReLU (as in the MindSpore sample)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 with a projection shortcut when the shape changes."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(conv_bn(cin, width, 1), conv_bn(width, width, 3, stride),
                                  conv_bn(width, cout, 1, relu=False))
        self.shortcut = (conv_bn(cin, cout, 1, stride, relu=False)
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet50(num_classes: int = 10) -> nn.Sequential:
    """ResNet50, bottlenecks [3, 4, 6, 3], ImageNet stem, global average pool, dense head."""
    blocks: list[nn.Module] = [conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for stage, count in enumerate((3, 4, 6, 3)):
        for index in range(count):
            blocks.append(Bottleneck(cin, 64 * 2**stage, 2 if stage and index == 0 else 1))
            cin = 64 * 2**stage * 4
    blocks += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*blocks)


def main() -> None:
    """Time SGD-momentum training steps and print {"images_per_s": ...} as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--optimizer", default="adam", choices=["adam", "momentum"])
    args = parser.parse_args()
    torch.manual_seed(0)
    model = resnet50()
    inputs = torch.randn(args.batch_size, 3, 32, 32)
    labels = torch.randint(0, 10, (args.batch_size,))
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    optimizer: torch.optim.Optimizer = (
        torch.optim.Adam(model.parameters(), lr=0.001, weight_decay=1e-4)
        if args.optimizer == "adam"
        else torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4))
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    elapsed = time.perf_counter() - start
    print(json.dumps({"images_per_s": args.steps * args.batch_size / elapsed,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
