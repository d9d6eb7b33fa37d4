"""Download a dataset archive over HTTP(S), verifying its published checksum."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx

from app.errors import AppError, Invalid

CIFAR10_BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # as published on the CIFAR page
CHUNK = 1024 * 1024

Progress = Callable[[int, int], None]


class DownloadFailed(AppError):
    """The remote server could not be reached or answered with an error."""

    status = 502
    code = "download_failed"


class ChecksumMismatch(Invalid):
    """The downloaded bytes are not the ones the checksum describes."""

    code = "checksum_mismatch"


def _expected(sha256: str | None, md5: str | None) -> tuple[str, str] | None:
    for name, value in (("sha256", sha256), ("md5", md5)):
        if value:
            size = hashlib.new(name).digest_size * 2
            digest = value.strip().lower()
            if len(digest) != size or any(c not in "0123456789abcdef" for c in digest):
                raise Invalid(f"{name} must be {size} hex digits",
                              fields=[{"field": name, "message": f"{size} hex digits"}])
            return name, digest
    return None


def download(url: str, dest_file: Path, *, sha256: str | None = None, md5: str | None = None,
             progress: Progress | None = None, max_bytes: int | None = None,
             timeout_s: float = 60.0) -> Path:
    """Stream `url` to `dest_file`; a checksum mismatch removes the file and raises."""
    expected = _expected(sha256, md5)
    digest = hashlib.new(expected[0] if expected else "sha256")
    dest_file.parent.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(prefix=f".{dest_file.name}.", suffix=".part",
                                     dir=dest_file.parent)
    part = Path(part_name)
    try:
        with os.fdopen(fd, "wb") as out, httpx.stream(
                "GET", url, follow_redirects=True, timeout=timeout_s) as response:
            if response.status_code != 200:
                raise DownloadFailed(f"GET {url} answered {response.status_code}")
            total = int(response.headers.get("content-length") or 0)
            done = 0
            for chunk in response.iter_bytes(CHUNK):
                done += len(chunk)
                if max_bytes is not None and done > max_bytes:
                    raise DownloadFailed(f"{url} is larger than {max_bytes} bytes", status=413,
                                         code="too_large")
                digest.update(chunk)
                out.write(chunk)
                if progress:
                    progress(done, total)
        if expected and digest.hexdigest() != expected[1]:
            raise ChecksumMismatch(
                f"{url}: {expected[0]} is {digest.hexdigest()}, expected {expected[1]}; "
                "the file was removed",
                fields=[{"field": expected[0], "message": "does not match the download"}])
        part.replace(dest_file)
    except httpx.HTTPError as exc:
        raise DownloadFailed(f"GET {url} failed: {exc}") from exc
    finally:
        part.unlink(missing_ok=True)
    return dest_file
