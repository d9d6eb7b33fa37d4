"""CPU feature detection from /proc/cpuinfo (Linux; elsewhere no flags are reported)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor listed in a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The flags of this machine's CPU (empty when /proc/cpuinfo cannot be read)."""
    try:
        return parse_cpu_flags(CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return frozenset()


def has_avx512(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU (or the given flag set) offers any AVX-512 instructions."""
    return any(flag.startswith("avx512") for flag in (cpu_flags() if flags is None else flags))
