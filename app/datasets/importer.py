"""Import image datasets into the CIFAR-10 binary layout that MindSpore's Cifar10Dataset reads.

Accepted sources: the official `cifar-10-binary.tar.gz` or its extracted folder, and image-folder
trees `train/<class>/*` + `test/<class>/*` (a folder, or a .zip/.tar.gz of one, possibly under
one or two top-level folders). Archives are streamed: images are decoded straight from them, never
written out one by one. The output is `data_batch_N.bin` (five for CIFAR-10), `test_batch.bin` and
`batches.meta.txt` (records of 1 label byte + 32x32 R, G, B planes), built in a temp folder beside
`dest` and renamed into place, so a failed import leaves nothing behind.
For an upload, save it first (capped, `app.uploads`) and import the saved file.

MindSpore 2.x's Cifar10Dataset refuses a batch file with fewer than 10,000 records and reads only
the first 10,000 of a longer one, so every file written holds exactly 10,000: a split whose size
is not a multiple of that is topped up by repeating its own records evenly (`DatasetInfo.repeated`).
"""

from __future__ import annotations

import io
import multiprocessing
import multiprocessing.pool
import os
import re
import threading
import unicodedata
from collections import deque
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydantic import BaseModel

from app.archives import Entry, building_dir, iter_entries, iter_folder
from app.errors import Invalid, TooLarge

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
SIDE = 32
PIXEL_BYTES = 3 * SIDE * SIDE
RECORD_BYTES = 1 + PIXEL_BYTES
FILE_RECORDS = 10_000
MAX_CLASSES = 256  # labels are one byte
META_FILE = "batches.meta.txt"
SHUFFLE_SEED = 10  # fixed, so the same images give the same files on every machine
MAX_ROOT_DEPTH = 2  # e.g. `cifar-10-batches-bin/` or `export/cifar10/` above the data
DECODE_CHUNK = 512
DECODE_CHUNK_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_IMAGE_BYTES = 16 * 1024 * 1024  # Settings.max_image_bytes
POOL_MIN_IMAGES = 4_000  # below this, starting worker processes costs more than it saves
# Decoders that run no external programs (EPS would start Ghostscript on user data).
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "GIF", "TIFF", "PPM")
MAX_SOURCE_PIXELS = 40_000_000

_BATCH = re.compile(r"^(?:data_batch_(\d+)|test_batch(?:_(\d+))?)\.bin$")
_JUNK_NAMES = {"Thumbs.db", "desktop.ini"}
_SPLITS = ("train", "test")

Progress = Callable[[int, int], None]
Records = npt.NDArray[np.uint8]
Indices = npt.NDArray[np.intp]


class DatasetInfo(BaseModel):
    """What an import produced; stored on the dataset row."""

    format: Literal["cifar10-binary", "image-folder"]
    classes: list[str]
    train_count: int
    test_count: int
    bytes: int
    repeated: int = 0  # records repeated to fill the last 10,000-record file of a split


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(message, fields=[{"field": field, "message": message}])


