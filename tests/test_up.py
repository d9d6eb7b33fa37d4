"""`trainyard up`: prints the URL once healthy and leaves no process behind when stopped."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.live import ADMIN_TOKEN, start_live
from tests.repo_files import config, create_repo, submit


@pytest.mark.parametrize("ctrl_c", [False, True], ids=["sigterm-to-up", "ctrl-c-to-group"])
def test_up_serves_and_stops_everything_including_a_running_training(
        tmp_path: Path, ctrl_c: bool) -> None:
    live = start_live(tmp_path / "data", workers=1, own_group=ctrl_c,
                      extra_env={"TRAINYARD_TRAINING_TIMEOUT_S": "3"})
    try:
        text = live.log.read_text()
        assert f"Trainyard is running at {live.url}" in text
        assert f"Admin token: {ADMIN_TOKEN}" in text
        assert httpx.get(f"{live.url}/api/v1/health").status_code == 200
        _, client = live.new_user()
        token = client.headers["Authorization"].split()[1]
        repo = create_repo(client)
        # The configured wall-clock limit ends a run as Timeout.
        tid = submit(client, repo, config("too-long", boot_file="sleep.py")).json()["id"]
        timed_out = live.wait_status(client, tid, {"Timeout", "Failed", "Completed"}, timeout=30)
        assert timed_out["status"] == "Timeout" and "limit" in timed_out["error"]
        tid = submit(client, repo, config("left-running", boot_file="family.py")).json()["id"]
        live.wait_status(client, tid, {"Running"})
        time.sleep(1)
        tree = psutil.Process(live.proc.pid).children(recursive=True)
        names = " ".join(" ".join(_cmdline(p)) for p in tree)
        assert "redis-server" in names and "uvicorn" in names and "celery" in names
        assert "family.py" in names
    finally:
        if ctrl_c:  # a terminal's Ctrl-C: SIGINT to every process of the foreground group
            os.killpg(live.proc.pid, signal.SIGINT)
        else:
            live.proc.send_signal(signal.SIGTERM)
        live.proc.wait(timeout=60)
    time.sleep(0.5)
    survivors = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert survivors == []
    again = start_live(live.data_dir, workers=1)  # the worker recorded why its training ended
    try:
        body = again.client(token).get(f"/api/v1/trainings/{tid}").json()
        assert body["status"] == "Abnormal" and "shut down" in body["error"], body
    finally:
        again.stop()


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:  # exited or a zombie meanwhile
        return []
