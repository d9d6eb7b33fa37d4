"""ResNet50 (bottleneck blocks [3, 4, 6, 3]) for MindSpore, with a replaceable class head."""

from __future__ import annotations

import mindspore.nn as nn
import mindspore.ops as ops
from mindspore import Tensor

STAGES = (3, 4, 6, 3)
EXPANSION = 4


class Conv2d(nn.Cell):
    """A bias-free "same" convolution that computes a 1x1 output map as one batch-wide GEMM.

    On 32x32 inputs the last stage works on 1x1 maps. oneDNN's CPU convolution in MindSpore's
    NCHW layout runs such layers image by image (its weight gradient becomes 64 rank-one
    updates); the equivalent matrix product over the whole batch is several times faster and
    gives the same values and gradients. Larger maps use the regular convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, pad_mode="pad",
                              padding=kernel // 2, weight_init="HeNormal")
        self.kernel = kernel
        self.stride = stride
        self.pad = kernel // 2
        self.out_channels = out_channels
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        k, s, p = self.kernel, self.stride, self.pad
        # Shapes are static in graph mode, so this branch is resolved at compile time.
        if (h + 2 * p - k) // s == 0 and (w + 2 * p - k) // s == 0:
            rows = min(h, k - p)
            cols = min(w, k - p)
            weight = self.conv.weight
            if rows != k or cols != k:
                weight = weight[:, :, p:p + rows, p:p + cols]
            if rows != h or cols != w:
                x = x[:, :, :rows, :cols]
            weight = weight.reshape(self.out_channels, -1).astype(x.dtype)  # (mixed precision)
            y = self.matmul(x.reshape(n, -1), weight)
            return y.reshape(n, self.out_channels, 1, 1)
        return self.conv(x)


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1,
            relu: bool = True, zero_gamma: bool = False) -> nn.SequentialCell:
    """A convolution (no bias) followed by batch norm and optionally ReLU."""
    layers: list[nn.Cell] = [
        Conv2d(in_channels, out_channels, kernel, stride),
        nn.BatchNorm2d(out_channels, gamma_init="zeros" if zero_gamma else "ones"),
    ]
    if relu:
        layers.append(nn.ReLU())
    return nn.SequentialCell(layers)


class Bottleneck(nn.Cell):
    """1x1 -> 3x3 (strided) -> 1x1 with a projection shortcut when the shape changes."""

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.body = nn.SequentialCell([
            conv_bn(in_channels, width, 1),
            conv_bn(width, width, 3, stride),
            # Each residual block starts as the identity: steadier early training.
            conv_bn(width, out_channels, 1, relu=False, zero_gamma=True),
        ])
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = conv_bn(in_channels, out_channels, 1, stride, relu=False)
        self.relu = nn.ReLU()

    def construct(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.body(x) + identity)


class ResNet50(nn.Cell):
    """The ImageNet ResNet50 layout; on 32x32 CIFAR images the last stage sees 1x1 maps."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.SequentialCell([
            conv_bn(3, 64, 7, 2),
            nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same"),
        ])
        blocks: list[nn.Cell] = []
        in_channels = 64
        for stage, count in enumerate(STAGES):
            width = 64 * 2**stage
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(Bottleneck(in_channels, width, stride))
                in_channels = width * EXPANSION
        self.layers = nn.SequentialCell(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Dense(in_channels, num_classes)

    def construct(self, x: Tensor) -> Tensor:
        x = self.layers(self.stem(x))
        return self.head(self.flatten(self.pool(x)))


def resnet50(num_classes: int = 10) -> ResNet50:
    """A freshly initialised ResNet50 with `num_classes` outputs."""
    return ResNet50(num_classes)