def import_dataset(source: Path, dest: Path, *, max_bytes: int, progress: Progress | None = None,
                   max_files: int = 1_000_000, field: str = "archive",
                   max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> DatasetInfo:
    """Import `source` (folder or archive) into `dest` in the CIFAR-10 binary layout."""
    if not source.exists():
        raise _invalid(field, f"{source} does not exist")
    if source.is_dir():
        total = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
        entries = iter_folder(source, max_bytes=max_bytes, max_files=max_files, field=field)
    else:
        total = source.stat().st_size
        entries = iter_entries(source, max_bytes=max_bytes, max_files=max_files, field=field)
    with building_dir(dest) as tmp:
        out = tmp / "dataset"
        out.mkdir()
        with _Decoder(tmp, field) as decoder:
            collector = _Collector(tmp / "batches", decoder, field,
                                   max_image_bytes=max_image_bytes)
            for entry in entries:
                collector.add(entry)
                if progress:
                    progress(entry.offset, total)
            decoder.finish()
            info = collector.finish(out)
        out.rename(dest)
    if progress:
        progress(total, total)
    return info


class _Collector:
    """Sorts the entries of a source into binary batches or images of train/test classes."""

    def __init__(self, staging: Path, decoder: _Decoder, field: str, *,
                 max_image_bytes: int) -> None:
        self.staging = staging
        self.max_image_bytes = max_image_bytes
        self.decoder = decoder
        self.field = field
        self.binary_dir: PurePosixPath | None = None
        self.image_root: tuple[str, ...] | None = None
        self.classes: dict[str, dict[str, int]] = {"train": {}, "test": {}}
        self.image_classes: dict[str, list[str]] = {"train": [], "test": []}
        self.image_names: dict[str, list[str]] = {"train": [], "test": []}

    def add(self, entry: Entry) -> None:
        parts = entry.path.parts
        if any(p.startswith(".") or p in _JUNK_NAMES for p in parts):
            return
        if not entry.is_dir and (_BATCH.match(parts[-1]) or parts[-1] == META_FILE):
            self._add_binary(entry)
            return
        split_at = next((i for i, p in enumerate(parts[:MAX_ROOT_DEPTH + 1]) if p in _SPLITS),
                        None)
        if split_at is None or len(parts) == split_at + 1:
            return  # files beside the dataset (README...) and the split folders themselves
        self._add_image(entry, parts[:split_at], parts[split_at], parts[split_at + 1:])

    def _add_binary(self, entry: Entry) -> None:
        parent = entry.path.parent
        if len(parent.parts) > MAX_ROOT_DEPTH:
            return
        if self.binary_dir is None:
            self.binary_dir = parent
            self.staging.mkdir()
        if parent != self.binary_dir:
            raise _invalid(self.field, f"{entry.name}: CIFAR-10 batch files must all be in one "
                           f"folder (found in {self.binary_dir}/ and {parent}/)")
        entry.copy_to(self.staging / entry.path.name)

    def _add_image(self, entry: Entry, root: tuple[str, ...], split: str,
                   rest: tuple[str, ...]) -> None:
        if self.image_root is None:
            self.image_root = root
        if root != self.image_root:
            raise _invalid(self.field, f"{entry.name}: images must all be under one folder "
                           f"holding train/ and test/ (found {'/'.join(root) or 'the top'} and "
                           f"{'/'.join(self.image_root) or 'the top'})")
        if len(rest) == 1 and not entry.is_dir:
            raise _invalid(self.field, f"{entry.name}: expected only class folders in {split}/ "
                           "(one folder of images per class)")
        name = rest[0]
        classes = self.classes[split]
        if name not in classes:
            _check_class_name(name, self.field)
            if len(classes) >= MAX_CLASSES:
                raise TooLarge(f"{split}/ has more than {MAX_CLASSES} classes",
                               fields=[{"field": self.field,
                                        "message": f"at most {MAX_CLASSES} classes"}])
            classes[name] = 0
        if entry.is_dir:
            return
        classes[name] += 1
        self.image_classes[split].append(name)
        self.image_names[split].append(entry.name)
        self.decoder.add(split, entry.name, entry.read_bytes(limit=self.max_image_bytes))

    def finish(self, out: Path) -> DatasetInfo:
        """Check what was found and write the dataset into `out`."""
        has_images = any(self.image_classes[s] or self.classes[s] for s in _SPLITS)
        if self.binary_dir is not None and has_images:
            raise _invalid(self.field, "found both CIFAR-10 batch files and image folders; "
                           "import one dataset at a time")
        if self.binary_dir is not None:
            return _finish_binary(self.staging, out, self.field)
        if has_images:
            return self._finish_images(out)
        raise _invalid(self.field, "no dataset found: expected CIFAR-10 binary batches "
                       "(data_batch_N.bin and test_batch.bin) or image folders train/<class>/ "
                       "and test/<class>/")

    def _finish_images(self, out: Path) -> DatasetInfo:
        train, test = self.classes["train"], self.classes["test"]
        if not train:
            raise _invalid(self.field, "no train/ folder with class folders in it")
        names = _check_classes(sorted(train), "train/", self.field)
        if sorted(names) == sorted(CIFAR10_CLASSES):
            names = list(CIFAR10_CLASSES)
        empty = [n for n in names if not train[n]]
        if empty:
            raise _invalid(self.field, f"train/{empty[0]}/ has no images")
        unknown = [n for n in sorted(test) if n not in train]
        if unknown:
            raise _invalid(self.field, f"test/{unknown[0]}/: class not in train/ "
                           f"(train classes: {', '.join(names)})")
        if not self.image_classes["test"]:
            raise _invalid(self.field, "no test images: expected test/<class>/ beside "
                           "train/<class>/")
        label_of = {name: i for i, name in enumerate(names)}
        rng = np.random.default_rng(SHUFFLE_SEED)
        repeated = 0
        for split in _SPLITS:
            labels = np.array([label_of[n] for n in self.image_classes[split]], dtype=np.uint8)
            pixels = self.decoder.pixels(split)
            # Sorting first makes the output independent of the order of the archive's members.
            ordered = np.lexsort((np.array(self.image_names[split]), labels))
            repeated += _write_split(split, _joined(labels, pixels),
                                     ordered[rng.permutation(len(ordered))], out, rng)
        return DatasetInfo(format="image-folder", classes=names,
                           train_count=len(self.image_classes["train"]),
                           test_count=len(self.image_classes["test"]),
                           bytes=_write_meta(out, names), repeated=repeated)


def _joined(labels: Records, pixels: Records) -> Callable[[Indices], Records]:
    def rows(index: Indices) -> Records:
        records = np.empty((len(index), RECORD_BYTES), dtype=np.uint8)
        records[:, 0] = labels[index]
        records[:, 1:] = pixels[index]
        return records
    return rows


def _batch_name(split: str, number: int) -> str:
    if split == "train":
        return f"data_batch_{number}.bin"
    return "test_batch.bin" if number == 1 else f"test_batch_{number}.bin"


def _write_split(split: str, rows: Callable[[Indices], Records], order: Indices, out: Path,
                 rng: np.random.Generator) -> int:
    """Write the records in `order` as files of FILE_RECORDS; returns how many were repeated."""
    n_files = max(1, -(-len(order) // FILE_RECORDS))
    extra = n_files * FILE_RECORDS - len(order)
    if extra:
        order = np.concatenate([order, np.resize(rng.permutation(order), extra)])
    for i in range(n_files):
        rows(order[i * FILE_RECORDS:(i + 1) * FILE_RECORDS]).tofile(
            out / _batch_name(split, i + 1))
    return extra


# -- decoding images ----------------------------------------------------------------------------

def _decode_chunk(items: list[tuple[str, bytes]]) -> Records | tuple[str, str]:
    """32x32 RGB planes (R, G, B) of each image, or (name, reason) for the first unreadable."""
    out = np.empty((len(items), PIXEL_BYTES), dtype=np.uint8)
    for i, (name, data) in enumerate(items):
        try:
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
                img.draft("RGB", (SIDE, SIDE))  # JPEG decodes at a reduced scale: much faster
                if img.width * img.height > MAX_SOURCE_PIXELS:
                    return name, (f"{img.width}x{img.height} pixels is more than the "
                                  f"{MAX_SOURCE_PIXELS} accepted")
                rgb = img.convert("RGB")
            if rgb.size != (SIDE, SIDE):
                rgb = rgb.resize((SIDE, SIDE), Image.Resampling.BICUBIC)
            out[i] = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).reshape(-1)
        except Exception as exc:  # any decoder failure is the user's file, reported by name
            return name, f"{type(exc).__name__}: {exc}"
    return out


def usable_cpus() -> int:
    """CPUs this process may run on (honours taskset and cgroup cpusets)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _start_pool(workers: int) -> multiprocessing.pool.Pool | None:
    # fork is safe and cheap in a single-threaded process; in a threaded server a forked child
    # could inherit a lock held by another thread, so spawn is used there.
    method = "fork" if threading.active_count() == 1 else "spawn"
    try:
        return multiprocessing.get_context(method).Pool(workers)
    except (AssertionError, OSError, RuntimeError):  # e.g. inside a daemonic worker process
        return None


class _Decoder:
    """Decodes images in arrival order into one scratch file per split; uses all cores."""

    def __init__(self, scratch: Path, field: str) -> None:
        self.scratch = scratch
        self.field = field
        self.files = {s: open(scratch / f"{s}.pixels", "wb") for s in _SPLITS}  # noqa: SIM115
        self.pending: dict[str, list[tuple[str, bytes]]] = {s: [] for s in _SPLITS}
        self.pending_bytes = dict.fromkeys(_SPLITS, 0)
        self.inflight: deque[tuple[str, multiprocessing.pool.AsyncResult[
            Records | tuple[str, str]]]] = deque()
        self.workers = usable_cpus()
        self.pool: multiprocessing.pool.Pool | None = None
        self.submitted = 0

    def __enter__(self) -> _Decoder:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.pool is not None:
            self.pool.terminate()
        for file in self.files.values():
            file.close()

    def add(self, split: str, name: str, data: bytes) -> None:
        """Queue one image of `split`."""
        self.pending[split].append((name, data))
        self.pending_bytes[split] += len(data)
        if len(self.pending[split]) >= DECODE_CHUNK or (
                self.pending_bytes[split] >= DECODE_CHUNK_BYTES):
            self._submit(split)

    def _submit(self, split: str) -> None:
        chunk = self.pending[split]
        if not chunk:
            return
        self.pending[split], self.pending_bytes[split] = [], 0
        self.submitted += len(chunk)
        if self.pool is None and self.workers > 1 and self.submitted >= POOL_MIN_IMAGES:
            self.pool = _start_pool(self.workers)
        if self.pool is None:
            self._write(split, _decode_chunk(chunk))
            return
        self.inflight.append((split, self.pool.apply_async(_decode_chunk, (chunk,))))
        while len(self.inflight) > 2 * self.workers:
            self._collect()

    def _collect(self) -> None:
        split, result = self.inflight.popleft()
        self._write(split, result.get())

    def _write(self, split: str, result: Records | tuple[str, str]) -> None:
        if isinstance(result, tuple):
            raise _invalid(self.field, f"{result[0]}: not a readable image ({result[1]}); "
                           f"accepted formats: {', '.join(IMAGE_FORMATS)}")
        result.tofile(self.files[split])

    def finish(self) -> None:
        """Decode what is still queued and wait for every result."""
        for split in _SPLITS:
            self._submit(split)
        while self.inflight:
            self._collect()
        for file in self.files.values():
            file.close()

    def pixels(self, split: str) -> Records:
        """The decoded images of `split`, one row of PIXEL_BYTES each (memory-mapped)."""
        path = self.scratch / f"{split}.pixels"
        count = path.stat().st_size // PIXEL_BYTES
        if not count:
            return np.empty((0, PIXEL_BYTES), dtype=np.uint8)
        return np.memmap(path, dtype=np.uint8, mode="r", shape=(count, PIXEL_BYTES))


# -- official binary batches -------------------------------------------------------------------

def _check_class_name(name: str, field: str) -> None:
    if any(unicodedata.category(ch).startswith("C") for ch in name) or name != name.strip():
        raise _invalid(field, f"class name {name!r} has control characters or surrounding spaces")


def _check_classes(classes: list[str], where: str, field: str) -> list[str]:
    if not 2 <= len(classes) <= MAX_CLASSES:
        raise _invalid(field, f"{where}: {len(classes)} class(es); a dataset needs between 2 and "
                      f"{MAX_CLASSES}")
    for name in classes:
        _check_class_name(name, field)
    if len(set(classes)) != len(classes):
        raise _invalid(field, f"{where}: class names repeat")
    return classes


def _read_meta(folder: Path, field: str) -> list[str]:
    meta = folder / META_FILE
    if not meta.is_file():
        return list(CIFAR10_CLASSES)
    try:
        lines = meta.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise _invalid(field, f"{META_FILE} is not UTF-8 text") from exc
    return _check_classes([line.strip() for line in lines if line.strip()], META_FILE, field)


def _check_batch(path: Path, n_classes: int, field: str) -> int:
    size = path.stat().st_size
    if size == 0 or size % RECORD_BYTES:
        raise _invalid(field, f"{path.name}: {size} bytes is not a non-zero multiple of the "
                      f"{RECORD_BYTES}-byte CIFAR-10 record (1 label byte + 32x32x3 pixels)")
    labels = np.fromfile(path, dtype=np.uint8).reshape(-1, RECORD_BYTES)[:, 0]
    bad = np.flatnonzero(labels >= n_classes)
    if bad.size:
        first = int(bad[0])
        raise _invalid(field, f"{path.name}: record {first} has label {labels[first]}; labels "
                      f"must be below {n_classes} (the number of classes)")
    return len(labels)


def _split_of(path: Path) -> tuple[str, int] | None:
    match = _BATCH.match(path.name)
    if not match:
        return None
    return ("train", int(match[1])) if match[1] else ("test", int(match[2] or 1))


def _finish_binary(staging: Path, out: Path, field: str) -> DatasetInfo:
    found = sorted((key, p) for p in staging.iterdir() if (key := _split_of(p)) is not None)
    files = {s: [p for (split, _), p in found if split == s] for s in _SPLITS}
    if not files["train"]:
        raise _invalid(field, "no training batch: expected data_batch_1.bin .. data_batch_5.bin")
    if not files["test"]:
        raise _invalid(field, "no test batch: expected test_batch.bin beside the data_batch "
                       "files")
    classes = _read_meta(staging, field)
    counts = {s: [_check_batch(p, len(classes), field) for p in files[s]] for s in _SPLITS}
    rng = np.random.default_rng(SHUFFLE_SEED)
    repeated = 0
    for split in _SPLITS:
        if all(count == FILE_RECORDS for count in counts[split]):
            for path in files[split]:  # the official layout is kept byte for byte
                path.rename(out / path.name)
            continue
        records = np.concatenate([np.fromfile(p, dtype=np.uint8).reshape(-1, RECORD_BYTES)
                                  for p in files[split]])
        repeated += _write_split(split, records.__getitem__, np.arange(len(records)), out, rng)
    return DatasetInfo(format="cifar10-binary", classes=classes,
                       train_count=sum(counts["train"]), test_count=sum(counts["test"]),
                       bytes=_write_meta(out, classes), repeated=repeated)


def _write_meta(out: Path, classes: list[str]) -> int:
    (out / META_FILE).write_text("\n".join(classes) + "\n", encoding="utf-8")
    return sum(p.stat().st_size for p in out.iterdir())
