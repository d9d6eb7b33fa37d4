"""How the client shows times, durations, sizes and statuses."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from rich.text import Text

from app.statuses import TrainingStatus
from app.units import format_bytes

STATUS_STYLES: dict[str, str] = {
    TrainingStatus.PENDING: "yellow", TrainingStatus.CREATING: "yellow",
    TrainingStatus.RUNNING: "bold blue", TrainingStatus.TERMINATING: "magenta",
    TrainingStatus.COMPLETED: "bold green", TrainingStatus.FAILED: "bold red",
    TrainingStatus.TERMINATED: "magenta", TrainingStatus.TIMEOUT: "red",
    TrainingStatus.ABNORMAL: "red",
}


def when(value: str | None) -> str:
    """An API timestamp in local time, to the second ('-' when missing)."""
    if not value:
        return "-"
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return value
    return stamp.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    """`0:04:05`, or '-' when unknown."""
    if seconds is None:
        return "-"
    return str(timedelta(seconds=round(seconds)))


def size(n: int | None) -> str:
    """A byte count for people: `1.2 MB` (decimal units, as the dashboard)."""
    return "-" if n is None else format_bytes(n)


def status(value: str) -> Text:
    """A training status in its colour."""
    return Text(value, style=STATUS_STYLES.get(value, ""))


def waiting(info: dict[str, Any]) -> str:
    """Where a Pending training waits: its queue position and the workers serving it."""
    where = (f"position {info['position']} of {info['queue_depth']}"
             if info.get("position") else "not in the queue yet")
    line = f"{info['queue']}: {where}; {info['online_workers']} online worker(s) serve it"
    return f"{line}\n{info['note']}" if info.get("note") else line
