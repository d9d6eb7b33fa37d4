"""Attacks from inside a training, through a live `trainyard up`: each escape must be held."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
import redis

from app.procs.supervise import REAPER
from app.statuses import FINISHED
from tests.live import ADMIN_TOKEN, Live, start_live
from tests.repo_files import BOOT_FILES, config, create_repo, processes_naming, submit
from tests.sandboxing import require_sandbox
from tests.test_runner import not_installed

SECRET_NAMES = ("TRAINYARD_ADMIN_TOKEN", "TRAINYARD_SESSION_SECRET")

# A boot file that tries every way out it knows and writes what it found to its output folder.
# The data dir is found from the output folder's path: <data>/trainings/<id>/workspace/out/.
PROBE = r'''
import argparse, json, os, socket, subprocess, sys, time
from pathlib import Path

p = argparse.ArgumentParser()
for name in ("output_url", "redis_port", "api_port", "other_training", "other_repo", "mode"):
    p.add_argument(f"--{name}", default="")
a, _ = p.parse_known_args()
out = Path(a.output_url)
data = out.parent.parent.parent.parent

def attempt(fn):
    try:
        return "ok: " + repr(fn())[:200]
    except Exception as exc:
        return type(exc).__name__

def read(path, name):
    with open(f"/proc/{path}/{name}", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace")

def connect(port):
    with socket.create_connection(("127.0.0.1", int(port)), timeout=2):
        return "connected"

# A daemon that tries to outlive the run: setsid and a double fork; its command line names
# the output folder so the test can look for it from outside.
subprocess.Popen([sys.executable, "-c", "import os, time\nif os.fork() == 0:\n os.setsid()\n"
                  " if os.fork() == 0:\n  time.sleep(600)\n os._exit(0)\n", f"daemon {out}"])
pids = [p for p in os.listdir("/proc") if p.isdigit()]
other_repo = f"repos/{a.other_repo}/code/main.py"
other_snapshot = f"trainings/{a.other_training}/workspace/code/main.py"
found = {
    "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "env": dict(os.environ),
    "processes": {p: attempt(lambda p=p: read(p, "cmdline")) for p in pids},
    "environs": {p: attempt(lambda p=p: read(p, "environ")) for p in pids},
    "reads": {rel: attempt(lambda rel=rel: (data / rel).read_bytes()[:40]) for rel in (
        "trainyard.db", "session-secret", "admin-token", "redis-password", "redis/redis.conf",
        other_repo, other_snapshot, f"trainings/{a.other_training}/log.txt")},
    "listing": {"data": attempt(lambda: sorted(os.listdir(data))),
                "trainings": attempt(lambda: sorted(os.listdir(data / "trainings"))),
                "root": attempt(lambda: sorted(os.listdir("/")))},
    "writes": {rel: attempt(lambda rel=rel: (data / rel).write_text("pwned")) for rel in (
        other_repo, other_snapshot, "planted.txt")},
    "own_snapshot": attempt(lambda: (Path(__file__).parent / "db" / "x").parent.mkdir()),
    "connect": {name: attempt(lambda port=port: connect(port)) for name, port in (
        ("redis", a.redis_port), ("postgres", 5432), ("api", a.api_port))},
    "kill_pid_1": attempt(lambda: os.kill(1, 9)),
}
time.sleep(0.5)
(out / "found.json").write_text(json.dumps(found))
print("probe done", flush=True)
if a.mode == "hold":
    time.sleep(600)
'''


@pytest.fixture(scope="module")
def victim(live: Live) -> tuple[str, int]:
    """Another user's repository and finished training, for the probe to go after."""
    require_sandbox()
    _, client = live.new_user("victim")
    repo = create_repo(client)
    tid = submit(client, repo, config("victim-run")).json()["id"]
    assert live.wait_status(client, tid, FINISHED)["status"] == "Completed"
    return repo, tid


def redis_port(live: Live) -> int:
    conf = (live.data_dir / "redis" / "redis.conf").read_text()
    return int(next(line.split()[1] for line in conf.splitlines() if line.startswith("port ")))


