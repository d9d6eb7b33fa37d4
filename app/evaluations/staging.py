"""What an Aim process reads, copied into its box before it gets its spec.

The copies never follow a link: symbolic links, hard-linked files (`st_nlink > 1`) and
anything but regular files and folders are left out, checked on the opened descriptor. A
training's Aim repository is copied, not mounted, so that Aim may write its index and UI
tables into it without touching the training's files, and so that a process started ahead
of need (the spare) can serve it.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

from app.evaluations.aim_data import AIM_DIR
from app.evaluations.aim_process import Stager
from app.evaluations.service import Plan
from app.evaluations.sources import Subject

_CHUNK = 1024 * 1024


def copy_file(src: Path, dest: Path) -> bool:
    """Copy a regular, singly-linked file without following a link; False if it is not one."""
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return False
        with dest.open("xb") as out:
            shutil.copyfileobj(source, out, _CHUNK)
    return True


def copy_tree(src: Path, dest: Path) -> None:
    """Copy the folder `src` to `dest` (new), regular files and folders only."""
    dest.mkdir(parents=True)
    with os.scandir(src) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                copy_tree(Path(entry.path), dest / entry.name)
            elif entry.is_file(follow_symlinks=False):
                copy_file(Path(entry.path), dest / entry.name)


def copy_aim_repo(folder: Path, dest: Path) -> None:
    """Copy the Aim repository in `folder` (its `.aim`) to `dest`."""
    if not os.path.isdir(folder / AIM_DIR) or os.path.islink(folder / AIM_DIR):
        raise FileNotFoundError(f"{folder} holds no Aim repository")
    dest.mkdir(parents=True, exist_ok=True)
    copy_tree(folder / AIM_DIR, dest / AIM_DIR)


def stager(subject: Subject, plan: Plan) -> Stager:
    """The function that fills a box with what `plan` serves and returns the Aim spec."""
    def stage(box: Path) -> dict[str, Any]:
        repo = box / "repo"
        build: dict[str, Any] | None = None
        if plan.build is None:
            assert plan.folder is not None
            copy_aim_repo(Path(plan.folder), repo)
        else:
            inputs = box / "in"
            inputs.mkdir()
            staged = []
            for number, source in enumerate(plan.build["sources"]):
                dest = inputs / str(number)
                if source["kind"] == "log":
                    copy_file(Path(source["path"]), dest)
                else:
                    copy_aim_repo(Path(source["path"]), dest)
                staged.append({**source, "path": str(dest)})
            build = {**plan.build, "sources": staged}
        return {"folder": str(repo), "base_path": subject.base_path, "build": build}
    return stage
