"""The sample's ResNet50: its batch-last small-map layers compute what plain convolutions do."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

TRAIN_DIR = Path(__file__).resolve().parent.parent / "samples" / "resnet50" / "train" / "train_dir"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def resnet():  # type: ignore[no-untyped-def]
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    sys.path.insert(0, str(TRAIN_DIR))
    sys.dont_write_bytecode, keep = True, sys.dont_write_bytecode  # no __pycache__ in the sample
    try:
        import resnet as module
    finally:
        sys.dont_write_bytecode = keep
        sys.path.remove(str(TRAIN_DIR))
    return module


def _gradients(network, images, labels):  # type: ignore[no-untyped-def]
    """Logits and the gradient of the mean cross-entropy w.r.t. every trainable parameter."""
    import mindspore as ms
    from mindspore import nn, ops

    class LossGradients(nn.Cell):
        def __init__(self) -> None:
            super().__init__()
            self.loss = nn.WithLossCell(network, nn.SoftmaxCrossEntropyWithLogits(
                sparse=True, reduction="mean"))
            self.params = ms.ParameterTuple(network.trainable_params())
            self.grad = ops.GradOperation(get_by_list=True)

        def construct(self, x, y):  # type: ignore[no-untyped-def]
            return self.grad(self.loss, self.params)(x, y)

    grads = LossGradients()(images, labels)
    return network(images).asnumpy(), np.concatenate([g.asnumpy().ravel() for g in grads])


def test_batch_last_layout_matches_plain_convolutions(resnet) -> None:  # type: ignore[no-untyped-def]
    import mindspore as ms

    fast = resnet.resnet50(10)
    plain = resnet.resnet50(10, batch_last=False)
    assert [(p.name, p.shape) for p in fast.get_parameters()] == [
        (p.name, p.shape) for p in plain.get_parameters()]
    assert fast.batch_last and not plain.batch_last
    # Random values everywhere (no identity blocks), scaled so that eval mode's fixed
    # statistics keep activations in range; then the same values in both networks.
    rng = np.random.default_rng(0)
    for param in plain.get_parameters():
        values = rng.standard_normal(param.shape).astype(np.float32)
        if param.name.endswith("weight"):
            values *= 0.05
        elif param.name.endswith("variance"):
            values = 1 + 0.5 * np.abs(values)
        else:
            values *= 0.5
        param.set_data(ms.Tensor(values))
    ms.load_param_into_net(fast, {p.name: p for p in plain.get_parameters()}, strict_load=True)
    images = ms.Tensor(rng.standard_normal((16, 3, 32, 32)).astype(np.float32))
    labels = ms.Tensor(rng.integers(0, 10, 16).astype(np.int32))

    for train in (False, True):
        fast.set_train(train)
        plain.set_train(train)
        fast_logits, fast_grads = _gradients(fast, images, labels)
        plain_logits, plain_grads = _gradients(plain, images, labels)
        scale = np.abs(plain_logits).max()
        assert np.abs(fast_logits - plain_logits).max() <= 1e-4 * scale, train
        error = np.linalg.norm(fast_grads - plain_grads) / np.linalg.norm(plain_grads)
        # With batch statistics, float32 rounding is amplified through 53 batch norms over
        # 16 images: the plain network's own gradients move by about 1% when the batch is
        # merely reordered. A wrong tap or layout moves them by 100%.
        assert error <= (5e-2 if train else 1e-4), (train, error)
    plain_params = {p.name: p for p in plain.get_parameters()}
    for param in fast.get_parameters():  # the same moving statistics
        if "moving" in param.name:
            np.testing.assert_allclose(param.asnumpy(), plain_params[param.name].asnumpy(),
                                       rtol=1e-4, atol=1e-5, err_msg=param.name)


def test_layouts_share_checkpoints_and_predictions(resnet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import mindspore as ms

    fast = resnet.resnet50(10)
    ms.save_checkpoint(fast, str(tmp_path / "fast.ckpt"))
    plain = resnet.resnet50(10, batch_last=False)
    missing, unused = ms.load_param_into_net(plain, ms.load_checkpoint(str(tmp_path / "fast.ckpt")))
    assert (missing, unused) == ([], [])
    fast.set_train(False)
    plain.set_train(False)
    images = ms.Tensor(np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32))
    np.testing.assert_allclose(fast(images).asnumpy(), plain(images).asnumpy(), rtol=1e-4,
                               atol=1e-5)


def test_other_image_sizes_are_refused_by_name(resnet) -> None:  # type: ignore[no-untyped-def]
    import mindspore as ms

    network = resnet.resnet50(10)
    network.set_train(False)
    with pytest.raises(ValueError, match="built for 32x32 images, got 64x64"):
        network(ms.Tensor(np.zeros((1, 3, 64, 64), np.float32)))
    # Built for another size, the small-map layers follow it (224: none is small enough).
    assert not resnet.resnet50(10, image_size=224).batch_last
    assert resnet.resnet50(10, image_size=64).batch_last
