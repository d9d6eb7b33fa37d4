"""Processes that die or are told to stop: trainings end recorded, nothing is left running."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.live import start_live, start_parts
from tests.repo_files import config, create_repo, submit

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


@pytest.mark.parametrize("as_pid_1", [False, True], ids=["process", "pid-1"])
def test_trainyard_worker_stops_on_sigterm_and_records_its_trainings(
        tmp_path: Path, as_pid_1: bool) -> None:
    # As PID 1 (a container without an init) a process that installs no handler never sees
    # SIGTERM: `trainyard worker` must be Celery itself for `docker stop` to work.
    parts = start_parts(tmp_path / "data")
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
