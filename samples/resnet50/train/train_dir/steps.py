"""The compiled training and evaluation steps (graph-mode cells must live in .py files)."""

from __future__ import annotations

import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore import Tensor


class TrainStep(nn.Cell):
    """Forward, backward and optimizer update; returns the batch loss and the logits."""

    def __init__(self, network: nn.Cell, loss_fn: nn.Cell, optimizer: nn.Optimizer) -> None:
        super().__init__(auto_prefix=False)
        self.network = network
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.grad_fn = ms.value_and_grad(self.forward, None, optimizer.parameters, has_aux=True)

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Loss and logits of one batch (the logits ride along without gradient)."""
        logits = self.network(images)
        return self.loss_fn(logits, labels), logits

    def construct(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        (loss, logits), grads = self.grad_fn(images, labels)
        self.optimizer(grads)
        return loss, logits


class EvalStep(nn.Cell):
    """Mean loss and number of correct predictions of one batch, in inference mode."""

    def __init__(self, network: nn.Cell, loss_fn: nn.Cell) -> None:
        super().__init__(auto_prefix=False)
        self.network = network
        self.loss_fn = loss_fn

    def construct(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.network(images)
        correct = ops.equal(ops.argmax(logits, dim=1).astype(labels.dtype), labels)
        return self.loss_fn(logits, labels), correct.astype(ms.int32).sum()
