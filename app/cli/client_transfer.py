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


def _resume_headers(part: Path, etag_file: Path, size: int) -> dict[str, str]:
    """Range and If-Range to fetch the rest of an interrupted download (none to start over)."""
    have = part.stat().st_size if part.is_file() else 0
    etag = etag_file.read_text().strip() if etag_file.is_file() else ""
    if not 0 < have < size or not etag:
        return {}
    return {"Range": f"bytes={have}-", "If-Range": etag}


def _fetch(api: Api, url_path: str, part: Path, *, size: int,
           advance: Callable[[int], None]) -> int:
    """Download into `part`, resuming it when the server still has the same file (its ETag,
    kept beside it); returns the bytes received. An interruption leaves both for next time."""
    etag_file = part.with_name(part.name + ".etag")
    headers = _resume_headers(part, etag_file, size)
    received = 0
    with api.stream("GET", url_path, headers=headers, timeout=SLOW_TIMEOUT) as response:
        resumed = response.status_code == 206
        if resumed:
            have = part.stat().st_size
            if not response.headers.get("content-range", "").startswith(f"bytes {have}-"):
                die(f"{url_path}: the server answered another range than bytes {have}-")
            err.print(f"resuming {part.name.removesuffix('.part')} at {have} bytes")
            advance(have)
        if etag := response.headers.get("etag"):
            etag_file.write_text(etag)
        with part.open("ab" if resumed else "wb") as f:
            for chunk in response.iter_bytes(CHUNK):
                f.write(chunk)
                received += len(chunk)
                advance(len(chunk))
    etag_file.unlink(missing_ok=True)
    return received


def download_files(api: Api, items: list[tuple[str, str, int]], dest: Path) -> int:
    """Stream each (url path, relative path, size) into `dest`; returns the bytes received.

    A file is written as `NAME.part` and renamed when complete; a `.part` left by an
    interrupted run is resumed with a Range request."""
    written = 0
    with transfer_progress() as progress:
        overall = progress.add_task(f"{len(items)} files", total=sum(s for _u, _r, s in items))
        for url_path, rel, size in items:
            target = _inside(dest, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            one: TaskID = progress.add_task(rel, total=size)

            def advance(n: int, one: TaskID = one) -> None:
                progress.update(one, advance=n)
                progress.update(overall, advance=n)

            written += _fetch(api, url_path, part, size=size, advance=advance)
            part.replace(target)
            progress.remove_task(one)
    return written
