"""Moving files: packing folders, streamed uploads and downloads with progress bars."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from app.cli.client_api import SLOW_TIMEOUT, Api, die, err

CHUNK = 1024 * 1024
# Never worth uploading: version control, caches and virtualenvs.
SKIPPED_NAMES = frozenset({".git", ".hg", ".svn", "__pycache__", ".venv", ".mypy_cache",
                           ".pytest_cache", ".ipynb_checkpoints", ".DS_Store"})
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")


def transfer_progress() -> Progress:
    """A byte-counting progress bar on stderr."""
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=False)


class ProgressReader(io.BufferedReader):
    """A binary file that reports every read to `advance` (for streamed uploads)."""

    def __init__(self, path: Path, advance: Callable[[int], None]) -> None:
        super().__init__(io.FileIO(path, "rb"), buffer_size=CHUNK)
        self._advance = advance

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self._advance(len(data))
        return data


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_NAMES)
        for name in sorted(filenames):
            if name not in SKIPPED_NAMES and not name.endswith(".pyc"):
                yield Path(dirpath) / name


@contextmanager
def packed_dir(root: Path) -> Iterator[tuple[Path, int]]:
    """`root`'s files as a temporary .tar.gz (paths relative to `root`); yields (path, files)."""
    if not root.is_dir():
        die(f"{root} is not a folder")
    fd, name = tempfile.mkstemp(prefix="trainyard-", suffix=".tar.gz")
    os.close(fd)
    archive = Path(name)
    count = 0
    try:
        with err.status(f"packing {root} ..."), tarfile.open(archive, "w:gz") as tar:
            for path in _walk(root):
                if path.is_symlink() or not path.is_file():
                    err.print(f"[yellow]skipped[/] {path} (not a regular file)")
                    continue
                tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
                count += 1
        if count == 0:
            die(f"{root} has no files to upload")
        yield archive, count
    finally:
        archive.unlink(missing_ok=True)


@contextmanager
def upload_source(path: Path) -> Iterator[Path]:
    """An archive to upload: `path` itself when it is an archive, else `path` packed."""
    if path.is_dir():
        with packed_dir(path) as (archive, _count):
            yield archive
    elif path.is_file():
        if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
            die(f"{path} is neither a folder nor an archive ({', '.join(ARCHIVE_SUFFIXES)})")
        yield path
    else:
        die(f"{path} does not exist")


def post_files(api: Api, path: str, *, data: dict[str, str],
               files: list[tuple[str, Path, str]]) -> Any:
    """POST a multipart form whose files (field, local path, filename) stream with progress."""
    total = sum(p.stat().st_size for _field, p, _name in files)
    with transfer_progress() as progress, ExitStack() as stack:
        task = progress.add_task("uploading", total=total)

        def advance(n: int) -> None:
            progress.update(task, advance=n)

        parts = [(field, (name, stack.enter_context(ProgressReader(p, advance)),
                          "application/octet-stream")) for field, p, name in files]
        response = api.request("POST", path, data=data, files=parts, timeout=SLOW_TIMEOUT)
    return response.json()


def _inside(root: Path, rel: str) -> Path:
    target = (root / rel).resolve()
    if not target.is_relative_to(root.resolve()):
        die(f"refusing to write {rel!r} outside {root}")
    return target


def download_files(api: Api, items: list[tuple[str, str, int]], dest: Path) -> int:
    """Stream each (url path, relative path, size) into `dest`; returns the bytes written."""
    written = 0
    with transfer_progress() as progress:
        overall = progress.add_task(f"{len(items)} files", total=sum(s for _u, _r, s in items))
        for url_path, rel, size in items:
            target = _inside(dest, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            one: TaskID = progress.add_task(rel, total=size)
            try:
                with api.stream("GET", url_path, timeout=SLOW_TIMEOUT) as response, \
                        part.open("wb") as f:
                    for chunk in response.iter_bytes(CHUNK):
                        f.write(chunk)
                        written += len(chunk)
                        progress.update(one, advance=len(chunk))
                        progress.update(overall, advance=len(chunk))
                part.replace(target)
            finally:
                part.unlink(missing_ok=True)
            progress.remove_task(one)
    return written
