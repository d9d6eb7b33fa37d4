"""Where files live under the data dir: repos, datasets, models, trainings."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path, PurePosixPath

from app.config import get_settings
from app.errors import Invalid

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "samples"
MAX_NAME_BYTES = 255  # a file name on Linux file systems
MAX_PATH_CHARS = 1024


def data_root() -> Path:
    """The data dir (absolute)."""
    return get_settings().data_dir.resolve()


def repo_dir(owner: str, name: str) -> Path:
    """A repository's files."""
    return data_root() / "repos" / owner / name


def dataset_dir(owner: str, name: str) -> Path:
    """A dataset's files (`datasets/<owner>/<name>/` in configs)."""
    return data_root() / "datasets" / owner / name


def model_dir(owner: str, name: str) -> Path:
    """A model's files (`models/<owner>/<name>/` in configs)."""
    return data_root() / "models" / owner / name


def training_dir(training_id: int) -> Path:
    """Everything of one training: `workspace/` (code snapshot and outputs) and `log.txt`."""
    return data_root() / "trainings" / str(training_id)


def training_workspace(training_id: int) -> Path:
    """The code snapshot the training runs in; outputs are written inside it."""
    return training_dir(training_id) / "workspace"


def training_log(training_id: int) -> Path:
    """The merged stdout/stderr of the training."""
    return training_dir(training_id) / "log.txt"


def envs_dir() -> Path:
    """Cached Python environments built for pip-requirements files."""
    return data_root() / "envs"


# A unix socket's path holds at most 107 bytes; boxes add about 45 below the runtime root.
_RUNTIME_ROOT_MAX = 60


def runtime_root() -> Path:
    """Where the runtime area lives: `TRAINYARD_RUNTIME_DIR`, else `<data>/run`, else (a data
    dir too deep for unix socket paths) a folder of this uid's own in the system's temp dir."""
    configured = get_settings().runtime_dir
    if configured is not None:
        return configured.resolve()
    inside = data_root() / "run"
    if len(str(inside)) <= _RUNTIME_ROOT_MAX:
        return inside
    digest = hashlib.sha256(str(data_root()).encode()).hexdigest()[:12]
    short = Path(tempfile.gettempdir()) / f"trainyard-{os.geteuid()}-{digest}"
    try:
        short.mkdir(mode=0o700)
    except FileExistsError:
        pass
    # The temp dir is shared: use the folder only if it is ours, a real folder and private.
    info = short.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise OSError(f"{short} is not a private folder of this user: remove it, or set "
                      "TRAINYARD_RUNTIME_DIR to a short private path")
    return short


def runtime_dir(*parts: str) -> Path:
    """A folder of the runtime area (service sockets, sandbox folders), mode 0700.

    Only the platform's uid may open it: the unix sockets of Aim UIs and predictors live
    below, so no other local user and no sandboxed run (which never has it mounted) reaches them.
    """
    path = runtime_root()
    for part in (None, *parts):
        path = path if part is None else path / part
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)  # mkdir's mode is masked by the umask
    return path


def tmp_dir() -> Path:
    """Scratch space on the data dir's filesystem, so finished work can be renamed into place."""
    path = data_root() / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def staging_dir(prefix: str) -> Path:
    """A fresh temporary folder under `tmp_dir()`."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_dir()))


def _changed_since(path: str, cutoff: float) -> bool:
    # ctime as well as mtime: a copy or an extraction sets old mtimes on what it writes, but
    # every write, rename or utime of an inode sets its ctime to now. Links are not followed.
    def fresh(entry: str) -> bool:
        try:
            st = os.lstat(entry)
        except FileNotFoundError:  # removed meanwhile: its folder changed, which counts
            return True
        return max(st.st_mtime, st.st_ctime) >= cutoff

    if fresh(path):
        return True
    for folder, dirs, files in os.walk(path):  # os.walk does not follow links by default
        if any(fresh(os.path.join(folder, name)) for name in (*dirs, *files)):
            return True
    return False


def sweep_tmp(*, older_than_s: float) -> list[str]:
    """Remove the entries of `<data>/tmp` in which nothing changed for `older_than_s`: what a
    killed upload, import or copy left behind. One still being written is never removed (its
    newest change is recent); the names removed."""
    root = data_root() / "tmp"
    if not root.is_dir():
        return []
    cutoff = time.time() - older_than_s
    removed: list[str] = []
    for entry in os.scandir(root):
        if _changed_since(entry.path, cutoff):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
        removed.append(entry.name)
    return removed


def relative_path(raw: str, *, field: str) -> PurePosixPath:
    """A user-given path inside a folder: relative, no `..`, no backslashes."""
    path = PurePosixPath(raw.strip("/"))
    if "\x00" in raw or len(raw) > MAX_PATH_CHARS \
            or any(len(p.encode()) > MAX_NAME_BYTES for p in path.parts):
        raise Invalid(f"{field}: not a usable path (a NUL byte, a name over {MAX_NAME_BYTES} "
                      f"bytes or a path over {MAX_PATH_CHARS} characters)",
                      fields=[{"field": field, "message": "unusable path"}])
    if raw.startswith("/") or "\\" in raw or any(p in ("..", "") for p in path.parts) \
            or str(path) in ("", "."):
        raise Invalid(f"{field}: '{raw}' must be a relative path inside the folder "
                      "(no '..', no leading '/')",
                      fields=[{"field": field, "message": "path escapes the folder"}])
    return path


def resolve_inside(root: Path, rel: PurePosixPath, *, field: str) -> Path:
    """`root/rel`, refusing anything (such as a link) that resolves outside `root`."""
    target = (root / rel).resolve()
    if not target.is_relative_to(root.resolve()):
        raise Invalid(f"{field}: '{rel}' points outside its folder",
                      fields=[{"field": field, "message": "path escapes the folder"}])
    return target


def remove_tree(path: Path) -> None:
    """Delete a folder if present."""
    shutil.rmtree(path, ignore_errors=True)


def _skip_links(folder: str, names: list[str]) -> set[str]:
    # Repositories hold no links (uploads refuse them); never follow one out of the tree.
    return {n for n in names if n == "__pycache__" or (Path(folder) / n).is_symlink()}


def copy_tree_atomic(src: Path, dest: Path) -> None:
    """Copy `src` to `dest` via a staging folder, so `dest` is complete or absent."""
    stage = staging_dir("copy-")
    try:
        shutil.copytree(src, stage / "tree", ignore=_skip_links)
        dest.parent.mkdir(parents=True, exist_ok=True)
        (stage / "tree").rename(dest)
    finally:
        remove_tree(stage)
