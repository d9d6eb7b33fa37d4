"""A training's outputs: list them, send one file, or a folder as a streamed .tar.gz."""

from __future__ import annotations

import io
import os
import queue
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from app import safe_files, storage
from app.errors import NotFound
from app.models import Training
from app.trainings.schemas import OutputFile

CHECKPOINT_SUFFIXES = (".ckpt",)


def output_dirs(training: Training) -> list[tuple[str, PurePosixPath]]:
    """(name, folder relative to the workspace) of each declared output."""
    return [(o["name"], PurePosixPath(o["output_dir"].strip("/")))
            for o in training.config.get("outputs", [])]


def list_outputs(training: Training) -> list[OutputFile]:
    """Every file under the training's output folders; links and special files are listed with
    the reason they are not served, and never followed."""
    workspace = storage.training_workspace(training.id)
    files: list[OutputFile] = []
    for name, rel in output_dirs(training):
        try:
            nodes = list(safe_files.walk(workspace, rel, field="outputs"))
        except FileNotFoundError:
            continue
        except (safe_files.UnsafePath, NotADirectoryError) as exc:
            why = exc.detail if isinstance(exc, safe_files.UnsafePath) else "is not a folder"
            files.append(_refused(rel, name, why))
            continue
        for node in nodes:
            if node.refused is not None:
                files.append(_refused(node.path, name, f"'{node.path}' {node.refused}"))
            elif not node.is_dir:
                files.append(OutputFile(
                    path=node.path.as_posix(), output=name, size=node.size,
                    modified_at=datetime.fromtimestamp(node.mtime, UTC),
                    checkpoint=node.path.name.endswith(CHECKPOINT_SUFFIXES)))
    return sorted(files, key=lambda f: f.path)


def _refused(path: PurePosixPath, output: str, why: str) -> OutputFile:
    return OutputFile(path=path.as_posix(), output=output, size=0,
                      modified_at=datetime.fromtimestamp(0, UTC), checkpoint=False,
                      refused=f"not served: {why}")


@dataclass(frozen=True)
class OutputTarget:
    """A file (with its open descriptor and fstat) or a folder among a training's outputs."""

    rel: PurePosixPath  # relative to the workspace
    fd: int | None = None
    info: os.stat_result | None = None


def resolve_output(training: Training, raw: str) -> OutputTarget:
    """A file or folder inside one of the training's outputs, reached without following links
    (404 when absent, 422 naming the path when it is a link or special file)."""
    workspace = storage.training_workspace(training.id)
    rel = storage.relative_path(raw, field="path")
    missing = NotFound(f"training {training.id} has no output '{raw}'")
    if not any(rel == out or rel.is_relative_to(out) for _name, out in output_dirs(training)):
        raise missing
    try:
        info = safe_files.lstat_at(workspace, rel)
        if stat.S_ISDIR(info.st_mode):
            os.close(safe_files.open_dir(workspace, rel))
            return OutputTarget(rel)
        fd, info = safe_files.open_file(workspace, rel)
    except (FileNotFoundError, NotADirectoryError):
        raise missing from None
    return OutputTarget(rel, fd, info)


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


def stream_tar_gz(training: Training, folder: PurePosixPath, *, arcname: str) -> Iterator[bytes]:
    """An output folder as a .tar.gz, produced while it is sent (never built whole in memory).

    Links and special files are left out and listed in a SKIPPED.txt member.
    """
    workspace = storage.training_workspace(training.id)
    q: queue.Queue[bytes | None] = queue.Queue(maxsize=32)
    errors: list[BaseException] = []
    stop = threading.Event()

    def produce() -> None:
        try:
            with tarfile.open(fileobj=_QueueWriter(q, stop), mode="w|gz") as tar:  # type: ignore[call-overload]
                _add_tree(tar, workspace, folder, arcname)
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


def _add_tree(tar: tarfile.TarFile, workspace: Path, folder: PurePosixPath,
              arcname: str) -> None:
    skipped: list[str] = []
    tar.addfile(_dir_info(arcname))
    for node in safe_files.walk(workspace, folder):
        name = f"{arcname}/{node.path.relative_to(folder).as_posix()}"
        if node.refused is not None:
            skipped.append(f"{node.path}: {node.refused}")
        elif node.is_dir:
            tar.addfile(_dir_info(name, node.mtime))
        else:
            try:
                fd, info = safe_files.open_file(workspace, node.path)
            except (safe_files.UnsafePath, OSError) as exc:
                skipped.append(f"{node.path}: {getattr(exc, 'detail', exc)}")
                continue
            member = tarfile.TarInfo(name)
            member.size, member.mtime, member.mode = info.st_size, int(info.st_mtime), 0o644
            with os.fdopen(fd, "rb") as data:
                tar.addfile(member, data)
    if skipped:
        note = ("Trainyard left out these entries: it does not follow links or read special "
                "files in a training's outputs.\n" + "\n".join(skipped) + "\n").encode()
        member = tarfile.TarInfo(f"{arcname}/SKIPPED.txt")
        member.size = len(note)
        tar.addfile(member, io.BytesIO(note))


def _dir_info(name: str, mtime: float = 0.0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(mtime)
    return info
