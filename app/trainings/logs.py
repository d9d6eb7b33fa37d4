"""Reading a training's log: byte ranges, and a Server-Sent Events follower."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

from app.models import TrainingStatus

CHUNK = 256 * 1024
POLL_S = 0.05
STATUS_EVERY_S = 0.5
PARTIAL_LINE_AFTER_S = 0.5


def read_range(path: Path, *, offset: int, limit: int) -> tuple[bytes, int, int]:
    """Up to `limit` bytes from `offset` (negative: from the end); returns data, start, size."""
    size = path.stat().st_size if path.exists() else 0
    start = max(0, size + offset) if offset < 0 else min(offset, size)
    if size == start:
        return b"", start, size
    with path.open("rb") as f:
        f.seek(start)
        return f.read(min(limit, size - start)), start, size


class SharedStatus:
    """A training's status read at most once per `ttl_s`, shared by every viewer of its log."""

    def __init__(self, read: Callable[[int], str | None], *, ttl_s: float = STATUS_EVERY_S
                 ) -> None:
        self.read = read
        self.ttl_s = ttl_s
        self.cache: dict[int, tuple[float, str | None]] = {}
        self.locks: dict[int, asyncio.Lock] = {}

    async def get(self, training_id: int) -> str | None:
        """The status (None once the training is deleted), from the cache when fresh."""
        loop = asyncio.get_running_loop()
        lock = self.locks.setdefault(training_id, asyncio.Lock())
        async with lock:
            cached = self.cache.get(training_id)
            if cached is not None and loop.time() - cached[0] < self.ttl_s:
                return cached[1]
            status = await loop.run_in_executor(None, self.read, training_id)
            self.cache[training_id] = (loop.time(), status)
            if len(self.cache) > 1000:  # forget trainings nobody watched for a while
                stale = [k for k, (t, _) in self.cache.items() if loop.time() - t > 60]
                for key in stale:
                    self.cache.pop(key, None)
                    self.locks.pop(key, None)
            return status


class _Tail:
    """An open log file read forward from a byte offset, a chunk at a time."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.pos = offset
        self.file: BinaryIO | None = None

    def read(self) -> bytes:
        if self.file is None:
            if not self.path.exists():
                return b""
            self.file = self.path.open("rb")
            # A resume offset past the end (a stale or forged Last-Event-ID) starts at the end.
            self.pos = min(self.pos, os.fstat(self.file.fileno()).st_size)
            self.file.seek(self.pos)
        return self.file.read(CHUNK)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


async def stream_events(path: Path, *, offset: int,
                        get_status: Callable[[], Awaitable[str | None]]
                        ) -> AsyncIterator[dict[str, str]]:
    """SSE events carrying the log's new lines until the training is finished.

    A `log` event's id is the byte offset after its data, so a client that resumes with
    `Last-Event-ID` continues exactly there. `status` events report status changes, and an
    `end` event closes the stream once the training is finished and the log is drained.
    Only whole lines are sent, except a partial line that has waited for half a second.
    """
    tail = _Tail(path, offset)
    loop = asyncio.get_running_loop()
    held = b""
    held_since = 0.0
    last_status: str | None = None
    next_check = 0.0
    finished = False
    try:
        while True:
            now = loop.time()
            if now >= next_check and not finished:
                status = await get_status()
                next_check = now + STATUS_EVERY_S
                if status is None:
                    yield {"event": "end", "data": "deleted"}
                    return
                if status != last_status:
                    last_status = status
                    yield {"event": "status", "data": status}
                finished = TrainingStatus(status).finished
            data = tail.read()
            if data:
                if not held:
                    held_since = now
                held += data
            cut = held.rfind(b"\n") + 1
            if held and (finished or now - held_since >= PARTIAL_LINE_AFTER_S):
                cut = len(held)
            if cut:
                out, held = held[:cut], held[cut:]
                held_since = now
                tail_pos = tail.pos + cut
                tail.pos = tail_pos
                yield {"event": "log", "id": str(tail_pos),
                       "data": out.decode("utf-8", errors="replace")}
                continue
            if finished and not data:
                yield {"event": "end", "data": last_status or ""}
                return
            if not data:
                await asyncio.sleep(POLL_S)
    finally:
        tail.close()
