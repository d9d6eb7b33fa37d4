"""Dataset import into the CIFAR-10 binary layout: official batches and image-folder trees."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import tarfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.datasets import importer
from app.datasets.download import (
    CIFAR10_BINARY_MD5,
    CIFAR10_BINARY_URL,
    ChecksumMismatch,
    DownloadFailed,
    download,
)
from app.datasets.importer import CIFAR10_CLASSES, DatasetInfo, import_dataset
from app.errors import Invalid
from tests.cifar_data import write_cifar_binary
from tests.conftest import SHARED_DATA

MB = 1024 * 1024
BATCHES = [f"data_batch_{i}.bin" for i in range(1, 6)]
REAL_IMAGES = SHARED_DATA / "cifar10" / "cifar-10-images.tar.gz"


def write_image_folder(directory: Path, n_per_class_train: int, n_per_class_test: int,
                       seed: int, size: int = 32, fmt: str = "png",
                       classes: tuple[str, ...] = CIFAR10_CLASSES) -> set[bytes]:
    """Write train/<class>/ and test/<class>/ images; returns the records they should become."""
    rng = np.random.default_rng(seed)
    expected: set[bytes] = set()
    for split, count in (("train", n_per_class_train), ("test", n_per_class_test)):
        for label, name in enumerate(classes):
            folder = directory / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.{fmt}")
                planes = pixels.transpose(2, 0, 1).reshape(-1)
                expected.add(bytes([label]) + planes.tobytes())
    return expected


def records(folder: Path, names: list[str]) -> np.ndarray:
    """All records of the named batch files, one row of 3073 bytes each."""
    return np.concatenate([np.fromfile(folder / n, dtype=np.uint8).reshape(-1, 3073)
                           for n in names])


def repeats(rows: np.ndarray) -> Counter[bytes]:
    """How many times each distinct record occurs."""
    return Counter(row.tobytes() for row in rows)


def as_set(rows: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in rows}


def _nothing_left(parent: Path, *keep: str) -> bool:
    return sorted(p.name for p in parent.iterdir()) == sorted(keep)


# -- official binary layout ---------------------------------------------------------------------

def bin_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_official_sized_batches_are_kept_byte_for_byte(tmp_path: Path) -> None:
    source = write_cifar_binary(tmp_path / "cifar-10-batches-bin", 10_000, 10_000, seed=1)
    info = import_dataset(tmp_path, tmp_path / "out", max_bytes=100 * MB)
    meta_bytes = len("\n".join(CIFAR10_CLASSES)) + 1
    assert info == DatasetInfo(format="cifar10-binary", classes=list(CIFAR10_CLASSES),
                               train_count=10_000, test_count=10_000,
                               bytes=20_000 * 3073 + meta_bytes, repeated=0)
    for name in ("data_batch_1.bin", "test_batch.bin"):
        assert (tmp_path / "out" / name).read_bytes() == (source / name).read_bytes()
    assert (tmp_path / "out" / "batches.meta.txt").read_text().split() == list(CIFAR10_CLASSES)
    assert info.model_dump_json()  # stored as JSON on the dataset row


def test_official_tar_gz_layout_with_short_batches_is_filled_to_10000(tmp_path: Path) -> None:
    batches = tmp_path / "cifar-10-batches-bin"
    batches.mkdir()
    rng = np.random.default_rng(2)
    written = {}
    for name in [*BATCHES, "test_batch.bin"]:
        rows = rng.integers(0, 256, size=(20, 3073), dtype=np.uint8)
        rows[:, 0] = rng.integers(0, 10, size=20)
        rows.tofile(batches / name)
        written[name] = rows
    # As in the real release: names padded with blank lines, plus a readme.
    (batches / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    (batches / "readme.html").write_text("<html></html>")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(batches, arcname="cifar-10-batches-bin")
    shutil.rmtree(batches)
    seen: list[tuple[int, int]] = []
    info = import_dataset(archive, tmp_path / "out", max_bytes=10 * MB,
                          progress=lambda done, total: seen.append((done, total)))
    assert (info.format, info.train_count, info.test_count) == ("cifar10-binary", 100, 20)
    assert info.repeated == 9_900 + 9_980
    assert bin_files(tmp_path / "out") == ["batches.meta.txt", "data_batch_1.bin",
                                           "test_batch.bin"]
    train = records(tmp_path / "out", ["data_batch_1.bin"])
    # The user's records first, in their order, then each repeated evenly (100 times here).
    assert np.array_equal(train[:100], np.concatenate([written[n] for n in BATCHES]))
    assert set(repeats(train).values()) == {100}
    test = records(tmp_path / "out", ["test_batch.bin"])
    assert len(test) == 10_000 and np.array_equal(test[:20], written["test_batch.bin"])
    assert seen[-1] == (archive.stat().st_size,) * 2
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_missing_meta_is_written_and_custom_class_names_are_kept(tmp_path: Path) -> None:
    source = write_cifar_binary(tmp_path / "plain", 20, 10, seed=3)
    (source / "batches.meta.txt").unlink()
    assert import_dataset(source, tmp_path / "a", max_bytes=MB).classes == list(CIFAR10_CLASSES)
    assert (tmp_path / "a" / "batches.meta.txt").read_text().split() == list(CIFAR10_CLASSES)
    rows = np.zeros((4, 3073), dtype=np.uint8)
    rows[:, 0] = [0, 1, 2, 1]
    for name in ("data_batch_1.bin", "test_batch.bin"):
        rows.tofile(source / name)
    (source / "batches.meta.txt").write_text("cats\ndogs\nfish\n")
    assert import_dataset(source, tmp_path / "b", max_bytes=MB).classes == ["cats", "dogs",
                                                                            "fish"]


def test_more_than_10000_records_are_spread_over_full_files(tmp_path: Path) -> None:
    source = write_cifar_binary(tmp_path / "src", 0, 12_000, seed=4)
    shutil.copy(source / "test_batch.bin", source / "data_batch_1.bin")
    info = import_dataset(source, tmp_path / "out", max_bytes=200 * MB)
    assert (info.train_count, info.test_count, info.repeated) == (12_000, 12_000, 16_000)
    assert bin_files(tmp_path / "out") == ["batches.meta.txt", "data_batch_1.bin",
                                           "data_batch_2.bin", "test_batch.bin",
                                           "test_batch_2.bin"]
    again = import_dataset(tmp_path / "out", tmp_path / "again", max_bytes=200 * MB)
    assert (again.train_count, again.test_count, again.repeated) == (20_000, 20_000, 0)


def _damage_size(folder: Path) -> None:
    with open(folder / "data_batch_1.bin", "ab") as f:
        f.write(b"\x00")


def _damage_label(folder: Path) -> None:
    rows = records(folder, ["test_batch.bin"])
    rows[3, 0] = 10
    rows.tofile(folder / "test_batch.bin")


def _no_test(folder: Path) -> None:
    (folder / "test_batch.bin").unlink()


def _empty_batch(folder: Path) -> None:
    (folder / "data_batch_1.bin").write_bytes(b"")


@pytest.mark.parametrize(("damage", "message"), [
    (_damage_size, r"data_batch_1\.bin: 61461 bytes is not a non-zero multiple of the 3073"),
    (_damage_label, r"test_batch\.bin: record 3 has label 10; labels must be below 10"),
    (_no_test, r"no test batch"),
    (_empty_batch, r"data_batch_1\.bin: 0 bytes"),
])
def test_bad_binary_batches_are_refused(tmp_path: Path, damage: Callable[[Path], None],
                                        message: str) -> None:
    source = write_cifar_binary(tmp_path / "src", 20, 10, seed=4)
    damage(source)
    with pytest.raises(Invalid, match=message):
        import_dataset(source, tmp_path / "sets" / "out", max_bytes=MB)
    assert _nothing_left(tmp_path / "sets")


# -- image folders ------------------------------------------------------------------------------

def test_png_folder_round_trips_labels_and_pixels(tmp_path: Path) -> None:
    expected = write_image_folder(tmp_path / "src", 6, 2, seed=5)
    info = import_dataset(tmp_path / "src", tmp_path / "out", max_bytes=10 * MB)
    assert (info.format, info.classes) == ("image-folder", list(CIFAR10_CLASSES))
    assert (info.train_count, info.test_count, info.repeated) == (60, 20, 9_940 + 9_980)
    train = records(tmp_path / "out", ["data_batch_1.bin"])
    test = records(tmp_path / "out", ["test_batch.bin"])
    assert as_set(train[:60]) | as_set(test[:20]) == expected
    assert as_set(train) == as_set(train[:60]) and as_set(test) == as_set(test[:20])
    times = repeats(train)
    assert len(times) == 60 and set(times.values()) == {166, 167}  # evenly up to 10,000
    # Shuffled like the official batches, not grouped by class.
    assert not np.array_equal(train[:60, 0], np.sort(train[:60, 0]))


def test_zip_with_a_root_folder_gives_the_same_files_as_the_folder(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "cifar-small", 4, 2, seed=6)
    import_dataset(tmp_path / "cifar-small", tmp_path / "from-folder", max_bytes=10 * MB)
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # members in reverse order: output must not care
        for path in sorted((tmp_path / "cifar-small").rglob("*"), reverse=True):
            zf.write(path, path.relative_to(tmp_path).as_posix())
        zf.writestr("cifar-small/train/cat/.DS_Store", b"junk")
        zf.writestr("__MACOSX/cifar-small/._train", b"junk")
    info = import_dataset(archive, tmp_path / "from-zip", max_bytes=10 * MB)
    assert (info.train_count, info.test_count) == (40, 20)
    assert bin_files(tmp_path / "from-zip") == bin_files(tmp_path / "from-folder")
    for name in bin_files(tmp_path / "from-folder"):
        assert (tmp_path / "from-zip" / name).read_bytes() == (
            tmp_path / "from-folder" / name).read_bytes()


def test_other_sizes_and_formats_are_converted_to_32x32_rgb(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for split in ("train", "test"):
        for name, color in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
            (src / split / name).mkdir(parents=True)
            Image.new("RGB", (200, 120), color).save(src / split / name / "a.jpg", quality=95)
            Image.new("L", (16, 16), 128).save(src / split / name / "b.bmp")
            Image.new("RGBA", (40, 40), (*color, 10)).save(src / split / name / "c.webp",
                                                           lossless=True)
    info = import_dataset(src, tmp_path / "out", max_bytes=10 * MB)
    assert info.classes == ["blue", "red"] and (info.train_count, info.test_count) == (6, 6)
    rows = records(tmp_path / "out", ["test_batch.bin"])[:6]
    planes = rows[:, 1:].reshape(-1, 3, 32, 32).astype(int)
    for label, pixels in zip(rows[:, 0], planes, strict=True):
        means = pixels.mean(axis=(1, 2))
        if abs(means[0] - means[2]) < 5:
            assert abs(means - 128).max() < 3  # the grey BMP
        else:
            assert (means[0] > means[2]) == (label == 1)  # red is label 1, blue is label 0


def test_mindspore_reads_what_was_imported(tmp_path: Path) -> None:
    dataset = pytest.importorskip("mindspore.dataset")
    expected = write_image_folder(tmp_path / "src", 3, 1, seed=11)
    import_dataset(tmp_path / "src", tmp_path / "out", max_bytes=10 * MB)
    seen: set[bytes] = set()
    for usage in ("train", "test"):
        reader = dataset.Cifar10Dataset(str(tmp_path / "out"), usage=usage, shuffle=False)
        rows = list(reader.create_tuple_iterator(output_numpy=True))
        assert len(rows) == 10_000
        seen |= {bytes([int(label)]) + image.transpose(2, 0, 1).tobytes()
                 for image, label in rows}
    assert seen == expected


def test_progress_reaches_the_total(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "src", 2, 1, seed=7)
    seen: list[tuple[int, int]] = []
    import_dataset(tmp_path / "src", tmp_path / "out", max_bytes=MB,
                   progress=lambda done, total: seen.append((done, total)))
    total = sum(p.stat().st_size for p in (tmp_path / "src").rglob("*") if p.is_file())
    assert len(seen) > 30 and seen[-1] == (total, total)


def test_worker_pool_gives_the_same_output(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    write_image_folder(tmp_path / "src", 30, 10, seed=8, fmt="jpg")
    import_dataset(tmp_path / "src", tmp_path / "serial", max_bytes=10 * MB)
    monkeypatch.setattr(importer, "POOL_MIN_IMAGES", 0)
    monkeypatch.setattr(importer, "DECODE_CHUNK", 16)
    monkeypatch.setattr(importer, "usable_cpus", lambda: 2)
    import_dataset(tmp_path / "src", tmp_path / "pooled", max_bytes=10 * MB)
    for name in bin_files(tmp_path / "serial"):
        assert (tmp_path / "pooled" / name).read_bytes() == (
            tmp_path / "serial" / name).read_bytes()
    (tmp_path / "src" / "train" / "dog" / "0017.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(Invalid, match=r"train/dog/0017\.jpg: not a readable image"):
        import_dataset(tmp_path / "src", tmp_path / "broken", max_bytes=10 * MB)
    assert not (tmp_path / "broken").exists()


def _non_image(src: Path) -> None:
    (src / "train" / "cat" / "notes.txt").write_text("these are cats")


def _one_class(src: Path) -> None:
    for name in CIFAR10_CLASSES[1:]:
        shutil.rmtree(src / "train" / name)
        shutil.rmtree(src / "test" / name)


def _unknown_test_class(src: Path) -> None:
    shutil.copytree(src / "test" / "cat", src / "test" / "lion")
    shutil.rmtree(src / "train" / "cat")
    shutil.rmtree(src / "test" / "cat")


def _stray_file(src: Path) -> None:
    shutil.copy(src / "train" / "cat" / "0000.png", src / "train" / "0000.png")


def _empty_class(src: Path) -> None:
    shutil.rmtree(src / "train" / "frog")
    (src / "train" / "frog").mkdir()


def _no_test_split(src: Path) -> None:
    shutil.rmtree(src / "test")


def _empty(src: Path) -> None:
    shutil.rmtree(src)
    src.mkdir()


@pytest.mark.parametrize(("damage", "message"), [
    (_non_image, r"train/cat/notes\.txt: not a readable image"),
    (_one_class, r"1 class\(es\); a dataset needs between 2 and 256"),
    (_unknown_test_class, r"test/lion/: class not in train/"),
    (_stray_file, r"train/0000\.png: expected only class folders"),
    (_empty_class, r"train/frog/ has no images"),
    (_no_test_split, r"no test images"),
    (_empty, r"no dataset found"),
])
@pytest.mark.parametrize("packed", [False, True])
def test_bad_image_folders_are_refused(tmp_path: Path, damage: Callable[[Path], None],
                                       message: str, packed: bool) -> None:
    src = tmp_path / "src"
    write_image_folder(src, 2, 1, seed=9)
    damage(src)
    source = src
    if packed:
        source = tmp_path / "src.tar.gz"
        with tarfile.open(source, "w:gz") as tf:
            tf.add(src, arcname="dataset")
    with pytest.raises(Invalid, match=message) as caught:
        import_dataset(source, tmp_path / "sets" / "out", max_bytes=10 * MB)
    assert caught.value.fields and caught.value.fields[0]["field"] == "archive"
    assert _nothing_left(tmp_path / "sets")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.shared_data
def test_real_cifar10_images_import(tmp_path: Path) -> None:
    if not REAL_IMAGES.is_file():
        pytest.skip(f"{REAL_IMAGES} is absent (../shared/data is not next to this checkout)")
    started = time.monotonic()
    info = import_dataset(REAL_IMAGES, tmp_path / "cifar10", max_bytes=2 * 1024 * MB)
    elapsed = time.monotonic() - started
    assert info.classes == list(CIFAR10_CLASSES)
    assert (info.train_count, info.test_count, info.repeated) == (50_000, 10_000, 0)
    test = records(tmp_path / "cifar10", ["test_batch.bin"])
    assert np.array_equal(np.bincount(test[:, 0]), [1000] * 10)
    assert [(tmp_path / "cifar10" / n).stat().st_size for n in BATCHES] == [10_000 * 3073] * 5
    # Byte for byte what ../shared/data/cifar10/to_cifar_bin.py writes (sums from its README).
    assert _sha256(tmp_path / "cifar10" / "data_batch_1.bin") == (
        "5911600e60f51499e0423ec122d3b2089e2d2a70fe1b8596de18bde5e3f98055")
    assert _sha256(tmp_path / "cifar10" / "test_batch.bin") == (
        "be84131d41613cd28217a038c7e7126da681d05f5d0cd906173e9348c09230e9")
    print(f"imported the real CIFAR-10 images in {elapsed:.1f} s")


# -- download -----------------------------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on localhost serving a folder; yields (base URL, folder)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_download_verifies_sha256_and_md5(http_root: tuple[str, Path], tmp_path: Path) -> None:
    base, root = http_root
    payload = np.random.default_rng(10).bytes(3 * MB + 17)
    (root / "data.tar.gz").write_bytes(payload)
    seen: list[tuple[int, int]] = []
    got = download(f"{base}/data.tar.gz", tmp_path / "dl" / "a.tar.gz",
                   sha256=hashlib.sha256(payload).hexdigest(),
                   progress=lambda done, total: seen.append((done, total)))
    assert got.read_bytes() == payload
    assert seen[-1] == (len(payload), len(payload))
    download(f"{base}/data.tar.gz", tmp_path / "dl" / "b.tar.gz",
             md5=hashlib.md5(payload).hexdigest().upper())
    assert (tmp_path / "dl" / "b.tar.gz").read_bytes() == payload
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["a.tar.gz", "b.tar.gz"]


def test_download_with_a_wrong_checksum_leaves_no_file(http_root: tuple[str, Path],
                                                        tmp_path: Path) -> None:
    base, root = http_root
    (root / "data.bin").write_bytes(b"not what was published")
    with pytest.raises(ChecksumMismatch, match="md5 is .*, expected " + CIFAR10_BINARY_MD5):
        download(f"{base}/data.bin", tmp_path / "dl" / "c.bin", md5=CIFAR10_BINARY_MD5)
    with pytest.raises(ChecksumMismatch):
        download(f"{base}/data.bin", tmp_path / "dl" / "c.bin", sha256="0" * 64)
    assert list((tmp_path / "dl").iterdir()) == []


def test_download_errors_are_reported(http_root: tuple[str, Path], tmp_path: Path) -> None:
    base, root = http_root
    with pytest.raises(DownloadFailed, match="answered 404"):
        download(f"{base}/missing.tar.gz", tmp_path / "d.tar.gz")
    (root / "big.bin").write_bytes(bytes(2 * MB))
    with pytest.raises(DownloadFailed, match="larger than"):
        download(f"{base}/big.bin", tmp_path / "d.tar.gz", max_bytes=MB)
    with pytest.raises(Invalid, match="sha256 must be 64 hex digits"):
        download(f"{base}/big.bin", tmp_path / "d.tar.gz", sha256="abc")
    with pytest.raises(DownloadFailed, match="failed"):
        download("http://127.0.0.1:9/nothing", tmp_path / "d.tar.gz", timeout_s=5)
    assert not (tmp_path / "d.tar.gz").exists()
    assert CIFAR10_BINARY_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
