"""Processes that die or are told to stop: trainings end recorded, nothing is left running."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from app.statuses import FINISHED
from tests.live import Live, start_live, start_parts, unique
from tests.repo_files import config, create_repo, submit, tar_gz

# compose's stop_grace_period for the worker (docker-compose.yml): SIGKILL comes after it.
STOP_GRACE_S = 30


def test_a_killed_platform_leaves_no_training_and_marks_it_abnormal(tmp_path: Path) -> None:
    data = tmp_path / "data"
    live = start_live(data, workers=1)
    try:
        _user, client = live.new_user()
        token = client.headers["Authorization"].split()[1]
        repo = create_repo(client)
        tid = submit(client, repo, config("doomed", boot_file="sleep.py")).json()["id"]
        live.wait_status(client, tid, {"Running"})
        time.sleep(0.5)
        tree = psutil.Process(live.proc.pid).children(recursive=True)
        assert any("sleep.py" in " ".join(_cmdline(p)) for p in tree)
        live.proc.send_signal(signal.SIGKILL)  # no clean shutdown at all
        live.proc.wait()
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [p for p in tree if _alive(p)] == []
    finally:
        live.stop()
    again = start_live(data, workers=1)
    try:
        client = again.client(token)
        done = again.wait_status(client, tid, {"Abnormal", "Completed", "Failed"}, timeout=30)
        assert done["status"] == "Abnormal" and "worker" in done["error"]
        # The repository is usable again: the lost training no longer blocks it.
        r = submit(client, repo, config("after-crash"))
        assert r.status_code == 201, r.text
        assert again.wait_status(client, r.json()["id"], {"Completed", "Failed"})["status"] \
            == "Completed"
    finally:
        again.stop()


@pytest.mark.parametrize(("as_pid_1", "database"), [(False, "sqlite"), (True, "postgresql")],
                         ids=["process-sqlite", "pid-1-postgresql"])
def test_trainyard_worker_stops_on_sigterm_and_records_its_trainings(
        tmp_path: Path, request: pytest.FixtureRequest, as_pid_1: bool, database: str) -> None:
    # As PID 1 (a container without an init) a process that installs no handler never sees
    # SIGTERM: `trainyard worker` must be Celery itself for `docker stop` to work.
    url = request.getfixturevalue("postgres_url") if database == "postgresql" else None
    parts = start_parts(tmp_path / "data", database_url=url)
    try:
        worker = parts.start_worker("alone@%h", as_pid_1=as_pid_1)
        _user, client = parts.new_user()
        repo = create_repo(client)
        tid = submit(client, repo, config("stopped", boot_file="family.py")).json()["id"]
        parts.wait_status(client, tid, {"Running"}, timeout=90)
        time.sleep(1)  # the family has started its grandchild
        top = psutil.Process(worker.pid)
        inner = top.children()[0] if as_pid_1 else top  # under bwrap: PID 1 of the namespace
        tree = inner.children(recursive=True)
        assert any("family.py" in " ".join(_cmdline(p)) for p in tree)
        started = time.monotonic()
        inner.send_signal(signal.SIGTERM)
        worker.wait(timeout=STOP_GRACE_S)
        took = time.monotonic() - started
        body = client.get(f"/api/v1/trainings/{tid}").json()
        assert body["status"] == "Abnormal" and "shut down" in body["error"], body
        assert [p for p in tree if _alive(p)] == []
        print(f"worker stopped {took:.1f} s after SIGTERM")
    finally:
        parts.stop()


def test_worker_on_sigterm_does_not_wait_for_a_run_being_prepared(tmp_path: Path) -> None:
    # pip waits on an index that never answers: the training stays Creating until it gives up.
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(16)
        index = f"http://127.0.0.1:{black_hole.getsockname()[1]}/simple"
        parts = start_parts(tmp_path / "data")
        try:
            worker = parts.start_worker("preparing@%h", extra_env={
                "PIP_INDEX_URL": index, "PIP_TIMEOUT": "300", "PIP_RETRIES": "0"})
            _user, client = parts.new_user()
            repo = create_repo(client, {"README.md": "pip never answers\n",
                                        "code/main.py": "print('never')\n",
                                        "code/pip-requirements.txt": "trainyard-nowhere==1.0\n"})
            r = submit(client, repo, config("preparing", hypeparameters=[]))
            assert r.status_code == 201, r.text
            tid = r.json()["id"]
            parts.wait_status(client, tid, {"Creating"}, timeout=60)
            pip = _descendant(worker.pid, "pip")
            tree = psutil.Process(worker.pid).children(recursive=True)
            started = time.monotonic()
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=STOP_GRACE_S)
            took = time.monotonic() - started
            body = client.get(f"/api/v1/trainings/{tid}").json()
            assert body["status"] == "Abnormal" and "shut down" in body["error"], body
            assert not _alive(pip) and [p for p in tree if _alive(p)] == []
            print(f"worker stopped {took:.1f} s after SIGTERM while pip was running")
        finally:
            parts.stop()


def _descendant(pid: int, needle: str, timeout: float = 60) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in psutil.Process(pid).children(recursive=True):
            if needle in " ".join(_cmdline(proc)):
                return proc
        time.sleep(0.1)
    raise AssertionError(f"no descendant of {pid} runs {needle}")


def test_up_restarts_a_stopped_worker_and_a_killed_worker_and_redis(tmp_path: Path) -> None:
    live = start_live(tmp_path / "data", workers=1)
    try:
        _user, client = live.new_user()
        repo = create_repo(client)
        tid = submit(client, repo, config("interrupted", boot_file="family.py")).json()["id"]
        live.wait_status(client, tid, {"Running"})
        time.sleep(1)
        worker = _child(live.proc.pid, "celery")
        tree = worker.children(recursive=True)
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        body = live.wait_status(client, tid, {"Abnormal", "Failed", "Completed"},
                                timeout=STOP_GRACE_S)
        assert body["status"] == "Abnormal" and "shut down" in body["error"], body
        worker.wait(timeout=STOP_GRACE_S - (time.monotonic() - started))
        assert [p for p in tree if _alive(p)] == []

        _wait_log(live.log, "worker restarted (pid", 1)
        worker = _child(live.proc.pid, "celery")
        worker.send_signal(signal.SIGKILL)
        _wait_log(live.log, "was killed by SIGKILL; restarting it", 1)
        _wait_log(live.log, "worker restarted (pid", 2)
        redis = _child(live.proc.pid, "redis-server")
        redis.send_signal(signal.SIGKILL)
        # Created while Redis is down or just back: it runs either way (queued again after
        # the restart when the first send failed).
        r = submit(client, repo, config("afterwards"))
        assert r.status_code == 201, r.text
        _wait_log(live.log, "redis restarted (pid", 1)
        done = live.wait_status(client, r.json()["id"], {"Completed", "Failed", "Abnormal"},
                                timeout=90)
        assert done["status"] == "Completed", done
        assert "restarting it in" in live.log.read_text()
    finally:
        live.stop()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_api_killed_mid_upload_or_mid_create_leaves_no_half_repository(
        tmp_path: Path, request: pytest.FixtureRequest, database: str) -> None:
    data = tmp_path / "data"
    url = request.getfixturevalue("postgres_url") if database == "postgresql" else None
    # Scratch untouched for 20 s counts as left behind (an hour by default).
    live = start_live(data, workers=1, database_url=url,
                      extra_env={"TRAINYARD_TMP_MAX_AGE_S": "20",
                                 "TRAINYARD_TMP_SWEEP_EVERY_S": "1"})
    try:
        owner, client = live.new_user()
        token = client.headers["Authorization"].split()[1]
        # What an API killed while it saved an upload leaves in <data>/tmp.
        scratch = data / "tmp"
        leftover = scratch / "upload-killed" / "repo.tar.gz"
        leftover.parent.mkdir(parents=True)
        leftover.write_bytes(b"half an archive")
        # 1. A large repository archive whose upload is cut mid-body by SIGKILL.
        name = unique("big")
        sent = _upload_until_killed(live.url, token, name, live.proc.pid)
        assert 0 < sent < BIG_ARCHIVE_BYTES
        _wait_api_back(live, restarts=1)
        assert client.get(f"/api/v1/repos/{owner}/{name}").status_code == 404
        assert not (data / "repos" / owner / name).exists()
        # The body was spooled outside the data dir: nothing of it is left; the old scratch is
        # swept once nothing changed in it for 20 s, a fresh entry stays.
        assert {p.name for p in scratch.iterdir()} <= {"upload-killed"}
        deadline = time.monotonic() + 60
        while leftover.parent.exists():
            assert time.monotonic() < deadline, "the old scratch was not swept"
            time.sleep(0.5)
        fresh = scratch / "upload-fresh"
        fresh.mkdir()
        time.sleep(3)  # a few sweeps
        assert fresh.exists()
        fresh.rmdir()

        # 2. Repository forks and training creations in flight when the API is SIGKILLed.
        repos = [create_repo(client) for _ in range(3)]
        forks, codes = _create_until_killed(live, token, repos)
        _wait_api_back(live, restarts=2)
        listed = {r["name"] for r in client.get("/api/v1/repos").json()}
        print(f"answers before and during the kill: {dict(codes)}; forks without a row: "
              f"{sorted(set(forks) - listed)}, leftover folders: "
              f"{[f for f in set(forks) - listed if (data / 'repos' / owner / f).exists()]}")
        for fork in forks:
            if fork in listed:  # a row: its files are complete
                r = client.get(f"/api/v1/repos/{owner}/{fork}/files/train/config.json")
                assert r.status_code == 200, (fork, r.text)
            else:  # no row: nothing left blocks the name, and it can be created again
                r = client.post("/api/v1/repos", json={"name": fork, "template": "resnet50"})
                assert r.status_code == 201, (fork, r.text)
        assert any(f in listed for f in forks)
        # Every training row has its code snapshot and gets queued: each one completes.
        for repo in repos:
            for training in client.get(f"/api/v1/repos/{repo}/trainings").json():
                done = live.wait_status(client, training["id"], FINISHED, timeout=120)
                assert done["status"] == "Completed", done
    finally:
        live.stop()


BIG_ARCHIVE_BYTES = 24 * 1024 * 1024


def _upload_until_killed(url: str, token: str, name: str, up_pid: int) -> int:
    """Send a multipart repository archive slowly; SIGKILL the API halfway through."""
    archive = tar_gz({"code/main.py": "print('hi')\n", "blob.bin": os.urandom(BIG_ARCHIVE_BYTES)})
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"archive\"; "
            f"filename=\"repo.tar.gz\"\r\nContent-Type: application/gzip\r\n\r\n").encode()
    api = _child(up_pid, "uvicorn")
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield head
        for start in range(0, len(archive), 256 * 1024):
            if start >= len(archive) // 2 and api.is_running():
                api.send_signal(signal.SIGKILL)
                api.wait(10)
            yield archive[start:start + 256 * 1024]
            sent = start + 256 * 1024
            time.sleep(0.01)
        yield f"\r\n--{boundary}--\r\n".encode()

    with pytest.raises(httpx.TransportError):
        httpx.post(f"{url}/api/v1/repos", content=body(), timeout=60, headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}"})
    return sent


def _create_until_killed(live: Live, token: str,
                         repos: list[str]) -> tuple[list[str], Counter[int]]:
    """Fork repositories and create trainings from 4 threads until the API is SIGKILLed."""
    api = _child(live.proc.pid, "uvicorn")
    forks: list[str] = []
    codes: Counter[int] = Counter()
    stop = threading.Event()

    in_flight = [0]
    lock = threading.Lock()

    def hammer(i: int) -> None:
        with live.client(token) as c:
            n = 0
            while not stop.is_set():
                n += 1
                with lock:
                    in_flight[0] += 1
                try:
                    if n % 2:
                        fork = unique("k")
                        forks.append(fork)
                        r = c.post("/api/v1/repos", json={"name": fork, "template": "resnet50"})
                    else:
                        r = submit(c, repos[(i + n) % len(repos)],
                                   config(unique("k-"), hypeparameters=[]))
                    codes[r.status_code] += 1
                except httpx.TransportError:
                    codes[0] += 1
                finally:
                    with lock:
                        in_flight[0] -= 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    deadline = time.monotonic() + 10
    while in_flight[0] < len(threads) and time.monotonic() < deadline:
        time.sleep(0.001)  # kill while every thread waits for an answer
    api.send_signal(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(60)
    assert codes[201] > 0 and not any(c >= 500 for c in codes), codes
    return forks, codes


def _wait_api_back(live: Live, *, restarts: int) -> None:
    _wait_log(live.log, "api restarted (pid", restarts)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{live.url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the API did not come back"
        time.sleep(0.2)


def _child(pid: int, needle: str) -> psutil.Process:
    """The direct child of `pid` whose command line mentions `needle`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for proc in psutil.Process(pid).children():
            if needle in " ".join(_cmdline(proc)) and _alive(proc):
                return proc
        time.sleep(0.1)
    raise AssertionError(f"no child process of {pid} runs {needle}")


def _wait_log(log: Path, text: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} x{count} not in:\n{log.read_text()}"
        time.sleep(0.1)


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
