"""Predict CIFAR-10 classes with a checkpoint of the sample's ResNet50.

    import app
    app.load("best.ckpt")
    app.predict(PIL.Image.open("deer.jpg"))   # {"airplane": 0.01, ..., "deer": 0.93, ...}

`python app.py CHECKPOINT IMAGE...` prints the top classes of each image.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")  # see train/train_dir/trainer.py

import mindspore as ms
import mindspore.nn as nn
import numpy as np
from PIL import Image

# The network and its normalisation come from the training code of this same repository.
TRAIN_DIR = Path(__file__).resolve().parent.parent / "train" / "train_dir"
sys.path.insert(0, str(TRAIN_DIR))

from data import CLASSES, MEAN, STD  # noqa: E402
from resnet import IMAGE_SIZE, resnet50  # noqa: E402

SIZE = IMAGE_SIZE  # what the network is built for
_MEAN = np.array(MEAN, dtype=np.float32) * 255
_STD = np.array(STD, dtype=np.float32) * 255


class _Classifier(nn.Cell):
    """The network followed by softmax, compiled once per batch shape."""

    def __init__(self, network: nn.Cell) -> None:
        super().__init__()
        self.network = network
        self.softmax = nn.Softmax(axis=1)

    def construct(self, images: ms.Tensor) -> ms.Tensor:
        return self.softmax(self.network(images))


_model: _Classifier | None = None


def load(checkpoint_path: str | Path) -> None:
    """Load a training checkpoint (e.g. best.ckpt) as the model used by predict()."""
    global _model
    ms.set_context(mode=ms.GRAPH_MODE)
    network = resnet50(len(CLASSES))
    params = ms.load_checkpoint(str(checkpoint_path))
    missing, _ = ms.load_param_into_net(network, params)
    if missing:
        raise ValueError(f"{checkpoint_path} is not a checkpoint of this ResNet50: "
                         f"{len(missing)} parameters missing, e.g. {missing[0]}")
    network.set_train(False)
    _model = _Classifier(network)
    _model.set_train(False)


def preprocess(image: Image.Image) -> np.ndarray:
    """RGB, 32x32, normalised like the training data, CHW float32."""
    rgb = image.convert("RGB") if image.mode != "RGB" else image
    pixels = np.asarray(rgb.resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.float32)
    return ((pixels - _MEAN) / _STD).transpose(2, 0, 1)


def predict_batch(images: list[Image.Image]) -> list[dict[str, float]]:
    """Class probabilities for each image (label -> probability, all ten classes)."""
    if _model is None:
        raise RuntimeError("no model loaded: call load(checkpoint_path) first")
    if not images:
        return []
    batch = ms.Tensor(np.stack([preprocess(image) for image in images]))
    probabilities = _model(batch).asnumpy().astype(float)
    return [dict(zip(CLASSES, row.tolist(), strict=True)) for row in probabilities]


def predict(image: Image.Image) -> dict[str, float]:
    """Class probabilities of one image (label -> probability, all ten classes)."""
    return predict_batch([image])[0]


def main(argv: list[str]) -> None:
    """Command line: app.py CHECKPOINT IMAGE... prints the three likeliest classes."""
    if len(argv) < 2:
        raise SystemExit("usage: python app.py CHECKPOINT IMAGE...")
    load(argv[0])
    for path in argv[1:]:
        with Image.open(path) as image:
            scores = predict(image)
        top = sorted(scores.items(), key=lambda item: item[1], reverse=True)[:3]
        print(path, ", ".join(f"{label} {p:.3f}" for label, p in top), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
