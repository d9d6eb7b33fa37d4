"""A live Trainyard (`trainyard up` in a subprocess) and a small HTTP client for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "ty_test-admin-token-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


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
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = client.get(f"/api/v1/trainings/{training_id}").json()
            if body["status"] in statuses:
                return body
            time.sleep(0.1)
        raise AssertionError(f"training {training_id} stayed {body.get('status')}; "
                             f"wanted {statuses}: {body}")

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
               admin_token: str | None = ADMIN_TOKEN) -> Live:
    """Start `trainyard up` on a free port and wait for its ready line.

    With `admin_token=None` the platform generates one, as `make run` does.
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
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
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
