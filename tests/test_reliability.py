"""A worker that dies mid-run: its training ends as Abnormal and its processes die with it."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil

from tests.live import start_live
from tests.repo_files import config, create_repo, submit


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
