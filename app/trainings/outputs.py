"""A training's outputs: list them, send one file, or a folder as a streamed .tar.gz."""

from __future__ import annotations

import os
import queue
import tarfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from app import storage
from app.errors import NotFound
from app.models import Training
from app.trainings.schemas import OutputFile

CHECKPOINT_SUFFIXES = (".ckpt",)


def output_dirs(training: Training) -> list[tuple[str, PurePosixPath]]:
    """(name, folder relative to the workspace) of each declared output."""
    return [(o["name"], PurePosixPath(o["output_dir"].strip("/")))
            for o in training.config.get("outputs", [])]


def list_outputs(training: Training) -> list[OutputFile]:
    """Every file under the training's output folders."""
    workspace = storage.training_workspace(training.id)
    files: list[OutputFile] = []
    for name, rel in output_dirs(training):
        root = workspace / rel
        for dirpath, _dirs, names in os.walk(root):
            for fname in sorted(names):
                path = Path(dirpath) / fname
                if path.is_symlink() or not path.is_file():
                    continue
                stat = path.stat()
                files.append(OutputFile(
                    path=path.relative_to(workspace).as_posix(), output=name, size=stat.st_size,
                    modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
                    checkpoint=fname.endswith(CHECKPOINT_SUFFIXES)))
    return sorted(files, key=lambda f: f.path)


def resolve_output(training: Training, raw: str) -> Path:
    """A file or folder inside one of the training's outputs (404 otherwise)."""
    workspace = storage.training_workspace(training.id)
    rel = storage.relative_path(raw, field="path")
    target = storage.resolve_inside(workspace, rel, field="path")
    for _name, out in output_dirs(training):
        root = (workspace / out).resolve()
        if (target == root or target.is_relative_to(root)) and target.exists():
            return target
    raise NotFound(f"training {training.id} has no output '{raw}'")


class _QueueWriter:
    """A write-only file object handing each written block to a bounded queue."""

    def __init__(self, q: queue.Queue[bytes | None], stop: threading.Event) -> None:
        self.q = q
        self.stop = stop

    def write(self, data: bytes) -> int:
        while data:
            if self.stop.is_set():
                raise BrokenPipeError("the client went away")
            try:
                self.q.put(bytes(data), timeout=0.5)
                break
            except queue.Full:
                continue
        return len(data)

    def flush(self) -> None:
        return None


def stream_tar_gz(folder: Path, *, arcname: str) -> Iterator[bytes]:
    """The folder as a .tar.gz, produced while it is sent (never built whole in memory)."""
    q: queue.Queue[bytes | None] = queue.Queue(maxsize=32)
    errors: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        try:
            with tarfile.open(fileobj=_QueueWriter(q, stop), mode="w|gz") as tar:  # type: ignore[call-overload]
                tar.add(folder, arcname=arcname, filter=_no_links)
        except BaseException as exc:
            errors.append(exc)
        finally:
            q.put(None)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (block := q.get()) is not None:
            yield block
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
    if errors and not isinstance(errors[0], BrokenPipeError):
        raise errors[0]


def _no_links(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if info.issym() or info.islnk() else info
