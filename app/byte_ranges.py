"""Resumable downloads of a checked descriptor: one byte range per request (RFC 9110 §14).

`Range: bytes=a-b`, `bytes=a-` and `bytes=-n` answer 206 with `Content-Range`; a range that
starts past the end answers 416 with `Content-Range: bytes */size`. Several ranges in one
header, another unit or a malformed value are ignored (RFC 9110 allows it): the whole file,
200. `If-Range` holding the file's current ETag or Last-Modified keeps the range; any other
value means the file changed, and the whole file is sent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from email.utils import formatdate

from fastapi.responses import StreamingResponse

from app import safe_files
from app.errors import AppError

# A number with more digits than this is past the end of any file (and int() of thousands of
# digits would raise): it is treated as "very large".
_MAX_DIGITS = 18
_HUGE = 10**_MAX_DIGITS


class RangeNotSatisfiable(AppError):
    """A 416: the requested range starts past the end of the file (`Content-Range` names its
    size)."""

    status = 416
    code = "range_not_satisfiable"

    def __init__(self, detail: str, *, size: int) -> None:
        super().__init__(detail)
        self.size = size

    def response_headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.size}", "Accept-Ranges": "bytes"}


@dataclass(frozen=True)
class ByteRange:
    """Bytes `start` to `end` of a file, both included."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def _number(text: str) -> int | None:
    text = text.strip()
    if not text or not text.isascii() or not text.isdigit():
        return None
    return _HUGE if len(text) > _MAX_DIGITS else int(text)


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range of `header` within a file of `size` bytes; None for the whole file
    (no header, several ranges, another unit, malformed). Raises RangeNotSatisfiable."""
    if header is None:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.partition("-")
    if not dash:
        return None
    unsatisfiable = RangeNotSatisfiable(
        f"Range: '{header.strip()}' is outside the file's {size} bytes; ask for bytes 0-"
        f"{max(size - 1, 0)}", size=size)
    if not first.strip():  # a suffix: the last n bytes
        count = _number(last)
        if count is None:
            return None
        if count == 0 or size == 0:
            raise unsatisfiable
        return ByteRange(max(size - count, 0), size - 1)
    start = _number(first)
    end = _number(last) if last.strip() else _HUGE
    if start is None or end is None or end < start:
        return None
    if start >= size:
        raise unsatisfiable
    return ByteRange(start, min(end, size - 1))


def validators(info: os.stat_result) -> dict[str, str]:
    """ETag and Last-Modified of a file from its fstat (a replaced file has another inode)."""
    return {"ETag": f'"{info.st_ino:x}-{info.st_mtime_ns:x}-{info.st_size:x}"',
            "Last-Modified": formatdate(info.st_mtime, usegmt=True)}


def _if_range_holds(if_range: str | None, current: dict[str, str]) -> bool:
    if if_range is None:
        return True
    value = if_range.strip()
    # Weak ETags never match (RFC 9110 §13.1.5); a date must be the exact Last-Modified.
    return value in (current["ETag"], current["Last-Modified"])


def file_response(fd: int, info: os.stat_result, *, media_type: str,
                  headers: dict[str, str], range_header: str | None,
                  if_range: str | None) -> StreamingResponse:
    """Stream the checked descriptor `fd` (closed after): whole (200) or one range (206)."""
    current = validators(info)
    out = {**headers, **current, "Accept-Ranges": "bytes"}
    try:
        wanted = parse_range(range_header, info.st_size) \
            if _if_range_holds(if_range, current) else None
    except RangeNotSatisfiable:
        os.close(fd)
        raise
    if wanted is None:
        out["Content-Length"] = str(info.st_size)
        return StreamingResponse(safe_files.read_chunks(fd), media_type=media_type,
                                 headers=out)
    out["Content-Length"] = str(wanted.length)
    out["Content-Range"] = f"bytes {wanted.start}-{wanted.end}/{info.st_size}"
    return StreamingResponse(safe_files.read_chunks(fd, start=wanted.start,
                                                    length=wanted.length),
                             status_code=206, media_type=media_type, headers=out)
