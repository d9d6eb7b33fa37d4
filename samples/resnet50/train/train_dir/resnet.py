"""ResNet50 (bottleneck blocks [3, 4, 6, 3]) for MindSpore, with a replaceable class head.

On 32x32 CIFAR images the ImageNet layout runs its second stage on 4x4 maps, its third on
2x2 and its last on 1x1. oneDNN's CPU convolution in MindSpore's NCHW layout handles such
layers image by image (im2col and a matrix product with a handful of columns per image,
weight gradients made of 64 small updates), at a fraction of the speed it reaches on larger
maps. The blocks whose output maps are at most `SMALL_MAP` wide therefore keep their
activations *batch-last*, shaped (channels, height, width, batch), where every convolution
is one matrix product over the whole batch:

- a 1x1 convolution is `weight (out, in) @ x (in, height * width * batch)`;
- a 3x3 convolution is `weight (out, in * 9) @ patches (in * 9, positions * batch)`, the
  patches gathered from the map (im2col over the whole batch at once); with a 1x1 output
  map, the weight's taps are placed at the input positions they read instead;
- batch norm normalises each channel over one contiguous row.

Values and gradients are those of `nn.Conv2d` and `nn.BatchNorm2d` (the tests compare them),
and the parameters keep their names and shapes, so checkpoints are interchangeable with the
plain layout (`batch_last=False`) and with other MindSpore ResNet50s of the same layout.
"""

from __future__ import annotations

import mindspore.nn as nn
import mindspore.ops as ops
import numpy as np
from mindspore import Tensor

STAGES = (3, 4, 6, 3)
EXPANSION = 4
SMALL_MAP = 4
IMAGE_SIZE = 32


def out_size(size: int, kernel: int, stride: int) -> int:
    """Output map size of a "same"-padded convolution (padding kernel // 2)."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def tap_index(kernel: int, stride: int, size: int) -> np.ndarray:
    """(kernel * kernel, out_positions): the input position each tap reads for each output.

    Positions are row-major over a square map of `size`; padding is kernel // 2, and taps
    that fall into it read position size * size (a zero appended to the map).
    """
    pad, out = kernel // 2, out_size(size, kernel, stride)
    index = np.full((kernel, kernel, out, out), size * size, np.int32)
    for ki in range(kernel):
        for kj in range(kernel):
            for oi in range(out):
                for oj in range(out):
                    i, j = oi * stride - pad + ki, oj * stride - pad + kj
                    if 0 <= i < size and 0 <= j < size:
                        index[ki, kj, oi, oj] = i * size + j
    return index.reshape(kernel * kernel, out * out)


class Conv2d(nn.Cell):
    """A bias-free "same" convolution over NCHW maps, or batch-last maps of `size` (see above).

    The weight lives in an `nn.Conv2d` (`conv.weight`, shape (out, in, k, k)) either way.
    Batch-last, a convolution with a 1x1 output map multiplies the input by the weight's
    taps placed at their input positions (`weight @ tap_matrix`); any other gathers the
    patches (taps x output positions) of every channel and multiplies them by the weight.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 size: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, pad_mode="pad",
                              padding=kernel // 2, weight_init="HeNormal")
        self.batch_last = size is not None
        self.out_channels, self.kernel = out_channels, kernel
        self.side = 0
        self.tap_matrix: Tensor | None = None  # (k * k, in_positions), for 1x1 outputs
        self.patches: Tensor | None = None  # flattened tap_index, unless it is the identity
        self.padded = False
        self.matmul = ops.MatMul()  # (its gradient is two MatMuls; ops.matmul's adds transposes)
        if size is None:
            return
        index = tap_index(kernel, stride, size)
        self.side = out_size(size, kernel, stride)
        if kernel > 1 and self.side == 1:
            # Column size * size (the padding) is dropped: taps that only read padding vanish.
            onehot = np.zeros((kernel * kernel, size * size + 1), np.float32)
            onehot[np.arange(kernel * kernel), index[:, 0]] = 1
            self.tap_matrix = Tensor(onehot[:, :-1])
        elif not (kernel == 1 and stride == 1):
            self.patches = Tensor(index.reshape(-1))
            self.padded = bool((index == size * size).any())

    def construct(self, x: Tensor) -> Tensor:
        if not self.batch_last:
            return self.conv(x)
        channels, height, width, batch = x.shape
        weight = self.conv.weight.astype(x.dtype)  # (mixed precision)
        if self.tap_matrix is not None:
            taps = self.matmul(weight.reshape(-1, self.kernel * self.kernel), self.tap_matrix)
            y = self.matmul(taps.reshape(self.out_channels, -1), x.reshape(-1, batch))
        else:
            cols = x.reshape(channels, height * width, batch)
            if self.patches is not None:
                if self.padded:
                    cols = ops.concat((cols, ops.zeros((channels, 1, batch), x.dtype)), 1)
                cols = ops.gather(cols, self.patches, 1)
            y = self.matmul(weight.reshape(self.out_channels, -1),
                           cols.reshape(channels * self.kernel * self.kernel, -1))
        return y.reshape(self.out_channels, self.side, self.side, batch)


