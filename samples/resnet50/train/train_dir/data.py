"""CIFAR-10 (binary release layout) input pipelines and the normalisation shared with inference."""

from __future__ import annotations

import os
from pathlib import Path

import mindspore as ms
import mindspore.dataset as ds
import mindspore.dataset.transforms as transforms
import mindspore.dataset.vision as vision
import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
# Per-channel statistics of the CIFAR-10 training set, on the [0, 1] scale.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
TRAIN_FILE = "data_batch_1.bin"
RECORD_BYTES = 1 + 3 * 32 * 32
FILE_RECORDS = 10_000


def find_cifar_dir(data_url: str) -> Path:
    """The folder holding data_batch_*.bin: `data_url` itself or one folder below it."""
    root = Path(data_url)
    if (root / TRAIN_FILE).is_file():
        return root
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if (child / TRAIN_FILE).is_file():
                return child
    raise FileNotFoundError(
        f"no CIFAR-10 binary files ({TRAIN_FILE}, ..., test_batch.bin) in {data_url} "
        "or in a folder directly below it; use the official cifar-10-binary.tar.gz layout")


def split_files(data_dir: Path, train: bool) -> list[Path]:
    """The record files of one split, in order."""
    if train:
        return sorted(data_dir.glob("data_batch_*.bin"), key=lambda p: int(p.stem.split("_")[-1]))
    return [data_dir / "test_batch.bin"]


def is_release_layout(files: list[Path]) -> bool:
    """Whether every file holds exactly 10,000 records, as Cifar10Dataset requires."""
    return all(f.stat().st_size == FILE_RECORDS * RECORD_BYTES for f in files)


def read_records(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """HWC uint8 images and int32 labels from CIFAR-10 binary files of any length."""
    raw = np.concatenate([np.fromfile(f, dtype=np.uint8) for f in files])
    if raw.size % RECORD_BYTES:
        raise ValueError(f"{', '.join(map(str, files))}: not whole CIFAR-10 records")
    records = raw.reshape(-1, RECORD_BYTES)
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), records[:, 0].astype(np.int32)


class Records:
    """Random-access source of (image, label) rows for GeneratorDataset."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = images
        self.labels = labels

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        # A 0-d array rather than a NumPy scalar: MindSpore converts rows without copying.
        return self.images[index], np.asarray(self.labels[index])

    def __len__(self) -> int:
        return len(self.labels)


def pipeline_workers() -> int:
    """Input workers for this machine: the network needs the cores more than decoding does."""
    return max(1, (os.cpu_count() or 1) // 4)


def create_dataset(data_dir: Path, *, train: bool, batch_size: int, limit: int = 0,
                   workers: int | None = None) -> ds.Dataset:
    """Batches of normalised CHW float32 images and int32 labels (augmented when `train`)."""
    workers = workers or pipeline_workers()
    files = split_files(data_dir, train)
    if is_release_layout(files):
        dataset = ds.Cifar10Dataset(str(data_dir), usage="train" if train else "test",
                                    num_samples=limit or None, shuffle=train,
                                    num_parallel_workers=workers)
    else:
        # Subsets (e.g. to_cifar_bin.py --limit-train) have shorter files, which
        # Cifar10Dataset rejects; the records are the same, so read them directly.
        dataset = ds.GeneratorDataset(Records(*read_records(files)), ["image", "label"],
                                      shuffle=train, num_samples=limit or None)
    image_ops: list[object] = []
    if train:
        image_ops += [vision.RandomCrop(32, padding=4), vision.RandomHorizontalFlip()]
    image_ops += [
        vision.Normalize(mean=[m * 255 for m in MEAN], std=[s * 255 for s in STD]),
        vision.HWC2CHW(),
    ]
    dataset = dataset.map(image_ops, input_columns="image", num_parallel_workers=workers)
    dataset = dataset.map(transforms.TypeCast(ms.int32), input_columns="label",
                          num_parallel_workers=workers)
    return dataset.batch(batch_size, drop_remainder=train)
