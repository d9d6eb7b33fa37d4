"""Byte counts for people, in one unit system (decimal: 1 kB = 1000 bytes) everywhere."""

from __future__ import annotations

UNITS = ("kB", "MB", "GB", "TB")


def format_bytes(size: int) -> str:
    """`812 B`, `1.4 kB`, `94.3 MB`: the same text as the dashboard's formatSize()."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in UNITS:
        value /= 1000
        if round(value, 1) < 1000 or unit == UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")
