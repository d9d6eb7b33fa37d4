"""The log files of supervised processes: platform notes and fast tails."""

from __future__ import annotations

import os
from pathlib import Path

_TAIL_BLOCK = 64 * 1024


def log_note(log_path: Path, message: str) -> None:
    """Append one `[trainyard] message` line to a log."""
    with open(log_path, "ab") as log:
        log.write(f"[trainyard] {message}\n".encode())


def tail_lines(path: Path, n: int, *, max_bytes: int = 256 * 1024) -> str:
    """The last `n` lines of a file, reading at most `max_bytes` backwards from its end.

    Each line shows what a terminal would: only the text after its last carriage return.
    """
    if n <= 0:
        return ""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return ""
    with f:
        end = pos = f.seek(0, os.SEEK_END)
        chunks: list[bytes] = []
        newlines = 0
        while pos > 0 and newlines <= n and end - pos < max_bytes:
            step = min(_TAIL_BLOCK, pos, max_bytes - (end - pos))
            pos -= step
            f.seek(pos)
            chunk = f.read(step)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if pos > 0 and len(lines) > 1:
        lines = lines[1:]  # the first one is cut
    tail = [line.rstrip(b"\r").rsplit(b"\r", 1)[-1] for line in lines[-n:]]
    return b"\n".join(tail).decode("utf-8", errors="replace")
