"""The platform's own child processes (`trainyard up`: Redis, the API, a worker): start them,
restart whichever dies with a growing delay, and stop them and every descendant."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.procs.tree import kill_descendants, signal_name

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Children get SIGTERM if `trainyard up` itself is killed, so none outlive it.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0  # a child that ran this long before dying restarts without delay growth
# What the children left behind when they stopped (a training, a predictor) gets this long.
DESCENDANTS_GRACE_S = 3.0


@dataclass
class Child:
    """One supervised process: how to start it, and its restart state."""

    name: str
    argv: list[str]
    log_file: Path | None = None
    stop_grace_s: float = 10.0
    after_restart: Callable[[], None] | None = None
    without: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = FIRST_BACKOFF_S
    restart_at: float | None = None


def _describe_exit(code: int) -> str:
    if code < 0:
        name = signal_name(-code)
        return f"was killed by {name}" if name.startswith("SIG") else f"was killed by signal {name}"
    return f"exited with code {code}"


@dataclass
class Supervisor:
    """Starts child processes, restarts those that die, and stops them and every descendant."""

    env: dict[str, str]
    say: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr,
                                                                  flush=True))
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], *, log_file: Path | None = None,
              stop_grace_s: float = 10.0,
              after_restart: Callable[[], None] | None = None,
              without: tuple[str, ...] = ()) -> None:
        """Start a child process with the shared environment, minus the names in `without`;
        `watch` keeps it running."""
        child = Child(name, argv, log_file, stop_grace_s, after_restart, without)
        self.children.append(child)
        self._spawn(child)

    def _spawn(self, child: Child) -> None:
        out = child.log_file.open("ab") if child.log_file else None
        env = {k: v for k, v in self.env.items() if k not in child.without}
        try:
            child.proc = subprocess.Popen(child.argv, env=env, stdout=out,
                                          stderr=subprocess.STDOUT if out else None,
                                          preexec_fn=_die_with_parent)
        finally:
            if out is not None:
                out.close()  # the child has its own copy
        child.started_at = time.monotonic()
        child.restart_at = None

    def failed(self) -> str | None:
        """What went wrong if a child exited (used while starting up, before `watch`)."""
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                return f"{child.name} {_describe_exit(child.proc.returncode)}"
        return None

    def watch(self) -> None:
        """Restart children that died, with a growing delay if they keep dying; log each step."""
        now = time.monotonic()
        for child in self.children:
            proc = child.proc
            if child.restart_at is None and proc is not None and proc.poll() is not None:
                if now - child.started_at >= STABLE_AFTER_S:
                    child.backoff_s = FIRST_BACKOFF_S
                child.restart_at = now + child.backoff_s
                self.say(f"trainyard: {child.name} (pid {proc.pid}) "
                         f"{_describe_exit(proc.returncode)}; restarting it in "
                         f"{child.backoff_s:.0f} s")
                child.backoff_s = min(child.backoff_s * 2, MAX_BACKOFF_S)
            elif child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                try:
                    self._spawn(child)
                except OSError as exc:
                    child.started_at = now
                    self.say(f"trainyard: could not restart {child.name}: {exc}")
                    continue
                assert child.proc is not None
                self.say(f"trainyard: {child.name} restarted (pid {child.proc.pid}, restart "
                         f"{child.restarts})")
                if child.after_restart is not None:
                    try:
                        child.after_restart()
                    except Exception as exc:  # reported; the child itself keeps running
                        self.say(f"trainyard: after restarting {child.name}: {exc}")

    def stop(self) -> None:
        """Stop the children newest first (the worker before the API, Redis last), each with
        SIGTERM and its grace period, then every descendant that remains (`kill_descendants`:
        SIGTERM, a short grace, SIGKILL)."""
        for child in reversed(self.children):
            proc = child.proc
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=child.stop_grace_s)
            except subprocess.TimeoutExpired:
                self.say(f"trainyard: {child.name} did not stop within "
                         f"{child.stop_grace_s:.0f} s; killing it")
        kill_descendants(DESCENDANTS_GRACE_S)
        for child in self.children:
            if child.proc is not None:
                try:
                    child.proc.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
