"""Tiny CIFAR-10 datasets in the official binary layout, for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
RECORD_BYTES = 1 + 3 * 32 * 32
BATCH_RECORDS = 10_000


def _records(rng: np.random.Generator, count: int) -> np.ndarray:
    labels = (np.arange(count) % len(CLASSES)).astype(np.uint8)
    rng.shuffle(labels)
    pixels = rng.integers(0, 256, size=(count, RECORD_BYTES - 1), dtype=np.uint8)
    return np.concatenate([labels[:, None], pixels], axis=1)


def write_cifar_binary(directory: str | Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write random records as data_batch_N.bin, test_batch.bin and batches.meta.txt."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train = _records(rng, n_train)
    for index, start in enumerate(range(0, max(n_train, 1), BATCH_RECORDS), start=1):
        train[start:start + BATCH_RECORDS].tofile(out / f"data_batch_{index}.bin")
    _records(rng, n_test).tofile(out / "test_batch.bin")
    (out / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n")
    return out
