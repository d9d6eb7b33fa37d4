"""Files under a folder that untrusted code could have written, reached without following links.

A path is walked one component at a time from a descriptor of its root, each step an
`openat(..., O_NOFOLLOW)`, so a symbolic link anywhere on the way is refused, never followed.
Regular files with other hard links and special files (fifos, sockets, devices) are refused too,
checked with `fstat` on the very descriptor that is then read: what is checked is what is read.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from app.errors import AppError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a fifo planted where a file was expected must not hang the caller.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
CHUNK = 1024 * 1024


class UnsafePath(AppError):
    """A path a run wrote that Trainyard refuses to follow or read (link or special file)."""

    status = 422
    code = "unsafe_path"


@dataclass(frozen=True)
class Node:
    """One entry of a walk: a folder, a regular file, or an entry refused with `refused`."""

    path: PurePosixPath  # relative to the walk's root
    is_dir: bool
    size: int
    mtime: float
    refused: str | None = None


def refusal(info: os.stat_result) -> str | None:
    """Why an entry must not be read (None for a folder or a singly linked regular file)."""
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if stat.S_ISDIR(mode):
        return None
    if not stat.S_ISREG(mode):
        return "is a special file (fifo, socket or device)"
    if info.st_nlink > 1:
        return "is a hard link (the file has other names)"
    return None


def _parts(rel: str | PurePosixPath) -> list[str]:
    parts = [p for p in PurePosixPath(rel).parts if p not in ("", ".")]
    if PurePosixPath(rel).is_absolute() or ".." in parts:
        raise ValueError(f"{rel!s} is not a relative path inside its folder")
    return parts


def _refuse(field: str, path: str, why: str) -> UnsafePath:
    message = f"'{path}' {why}; Trainyard does not follow links a run may have planted"
    return UnsafePath(f"{field}: {message}", fields=[{"field": field, "message": message}])


def _step_into(fd: int, name: str, *, shown: str, field: str, create: bool) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
        try:
            os.mkdir(name, 0o755, dir_fd=fd)
        except FileExistsError:
            pass
        return _step_into(fd, name, shown=shown, field=field, create=False)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        if stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            raise _refuse(field, shown, "is a symbolic link") from None
        raise NotADirectoryError(errno.ENOTDIR, f"'{shown}' is not a folder") from None


def open_dir(root: Path, rel: str | PurePosixPath = ".", *, create: bool = False,
             field: str = "path") -> int:
    """A descriptor of `root/rel`, neither `root` nor a component of `rel` a link (`create`:
    make missing folders)."""
    try:
        fd = os.open(root, DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and root.is_symlink():
            raise _refuse(field, root.name, "is a symbolic link") from None
        raise
    walked: list[str] = []
    try:
        for part in _parts(rel):
            walked.append(part)
            nxt = _step_into(fd, part, shown="/".join(walked), field=field, create=create)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def lstat_at(root: Path, rel: str | PurePosixPath, *, field: str = "path") -> os.stat_result:
    """The stat of `root/rel` itself (a link is reported, not followed), reached without links."""
    parts = _parts(rel)
    if not parts:
        return os.stat(root, follow_symlinks=False)
    fd = open_dir(root, "/".join(parts[:-1]), field=field)
    try:
        return os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


def open_file(root: Path, rel: str | PurePosixPath, *,
              field: str = "path") -> tuple[int, os.stat_result]:
    """A read descriptor of the regular file `root/rel` and its fstat; links refused."""
    parts = _parts(rel)
    if not parts:
        raise IsADirectoryError(f"{root} is a folder")
    fd = open_dir(root, "/".join(parts[:-1]), field=field)
    try:
        before = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        why = refusal(before)
        if why is not None:
            raise _refuse(field, str(rel), why)
        if stat.S_ISDIR(before.st_mode):
            raise IsADirectoryError(f"'{rel}' is a folder")
        try:
            file_fd = os.open(parts[-1], FILE_FLAGS, dir_fd=fd)
        except OSError as exc:  # swapped for a link since the lstat
            raise _refuse(field, str(rel), "changed while it was opened") from exc
    finally:
        os.close(fd)
    info = os.fstat(file_fd)
    why = refusal(info) or (None if stat.S_ISREG(info.st_mode) else "is not a regular file")
    if why is not None:
        os.close(file_fd)
        raise _refuse(field, str(rel), why)
    return file_fd, info


def read_chunks(fd: int, *, chunk: int = CHUNK, start: int | None = None,
                length: int | None = None) -> Iterator[bytes]:
    """The bytes of an open descriptor from `start` (default: its current offset), at most
    `length` of them; it is closed after (or when the iterator is dropped unread)."""
    file = os.fdopen(fd, "rb", buffering=0)

    def chunks() -> Iterator[bytes]:
        with file:
            if start is not None:
                file.seek(start)
            left = length
            while left is None or left > 0:
                block = file.read(chunk if left is None else min(chunk, left))
                if not block:
                    break
                if left is not None:
                    left -= len(block)
                yield block

    return chunks()


def copy_out(fd: int, dest: Path) -> int:
    """Copy an open descriptor's data to a new file `dest` (platform-owned); closes `fd`."""
    written = 0
    with dest.open("wb") as out:
        for block in read_chunks(fd):
            out.write(block)
            written += len(block)
    return written


def walk(root: Path, rel: str | PurePosixPath = ".", *, field: str = "path",
         max_depth: int | None = None) -> Iterator[Node]:
    """Every folder and file below `root/rel` (down to `max_depth` levels), depth first by name;
    links and special files are yielded with `refused` set and never entered or read."""
    fd = open_dir(root, rel, field=field)
    yield from _walk_fd(fd, PurePosixPath(*_parts(rel)), depth=max_depth)


def _walk_fd(fd: int, here: PurePosixPath, *, depth: int | None) -> Iterator[Node]:
    try:
        with os.scandir(fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = here / entry.name
            info = entry.stat(follow_symlinks=False)
            why = refusal(info)
            is_dir = stat.S_ISDIR(info.st_mode)
            yield Node(path, is_dir=is_dir, size=0 if is_dir else info.st_size,
                       mtime=info.st_mtime, refused=why)
            if is_dir and why is None and depth != 1:
                try:
                    sub = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
                except OSError:  # replaced by a link since it was listed: not entered
                    continue
                yield from _walk_fd(sub, path, depth=None if depth is None else depth - 1)
    finally:
        os.close(fd)


def check_tree(root: Path, rel: str | PurePosixPath, *, field: str = "path") -> None:
    """Refuse (422 naming the entry) a folder holding any link or special file."""
    for node in walk(root, rel, field=field):
        if node.refused is not None:
            raise _refuse(field, str(node.path), node.refused)


def replace_file(root: Path, folder: str | PurePosixPath, name: str, source: Path, *,
                 field: str = "path") -> Path:
    """Write a copy of `source` as `root/folder/name`, creating folders, following no link.

    The copy goes to a fresh temporary name and is renamed over `name`: a link planted at `name`
    is replaced, never written through.
    """
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"{name!r} is not a file name")
    fd = open_dir(root, folder, create=True, field=field)
    tmp = f".{name}.{secrets.token_hex(6)}.tmp"
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o644, dir_fd=fd)
        try:
            with source.open("rb") as src, os.fdopen(out, "wb") as dst:
                while block := src.read(CHUNK):
                    dst.write(block)
            os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=fd)
            except FileNotFoundError:
                pass
            raise
    finally:
        os.close(fd)
    return root / PurePosixPath(*_parts(folder)) / name
