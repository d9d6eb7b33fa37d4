"""Safe reading of user archives (.zip, .tar, .tar.gz): no escapes, no links, capped sizes.

`safe_extract` writes an archive into a new folder; `iter_entries` streams its files without
touching the disk (the dataset importer decodes images straight from it). Both apply the same
rules: paths stay inside (`..`, absolute paths and drive letters refused), links, devices and
fifos refused, entry count and *uncompressed* bytes capped while reading (zip bombs).

From the HTTP layer: pass `UploadFile.file` (a seekable spooled file, capped by
`app.uploads`) or a saved copy to `safe_extract(src, dest, max_bytes=..., max_files=...)` in a
worker thread (it blocks).
`dest` must not exist; it appears only when extraction succeeded.
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from app.errors import Invalid, TooLarge

ACCEPTED_FORMATS = ".zip, .tar, .tar.gz/.tgz (also .tar.bz2, .tar.xz)"
CHUNK = 1024 * 1024
# Finder adds resource forks under this folder; they are never part of the user's content.
_MACOS_METADATA = "__MACOSX"
_DRIVE = re.compile(r"^[A-Za-z]:")
# Corrupt compressed data surfaces as any of these; OSError only without an errno (gzip's).
_FORMAT_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError,
                  OSError)


@dataclass(frozen=True)
class ExtractStats:
    """What an extraction wrote."""

    files: int
    bytes: int
    stripped_root: str | None = None


def _refuse(field: str, name: str, why: str) -> Invalid:
    return Invalid(f"archive entry {name!r}: {why}",
                   fields=[{"field": field, "message": f"{name!r}: {why}"}])


def _is_format_error(exc: BaseException) -> bool:
    return isinstance(exc, _FORMAT_ERRORS) and not (
        isinstance(exc, OSError) and not isinstance(exc, tarfile.TarError)
        and exc.errno is not None)


class _Budget:
    """Counts entries and uncompressed bytes as they are read, refusing past the caps."""

    def __init__(self, *, max_bytes: int, max_files: int, field: str) -> None:
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.field = field
        self.entries = 0
        self.bytes = 0

    def entry(self, name: str) -> None:
        self.entries += 1
        if self.entries > self.max_files:
            raise TooLarge(
                f"archive has more than {self.max_files} entries (refused at {name!r})",
                fields=[{"field": self.field, "message": f"at most {self.max_files} entries"}],
            )

    def declared(self, name: str, size: int) -> None:
        """Refuse up front when a size announced by a header would already pass the cap."""
        if self.bytes + size > self.max_bytes:
            raise TooLarge(
                f"archive expands to more than {self.max_bytes} bytes (refused at {name!r})",
                fields=[{"field": self.field,
                         "message": f"at most {self.max_bytes} bytes uncompressed"}],
            )

    def add(self, name: str, size: int) -> None:
        """Count bytes actually read."""
        self.declared(name, size)
        self.bytes += size


class Entry:
    """One folder or regular file; its data can be read while it is the current entry."""

    def __init__(self, path: PurePosixPath, *, name: str, is_dir: bool, mode: int, offset: int,
                 opener: Callable[[], IO[bytes] | None], budget: _Budget,
                 size: int = 0) -> None:
        self.path = path
        self.name = name
        self.is_dir = is_dir
        self.size = size  # as declared by the archive's header (the data may differ)
        self.executable = bool(mode & 0o111)
        self.offset = offset  # bytes of the source consumed before this entry (for progress)
        self._opener = opener
        self._budget = budget

    def chunks(self) -> Iterator[bytes]:
        """The data, counted against the byte cap as it is decompressed."""
        try:
            src = self._opener()
            if src is None:  # pragma: no cover - only folders have no data
                return
            with src:
                while chunk := src.read(CHUNK):
                    self._budget.add(self.name, len(chunk))
                    yield chunk
        except Exception as exc:
            if not _is_format_error(exc):
                raise
            raise _refuse(self._budget.field, self.name, f"cannot be read ({exc})") from exc

    def read_bytes(self, *, limit: int | None = None) -> bytes:
        """The whole data; past `limit` bytes (declared or read) a 413 naming the entry."""
        if limit is not None and self.size > limit:
            raise self._too_large(limit)
        data = bytearray()
        for chunk in self.chunks():
            data.extend(chunk)
            if limit is not None and len(data) > limit:
                raise self._too_large(limit)
        return bytes(data)

    def _too_large(self, limit: int) -> TooLarge:
        message = f"{self.name!r} is larger than the limit of {limit} bytes per file"
        return TooLarge(f"archive entry {message}",
                        fields=[{"field": self._budget.field, "message": message}])

    def copy_to(self, target: Path) -> int:
        """Write the data to `target`; returns the byte count."""
        written = 0
        with open(target, "wb") as out:
            for chunk in self.chunks():
                out.write(chunk)
                written += len(chunk)
        target.chmod(0o755 if self.executable else 0o644)
        return written


def safe_relative(name: str, *, field: str = "archive") -> PurePosixPath | None:
    """The entry's path inside the archive, or None for the root itself; refuses escapes."""
    if "\x00" in name:
        raise _refuse(field, name, "NUL byte in name")
    # Archives made on Windows may use backslashes; treat them as separators so `..\x` is caught.
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or _DRIVE.match(normalized):
        raise _refuse(field, name, "absolute paths are not allowed")
    parts = [p for p in normalized.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(field, name, "'..' would escape the destination folder")
    return PurePosixPath(*parts) if parts else None


def _zip_entries(raw: IO[bytes], budget: _Budget) -> Iterator[Entry]:
    with zipfile.ZipFile(raw) as zf:
        infos = zf.infolist()
        # Headers can lie downwards (real bytes are counted while reading), but a declared
        # total over the cap is refused before anything is decompressed.
        declared = 0
        for info in infos:
            budget.declared(info.filename, declared + info.file_size)
            declared += info.file_size
        for info in infos:
            name = info.filename
            budget.entry(name)
            rel = safe_relative(name, field=budget.field)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise _refuse(budget.field, name, "symbolic links are not allowed")
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise _refuse(budget.field, name, "device files, fifos and other special files "
                              "are not allowed")
            if rel is None or rel.parts[0] == _MACOS_METADATA:
                continue
            if info.flag_bits & 0x1:
                raise _refuse(budget.field, name, "encrypted entries are not supported")
            yield Entry(rel, name=name, is_dir=info.is_dir(), mode=mode,
                        offset=info.header_offset, opener=partial(zf.open, info), budget=budget,
                        size=info.file_size)


def _tar_entries(raw: IO[bytes], budget: _Budget) -> Iterator[Entry]:
    try:
        tf = tarfile.open(fileobj=raw, mode="r:*")  # noqa: SIM115 - closed by `with tf` below
    except tarfile.ReadError as exc:
        message = f"not a supported archive; accepted formats: {ACCEPTED_FORMATS}"
        raise Invalid(message, fields=[{"field": budget.field, "message": message}]) from exc
    with tf:
        for member in tf:
            name = member.name
            budget.entry(name)
            rel = safe_relative(name, field=budget.field)
            if member.issym() or member.islnk():
                kind = "symbolic" if member.issym() else "hard"
                raise _refuse(budget.field, name, f"{kind} links are not allowed")
            if not (member.isfile() or member.isdir()):
                raise _refuse(budget.field, name, "device files, fifos and other special files "
                              "are not allowed")
            if rel is None or rel.parts[0] == _MACOS_METADATA:
                continue
            budget.declared(name, member.size)
            yield Entry(rel, name=name, is_dir=member.isdir(), mode=member.mode,
                        offset=raw.tell(), opener=partial(tf.extractfile, member), budget=budget,
                        size=member.size)


def iter_entries(archive: Path | IO[bytes], *, max_bytes: int, max_files: int,
                 field: str = "archive") -> Iterator[Entry]:
    """Stream the folders and regular files of a .zip/.tar/.tar.gz, refusing unsafe entries."""
    budget = _Budget(max_bytes=max_bytes, max_files=max_files, field=field)
    with ExitStack() as stack:
        raw: IO[bytes] = stack.enter_context(open(archive, "rb")) if isinstance(
            archive, Path) else archive
        raw.seek(0)
        is_zip = zipfile.is_zipfile(raw)
        raw.seek(0)
        try:
            yield from (_zip_entries(raw, budget) if is_zip else _tar_entries(raw, budget))
        except Exception as exc:
            if not _is_format_error(exc):
                raise
            message = f"damaged archive ({exc}); accepted formats: {ACCEPTED_FORMATS}"
            raise Invalid(message, fields=[{"field": field, "message": message}]) from exc


def _file_opener(path: Path) -> Callable[[], IO[bytes]]:
    def open_file() -> IO[bytes]:
        return path.open("rb")
    return open_file


def iter_folder(folder: Path, *, max_bytes: int, max_files: int,
                field: str = "path") -> Iterator[Entry]:
    """The same entries for a folder on the server; symbolic links are skipped."""
    budget = _Budget(max_bytes=max_bytes, max_files=max_files, field=field)
    offset = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        here = Path(dirpath)
        for name in [*dirnames, *sorted(filenames)]:
            path = here / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode) or not (
                    stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                continue
            rel = PurePosixPath(path.relative_to(folder).as_posix())
            budget.entry(str(rel))
            yield Entry(rel, name=str(rel), is_dir=stat.S_ISDIR(info.st_mode),
                        mode=info.st_mode, offset=offset, opener=_file_opener(path),
                        budget=budget, size=info.st_size)
            offset += 0 if stat.S_ISDIR(info.st_mode) else info.st_size


@contextmanager
def building_dir(dest: Path) -> Iterator[Path]:
    """A temp folder beside `dest` that is removed unless the caller renamed it into place."""
    if dest.exists():
        raise FileExistsError(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _make_dir(root: Path, rel: PurePosixPath, name: str, field: str) -> None:
    try:
        root.joinpath(rel).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise _refuse(field, name, "conflicts with a file of the same name") from exc


def safe_extract(archive: Path | IO[bytes], dest: Path, *, max_bytes: int, max_files: int,
                 strip_single_root: bool | Callable[[Path], bool] = True,
                 field: str = "archive") -> ExtractStats:
    """Extract a .zip/.tar/.tar.gz into `dest` (which must not exist) atomically and safely.

    A single top folder is unpacked as its contents when `strip_single_root` is true, or
    when it is a function that returns true for that folder.
    """
    files = total = 0
    with building_dir(dest) as tmp:
        content = tmp / "content"
        content.mkdir()
        for entry in iter_entries(archive, max_bytes=max_bytes, max_files=max_files,
                                  field=field):
            if entry.is_dir:
                _make_dir(content, entry.path, entry.name, field)
                continue
            _make_dir(content, entry.path.parent, entry.name, field)
            target = content.joinpath(entry.path)
            if target.is_dir():
                raise _refuse(field, entry.name, "conflicts with a folder of the same name")
            total += entry.copy_to(target)
            files += 1
        top = list(content.iterdir())
        root = top[0] if len(top) == 1 and top[0].is_dir() and (
            strip_single_root(top[0]) if callable(strip_single_root) else strip_single_root
        ) else None
        (root or content).rename(dest)
    return ExtractStats(files=files, bytes=total, stripped_root=root.name if root else None)