def start_probe(live: Live, victim: tuple[str, int], *,
                mode: str) -> tuple[httpx.Client, int, Path]:
    _, client = live.new_user("attacker")
    repo = create_repo(client, {**BOOT_FILES, "code/probe.py": PROBE})
    params = {"redis_port": redis_port(live), "api_port": urlsplit(live.url).port,
              "other_training": victim[1], "other_repo": victim[0], "mode": mode}
    cfg = config(f"probe-{mode}", boot_file="probe.py",
                 hypeparameters=[{"name": k, "value": str(v)} for k, v in params.items()])
    r = submit(client, repo, cfg)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    return client, tid, live.data_dir / "trainings" / str(tid) / "workspace" / "out"


def wait_gone(marker: Path, timeout_s: float = 15) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    while processes_naming(str(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return processes_naming(str(marker))


def test_a_probe_training_finds_every_door_shut(live: Live, victim: tuple[str, int]) -> None:
    client, tid, out = start_probe(live, victim, mode="quick")
    done = live.wait_status(client, tid, FINISHED)
    assert done["status"] == "Completed", done
    found: dict[str, Any] = json.loads((out / "found.json").read_text())
    # Its uid is the dedicated one, never root (nor the platform's when it is root).
    if os.geteuid() == 0:
        assert found["uid"] == found["gid"] == 61000 and found["groups"] == []
    # No platform secret in its environment, nor in any process it can see.
    env = found["env"]
    assert not [k for k in env if k.startswith(("TRAINYARD_", "CELERY"))]
    seen = json.dumps(found["environs"]) + json.dumps(env)
    assert "ty_" not in seen and "redis://" not in seen and "postgresql" not in seen
    # Only its own PID namespace: bwrap's pid 1, the probe, its daemon; no platform process.
    commands = " ".join(found["processes"].values())
    for platform in ("celery", "uvicorn", "redis-server", "app.cli.main"):
        assert platform not in commands, found["processes"]
    assert len(found["processes"]) <= 6, found["processes"]
    assert found["kill_pid_1"] != "ok: None"
    # The data dir: nothing but its own training folder exists in there.
    assert set(found["reads"].values()) == {"FileNotFoundError"}, found["reads"]
    assert found["listing"]["data"] == "ok: ['trainings']"
    assert found["listing"]["trainings"] == f"ok: [{str(tid)!r}]"
    assert "FileNotFoundError" in found["writes"].values()
    assert not any(v.startswith("ok") for v in found["writes"].values()), found["writes"]
    assert found["own_snapshot"] == "ok: None"  # its private copy, as on Xihe
    victim_repo, victim_tid = victim
    for victim_code in (live.data_dir / "repos" / victim_repo / "code" / "main.py",
                        live.data_dir / "trainings" / str(victim_tid) / "workspace/code/main.py"):
        assert "pwned" not in victim_code.read_text()
    # No loopback: Redis, PostgreSQL and the API are out of reach.
    assert set(found["connect"].values()) == {"ConnectionRefusedError"}, found["connect"]
    # The daemon it started died with the run.
    assert wait_gone(out) == []


def start_holding_probe(live: Live, victim: tuple[str, int]) -> tuple[httpx.Client, int, Path]:
    """A probe that keeps running (with its daemon) once it has written what it found."""
    client, tid, out = start_probe(live, victim, mode="hold")
    live.wait_status(client, tid, {"Running"})
    deadline = time.monotonic() + 60
    while not (out / "found.json").exists():
        assert time.monotonic() < deadline, "the probe never ran"
        time.sleep(0.1)
    return client, tid, out


def test_the_daemon_dies_when_the_reaper_is_killed(live: Live, victim: tuple[str, int]) -> None:
    client, tid, out = start_holding_probe(live, victim)
    tree = processes_naming(str(out))
    assert any("daemon" in " ".join(p.cmdline()) for p in tree)
    shims = [p for p in tree if str(REAPER) in p.cmdline()]
    assert len(shims) == 1
    shims[0].send_signal(signal.SIGKILL)
    assert wait_gone(out) == []
    done = live.wait_status(client, tid, FINISHED)
    assert done["status"] == "Failed" and done["exit_code"] == -signal.SIGKILL


def test_the_daemon_dies_on_terminate(live: Live, victim: tuple[str, int]) -> None:
    client, tid, out = start_holding_probe(live, victim)
    assert len(processes_naming(str(out))) >= 3
    assert client.post(f"/api/v1/trainings/{tid}/terminate").status_code == 202
    assert live.wait_status(client, tid, FINISHED, timeout=30)["status"] == "Terminated"
    assert wait_gone(out) == []


def test_the_platform_keeps_its_secrets_from_the_worker(live: Live) -> None:
    require_sandbox()
    health = httpx.get(f"{live.url}/api/v1/health").json()
    assert health["sandbox"] == "on" and health["sandbox_reason"] == ""
    assert "Sandbox: on (bubblewrap; user code runs as uid" in live.log.read_text()
    workers = [p for p in processes_naming("celery")
               if live.proc.pid in {parent.pid for parent in p.parents()}]
    assert workers
    for proc in workers:
        environ = proc.environ()
        assert not [name for name in SECRET_NAMES if name in environ]
        assert "@127.0.0.1" in environ["TRAINYARD_REDIS_URL"]  # it carries the password
        assert environ["TRAINYARD_SANDBOX"] == "on"  # auto, settled: no silent downgrade
    password_file = live.data_dir / "redis-password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert (live.data_dir / "redis" / "redis.conf").stat().st_mode & 0o777 == 0o600
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=redis_port(live)).ping()
    assert redis.Redis(port=redis_port(live), password=password_file.read_text().strip()).ping()


def test_sandbox_on_refuses_to_start_without_a_working_sandbox(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="TRAINYARD_SANDBOX=on but the sandbox cannot run"):
        start_live(tmp_path / "data", workers=1,
                   extra_env={"TRAINYARD_SANDBOX": "on",
                              "TRAINYARD_SANDBOX_BWRAP": "/nonexistent/bwrap"})


def _signed_in(live: Live, token: str) -> httpx.Client:
    browser = httpx.Client(base_url=live.url, follow_redirects=False)
    page = browser.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf, page.text
    signed = browser.post("/login", data={"token": token, "csrf_token": csrf[1]})
    assert signed.status_code == 303
    return browser


def test_sandbox_off_is_loud_everywhere(tmp_path: Path) -> None:
    live = start_live(tmp_path / "data", workers=1, extra_env={"TRAINYARD_SANDBOX": "off"})
    try:
        assert "WARNING: the sandbox is OFF (TRAINYARD_SANDBOX=off" in live.log.read_text()
        health = httpx.get(f"{live.url}/api/v1/health").json()
        assert health["sandbox"] == "off" and "TRAINYARD_SANDBOX=off" in health["sandbox_reason"]
        admin_page = _signed_in(live, ADMIN_TOKEN).get("/").text
        assert 'data-sandbox="off"' in admin_page and "The sandbox is off" in admin_page
        _, user = live.new_user()
        user_token = user.headers["Authorization"].removeprefix("Bearer ")
        assert 'data-sandbox="off"' not in _signed_in(live, user_token).get("/").text
    finally:
        live.stop()


def test_a_training_with_requirements_installs_and_runs_them_sandboxed(live: Live) -> None:
    require_sandbox()
    dist, module = not_installed()
    _, client = live.new_user("pip")
    uses = f"import {module}, os\nprint('USING', {module}.__file__, os.getuid())\n"
    files = {**BOOT_FILES, "code/pip-requirements.txt": f"{dist}\n", "code/uses.py": uses}
    repo = create_repo(client, files)
    tid = submit(client, repo, config("pip-run", boot_file="uses.py")).json()["id"]
    done = live.wait_status(client, tid, FINISHED, timeout=300)
    log = client.get(f"/api/v1/trainings/{tid}/log").text
    assert done["status"] == "Completed", log
    assert f"Successfully installed {dist}" in log
    line = next(x for x in log.splitlines() if x.startswith("USING "))
    env_dir = line.split()[1].split("/lib/")[0]
    assert env_dir.startswith(str(live.data_dir / "envs"))
    if os.geteuid() == 0:
        assert line.split()[2] == "61000"
        assert Path(env_dir).stat().st_uid == 0  # the platform's again, read-only to runs
