"""The environment of a user process: built from scratch, never inherited from the platform."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from app.procs.cpu import has_avx512

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The platform must control these: where the interpreter, the code and its libraries are found
# (PATH, PYTHONPATH, PYTHONHOME, LD_*), where the process may write (HOME, TMPDIR), and that
# the log is live and UTF-8 (PYTHONUNBUFFERED, PYTHONIOENCODING). TRAINYARD_* is the
# platform's own settings space.
RESERVED_ENV_NAMES = frozenset({
    "PATH", "HOME", "TMPDIR", "PYTHONPATH", "PYTHONHOME", "PYTHONUNBUFFERED",
    "PYTHONIOENCODING", "LD_PRELOAD", "LD_LIBRARY_PATH",
})
RESERVED_ENV_PREFIXES = ("TRAINYARD_",)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_reserved_env_name(name: str) -> bool:
    """Whether a user may not set this environment variable (the platform sets it)."""
    return name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIXES)


def build_env(
    user_env: Mapping[str, str],
    *,
    home: Path,
    runtime_is_mindspore: bool,
    extra: Mapping[str, str] | None = None,
    python: str | None = None,
    tmpdir: Path | None = None,
    cpu_has_avx512: bool | None = None,
) -> dict[str, str]:
    """The complete environment of a user process: minimal base, then `user_env`, then `extra`.

    The base locale is C.UTF-8 (LC_ALL too, unless the user sets LANG or an LC_* variable).

    `python`'s folder goes first on PATH so that `python` in a subprocess is the same
    interpreter. On an AVX-512 CPU (detected unless `cpu_has_avx512` says) a MindSpore runtime
    gets ONEDNN_MAX_CPU_ISA=AVX2 unless the user chose an ISA: oneDNN's AVX-512 path in
    MindSpore falls back to reference convolutions, 25-30x slower (measured).
    """
    bad = sorted(n for n in user_env if is_reserved_env_name(n) or not _ENV_NAME.fullmatch(n))
    if bad:
        raise ValueError(f"environment variables that cannot be set: {', '.join(bad)}")
    path = BASE_PATH if python is None else f"{Path(python).parent}:{BASE_PATH}"
    env = {
        "PATH": path,
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "TMPDIR": str(tmpdir if tmpdir is not None else home / "tmp"),
        "PYTHONUNBUFFERED": "1",
    }
    chosen = {**user_env, **(extra or {})}
    if not any(name == "LANG" or name.startswith("LC_") for name in chosen):
        env["LC_ALL"] = "C.UTF-8"
    avx512 = has_avx512() if cpu_has_avx512 is None else cpu_has_avx512
    if runtime_is_mindspore and avx512 and not {"ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"} & set(
        chosen
    ):
        env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    env.update(user_env)
    env.update(extra or {})
    if any("\0" in k or "\0" in v for k, v in env.items()):
        raise ValueError("environment variables cannot contain NUL characters")
    return env
