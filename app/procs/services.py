"""Boxes and sandboxes of the long-lived services the API starts: predictors and Aim UIs.

A service reads untrusted things (a repository's `inference/app.py`, a training's checkpoint
and Aim repository), so it runs in the sandbox whenever `app.procs.sandbox.state()` allows.
Each service process gets a box in the data dir's runtime area:

- `<runtime>/<kind>/<token>/` is the platform's (0700): what only the platform
  writes or reads about the service (its records, its log before it had a job);
- `.../box/` is the service's only writable folder, handed to the sandbox uid: its unix
  socket, which it creates itself, and its HOME. Nothing else of the runtime area is mounted in
  its sandbox, so no other run reaches its socket, and no other local user can enter the
  platform's folder around it.

In the sandbox a service sees the runtime read-only, the paths its caller names read-only,
its box read-write and a private /tmp; it has no network, its own PID namespace (no platform
process is visible), an environment made from scratch and the memory, file size and open
files limits of `service_limits()`.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from app.config import get_settings
from app.procs import sandbox as sandboxing

BOX = "box"
OWNER_FILE = "owner"  # the pid of the API process that made the box
# sun_path holds 108 bytes with the final NUL; the name of the socket (and of the temporary
# name it may be created under) must fit below the box.
SOCKET_PATH_MAX = 107
LONGEST_SOCKET_NAME = len("predictor.sock.tmp")


@dataclass(frozen=True)
class Box:
    """The folders of one service process."""

    root: Path  # the platform's (0700)

    @property
    def inner(self) -> Path:
        """The service's own writable folder: its socket and HOME."""
        return self.root / BOX

    @property
    def home(self) -> Path:
        """The service's HOME, private to it."""
        return self.inner / "home"


def new_box(parent: Path) -> Box:
    """A fresh box under `parent` (a runtime-area folder the platform owns, mode 0700)."""
    root = parent / secrets.token_hex(4)
    longest = len(str(root / BOX)) + 1 + LONGEST_SOCKET_NAME
    if longest > SOCKET_PATH_MAX:
        raise OSError(f"the runtime folder's path is too long for unix sockets ({longest} > "
                      f"{SOCKET_PATH_MAX} bytes below {parent}): set a shorter "
                      "TRAINYARD_RUNTIME_DIR")
    root.mkdir(mode=0o700, parents=True)
    (root / OWNER_FILE).write_text(str(os.getpid()))
    box = Box(root)
    box.inner.mkdir(mode=0o700)
    box.home.mkdir(mode=0o700)
    return box


def remove_orphan_boxes(parent: Path) -> int:
    """Delete the boxes under `parent` whose API process is gone (killed, say); how many."""
    removed = 0
    for root in parent.iterdir() if parent.is_dir() else []:
        try:
            owner = int((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not psutil.pid_exists(owner):
            shutil.rmtree(root, ignore_errors=True)
            removed += 1
    return removed


def hand_over(box: Box) -> None:
    """Give the box's inner folder (and all in it) to the sandbox uid, when it is another."""
    sandboxing.make_writable(box.inner)


def service_limits() -> sandboxing.Limits:
    """The rlimits of each predictor and Aim UI process."""
    settings = get_settings()
    return sandboxing.Limits(memory_mb=settings.service_memory_mb, file_size_mb=1024,
                             open_files=4096)


def service_sandbox(box: Box, *, cwd: Path, pythons: Sequence[str],
                    read_only: Sequence[Path]) -> sandboxing.SandboxSpec:
    """The sandbox of one service: `read_only` paths, its box read-write, no network."""
    return sandboxing.SandboxSpec(cwd=cwd, pythons=tuple(pythons), ro_paths=tuple(read_only),
                                  rw_paths=(box.inner,), network=False,
                                  limits=service_limits(), tmp_size_mb=512)


def check_plain_file(path: Path, *, inside: Path) -> None:
    """Refuse to mount `path` unless it is a regular file below `inside`, reached without a
    link and with one name only (not a hard link a run could have planted); raises OSError."""
    _check_no_links(path, inside=inside)
    info = os.lstat(path)
    if not os.path.isfile(path) or info.st_nlink != 1:
        raise OSError(f"{path} is not a plain file")


def check_plain_folder(path: Path, *, inside: Path) -> None:
    """Refuse to mount `path` unless it is a folder below `inside`, reached without a link."""
    _check_no_links(path, inside=inside)
    if not os.path.isdir(path):
        raise OSError(f"{path} is not a folder")


def _check_no_links(path: Path, *, inside: Path) -> None:
    # The run that wrote these files has ended, so nothing changes them between this check and
    # the mount; bwrap would follow a link here, so it must not meet one.
    try:
        below = Path(os.path.abspath(path)).relative_to(os.path.abspath(inside))
    except ValueError:
        raise OSError(f"{path} lies outside {inside}") from None
    if Path(os.path.realpath(path)) != Path(os.path.realpath(inside)) / below:
        raise OSError(f"{path} is reached through a link")