class BatchNorm2d(nn.BatchNorm2d):
    """`nn.BatchNorm2d` (same parameters) over NCHW maps or, with `batch_last`, (C, H, W, N)."""

    def __init__(self, channels: int, gamma_init: str = "ones", batch_last: bool = False) -> None:
        super().__init__(channels, gamma_init=gamma_init)
        self.batch_last = batch_last

    def construct(self, x: Tensor) -> Tensor:
        if not self.batch_last:
            return super().construct(x)
        # One channel per row: normalised as a 1 x C x (H*W*N) x 1 map, the same statistics.
        return super().construct(x.reshape(1, x.shape[0], -1, 1)).reshape(x.shape)


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1,
            relu: bool = True, zero_gamma: bool = False,
            size: int | None = None) -> nn.SequentialCell:
    """A convolution (no bias) followed by batch norm and optionally ReLU.

    `size` is the input map size for the batch-last layout, None for NCHW.
    """
    layers: list[nn.Cell] = [
        Conv2d(in_channels, out_channels, kernel, stride, size),
        BatchNorm2d(out_channels, "zeros" if zero_gamma else "ones", size is not None),
    ]
    if relu:
        layers.append(nn.ReLU())
    return nn.SequentialCell(layers)


class Bottleneck(nn.Cell):
    """1x1 -> 3x3 (strided) -> 1x1 with a projection shortcut when the shape changes.

    `size` (the input map size) selects the batch-last layout; `enter_batch_last` makes the
    block take NCHW input and turn it batch-last first.
    """

    def __init__(self, in_channels: int, width: int, stride: int, size: int | None = None,
                 enter_batch_last: bool = False) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        mid = None if size is None else out_size(size, 3, stride)
        self.body = nn.SequentialCell([
            conv_bn(in_channels, width, 1, size=size),
            conv_bn(width, width, 3, stride, size=size),
            # Each residual block starts as the identity: steadier early training.
            conv_bn(width, out_channels, 1, relu=False, zero_gamma=True, size=mid),
        ])
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = conv_bn(in_channels, out_channels, 1, stride, relu=False, size=size)
        self.relu = nn.ReLU()
        self.enter_batch_last = enter_batch_last

    def construct(self, x: Tensor) -> Tensor:
        if self.enter_batch_last:
            x = x.transpose(1, 2, 3, 0)
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.body(x) + identity)


class ResNet50(nn.Cell):
    """The ImageNet ResNet50 layout for square images of `image_size`.

    With `batch_last` (the default), stages whose output maps are at most SMALL_MAP wide run
    batch-last; the network still takes NCHW images and returns (batch, classes) logits.
    """

    def __init__(self, num_classes: int = 10, image_size: int = IMAGE_SIZE,
                 batch_last: bool = True) -> None:
        super().__init__()
        self.stem = nn.SequentialCell([
            conv_bn(3, 64, 7, 2),
            nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same"),
        ])
        size = out_size(out_size(image_size, 7, 2), 3, 2)
        blocks: list[nn.Cell] = []
        in_channels = 64
        self.batch_last = False
        for stage, count in enumerate(STAGES):
            width = 64 * 2**stage
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                small = batch_last and out_size(size, 3, stride) <= SMALL_MAP
                blocks.append(Bottleneck(in_channels, width, stride, size if small else None,
                                         enter_batch_last=small and not self.batch_last))
                self.batch_last = self.batch_last or small
                in_channels = width * EXPANSION
                size = out_size(size, 3, stride)
        self.layers = nn.SequentialCell(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Dense(in_channels, num_classes)
        self.image_size = image_size

    def construct(self, x: Tensor) -> Tensor:
        if self.batch_last and (x.shape[2] != self.image_size or x.shape[3] != self.image_size):
            raise ValueError(f"ResNet50 was built for {self.image_size}x{self.image_size} "
                             f"images, got {x.shape[2]}x{x.shape[3]}")
        x = self.layers(self.stem(x))
        if self.batch_last:  # (channels, height, width, batch) -> (batch, channels)
            return self.head(x.mean((1, 2)).transpose(1, 0))
        return self.head(self.flatten(self.pool(x)))


def resnet50(num_classes: int = 10, image_size: int = IMAGE_SIZE,
             batch_last: bool = True) -> ResNet50:
    """A freshly initialised ResNet50 with `num_classes` outputs for `image_size` images."""
    return ResNet50(num_classes, image_size, batch_last)

