"""Aim UI processes owned by this API process: a pre-warmed spare, launch, liveness, stop.

Each Aim UI runs `python -m app.evaluations.aim_server` in its own process group, with
PR_SET_PDEATHSIG so it dies with the API process. Spawn only from the event loop's thread:
the death signal follows the *thread* that forked, and thread-pool threads come and go.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import psutil

from app import storage

SERVER_MODULE = "app.evaluations.aim_server"
PR_SET_PDEATHSIG = 1
ROOT = Path(__file__).resolve().parents[2]


def evaluations_root() -> Path:
    """Trainyard's own evaluation files that belong to no training (template, comparisons)."""
    return storage.data_root() / "evaluations"


def template_dir() -> Path:
    """The empty Aim repository copied for each repository Trainyard builds."""
    return evaluations_root() / "aim-template"


def _die_with_parent() -> None:
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_env() -> dict[str, str]:
    # Aim needs none of Trainyard's settings (database URL, secrets): keep them out.
    return {k: v for k, v in os.environ.items() if not k.startswith(("TRAINYARD_", "CELERY"))}


def is_aim_process(pid: int) -> bool:
    """True when `pid` is a running (not zombie) Aim UI process of Trainyard."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and SERVER_MODULE in proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


class AimProcesses:
    """The Aim UI processes this API process started, plus one spare warmed up ahead of need."""

    def __init__(self) -> None:
        self._spare: subprocess.Popen[bytes] | None = None
        self._spare_since = 0.0
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def _spawn(self) -> subprocess.Popen[bytes]:
        root = evaluations_root()
        root.mkdir(parents=True, exist_ok=True)
        log: IO[bytes] = (root / "spare.log").open("ab")
        try:
            return subprocess.Popen(
                [sys.executable, "-m", SERVER_MODULE, "--template", str(template_dir())],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                env=_child_env(), start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            log.close()

    def prewarm(self) -> None:
        """Have a spare process importing Aim in the background (a no-op if one is ready)."""
        if self._spare is None or self._spare.poll() is not None:
            self._spare = self._spawn()
        self._spare_since = time.monotonic()

    def retire_spare(self, *, idle_s: float) -> None:
        """Stop the spare when nobody looked at an evaluation for `idle_s` seconds."""
        if self._spare is not None and time.monotonic() - self._spare_since > idle_s:
            spare, self._spare = self._spare, None
            self._children[spare.pid] = spare  # stopped and reaped like the others
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(spare.pid, signal.SIGTERM)

    def launch(self, spec: dict[str, Any]) -> int:
        """Hand `spec` to the spare (or a fresh process) and return its pid."""
        proc = self._spare if self._spare is not None and self._spare.poll() is None else None
        self._spare = None
        if proc is None:
            proc = self._spawn()
        assert proc.stdin is not None
        try:
            proc.stdin.write((json.dumps(spec) + "\n").encode())
            proc.stdin.close()
        except BrokenPipeError:  # the spare died just now: start one for this spec
            proc = self._spawn()
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(spec) + "\n").encode())
            proc.stdin.close()
        self._children[proc.pid] = proc
        self.prewarm()
        return proc.pid

    def owns(self, pid: int) -> bool:
        """True when this API process started `pid` and it has not been reaped."""
        return pid in self._children

    def alive(self, pid: int | None) -> bool:
        """True when the Aim process `pid` runs (ours or another API worker's)."""
        if pid is None:
            return False
        own = self._children.get(pid)
        if own is not None:
            return own.poll() is None
        return is_aim_process(pid)

    def reap(self) -> dict[int, int]:
        """Forget exited children; returns their pids with exit codes."""
        gone = {pid: code for pid, proc in self._children.items()
                if (code := proc.poll()) is not None}
        for pid in gone:
            del self._children[pid]
        return gone

    def children(self) -> list[int]:
        """Pids of the running Aim processes this API process started."""
        return [pid for pid, proc in self._children.items() if proc.poll() is None]

    async def stop(self, pid: int | None, *, grace_s: float = 5.0) -> None:
        """SIGTERM the process group of `pid`, SIGKILL it after `grace_s`."""
        if pid is None or not (self.owns(pid) or is_aim_process(pid)):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self.alive(pid) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        own = self._children.pop(pid, None)
        if own is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                own.wait(timeout=2)

    async def shutdown(self) -> None:
        """Stop every process this API process started, the spare included."""
        if self._spare is not None:
            self._children[self._spare.pid] = self._spare
            self._spare = None
        await asyncio.gather(*(self.stop(pid, grace_s=3.0) for pid in list(self._children)))
