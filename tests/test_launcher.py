"""One predictor (and one Aim UI) per model for the whole deployment: two API processes (two
uvicorn servers on two ports, one data dir and database) share it, list it alike and stop it
for each other."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import psutil
import pytest

from app.inference.manager import PREDICTOR_SCRIPT
from tests.inference_apps import completed_training, fake_repo, image_bytes, predict
from tests.live import Parts, start_parts
from tests.pg import private_database
from tests.test_evaluations import AIM_SERVER, evaluation_pid, wait_running
from tests.test_service_sandbox import TRAIN_WITH_METRICS


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def two_apis(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Parts, str]]:
    """The compose shape with two API processes on one data dir and database, SQLite then
    PostgreSQL: (the parts, the second API's URL)."""
    with ExitStack() as stack:
        url = stack.enter_context(private_database()) if request.param == "postgresql" \
            else None
        parts = start_parts(tmp_path_factory.mktemp("two-apis") / "data", database_url=url)
        stack.callback(parts.stop)
        parts.start_worker("w1@launcher")
        yield parts, parts.start_api()


def predictor_processes(parts: Parts, training_id: int) -> list[psutil.Process]:
    """The running `predictor.py` processes of a training of this platform (not their shims or
    sandboxes)."""
    folder = f"{parts.data_dir / 'trainings' / str(training_id)}/"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if len(argv) > 1 and argv[1] == str(PREDICTOR_SCRIPT) and any(
                a.startswith(folder) for a in argv):
            found.append(proc)
    return [p for p in found if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def listed(client: httpx.Client, training_id: int) -> list[tuple[int, bool]]:
    body = client.get(f"/api/v1/trainings/{training_id}/inference").json()
    return [(p["pid"], p["ready"]) for p in body["predictors"]]


def wait_gone(parts: Parts, pids: list[int], training_id: int, *, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not predictor_processes(parts, training_id) and not any(
                psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                for pid in pids):
            return
        time.sleep(0.1)
    raise AssertionError(f"the predictor of training {training_id} still runs: "
                         f"{predictor_processes(parts, training_id)}")


def test_two_api_processes_share_one_predictor_and_stop_it_for_each_other(
        two_apis: tuple[Parts, str]) -> None:
    parts, second_url = two_apis
    _, one = parts.new_user()
    two = httpx.Client(base_url=second_url, headers=one.headers, timeout=60)
    repo = fake_repo(one)
    tid = completed_training(parts, one, repo)

    # The first API process starts it; the second uses that process: no second cold start.
    first = predict(one, tid, image_bytes())
    assert first.status_code == 200, first.text
    assert first.json()["timing"]["cold_start_s"] is not None
    second = predict(two, tid, image_bytes())
    assert second.status_code == 200, second.text
    assert second.json()["timing"]["cold_start_s"] is None
    assert second.json()["predictions"] == first.json()["predictions"]
    assert len(predictor_processes(parts, tid)) == 1
    [(pid, ready)] = listed(one, tid)
    assert ready and listed(two, tid) == [(pid, True)]

    # Stopped through the other API process: gone for both.
    assert two.delete(f"/api/v1/trainings/{tid}/inference").status_code == 204
    wait_gone(parts, [pid], tid)
    assert listed(one, tid) == [] and listed(two, tid) == []

    # Requests racing through both processes start it once.
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda c: predict(c, tid, image_bytes()), [one, two] * 3))
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert len(predictor_processes(parts, tid)) == 1
    [(pid, _)] = listed(one, tid)
    assert listed(two, tid) == [(pid, True)]
    # The process that did not start it can use it after it was restarted elsewhere.
    assert predict(one, tid, image_bytes()).json()["timing"]["cold_start_s"] is None
    assert predict(two, tid, image_bytes()).json()["timing"]["cold_start_s"] is None

    # Deleting the training (through the process that may not own the predictor) stops it.
    assert two.delete(f"/api/v1/trainings/{tid}").status_code == 204
    wait_gone(parts, [pid], tid)
    assert one.get(f"/api/v1/trainings/{tid}/inference").status_code == 404


def test_deleting_a_repository_stops_its_predictors_in_every_api_process(
        two_apis: tuple[Parts, str]) -> None:
    parts, second_url = two_apis
    _, one = parts.new_user()
    two = httpx.Client(base_url=second_url, headers=one.headers, timeout=60)
    repo = fake_repo(one)
    tid = completed_training(parts, one, repo)
    assert predict(one, tid, image_bytes()).status_code == 200
    [(pid, _)] = listed(two, tid)
    assert two.delete(f"/api/v1/repos/{repo}").status_code == 204
    wait_gone(parts, [pid], tid)
    assert two.get(f"/api/v1/trainings/{tid}/inference").status_code == 404


def test_the_predictor_of_a_killed_api_process_is_started_again_by_another(
        two_apis: tuple[Parts, str]) -> None:
    parts, second_url = two_apis
    third_url = parts.start_api()
    third_api = parts.others[-1]
    _, one = parts.new_user()
    three = httpx.Client(base_url=third_url, headers=one.headers, timeout=60)
    tid = completed_training(parts, one, fake_repo(one))
    assert predict(three, tid, image_bytes()).status_code == 200
    [(pid, _)] = listed(one, tid)
    # SIGKILL: no shutdown runs. The shim's parent-death signal takes the predictor along, and
    # its row is left behind naming a dead pid.
    third_api.kill()
    third_api.wait()
    wait_gone(parts, [pid], tid)
    again = predict(one, tid, image_bytes())
    assert again.status_code == 200, again.text
    assert again.json()["timing"]["cold_start_s"] is not None
    [(new_pid, ready)] = listed(one, tid)
    two = httpx.Client(base_url=second_url, headers=one.headers, timeout=60)
    assert ready and new_pid != pid and listed(two, tid) == [(new_pid, True)]
    assert predict(two, tid, image_bytes()).json()["timing"]["cold_start_s"] is None
    assert len(predictor_processes(parts, tid)) == 1


def aim_servers(parts: Parts, training_id: int) -> list[psutil.Process]:
    """The Aim UI processes writing a training's evaluation log (not the idle spares)."""
    log = str(parts.data_dir / "trainings" / str(training_id) / "evaluation" / "aim.log")
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if AIM_SERVER in " ".join(proc.info["cmdline"] or []) and any(
                    f.path == log for f in proc.open_files()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_two_api_processes_share_one_aim_ui_and_stop_it_for_each_other(
        two_apis: tuple[Parts, str]) -> None:
    parts, second_url = two_apis
    _, one = parts.new_user()
    two = httpx.Client(base_url=second_url, headers=one.headers, timeout=60)
    tid = completed_training(parts, one, fake_repo(one, train=TRAIN_WITH_METRICS))
    api = f"/api/v1/trainings/{tid}/evaluation"
    assert one.post(api, json={"type": "standard"}).status_code == 202
    body = wait_running(one, api)
    pid = evaluation_pid(parts, "training_id", tid)
    assert pid is not None and len(aim_servers(parts, tid)) == 1
    # The other API process serves the same report from the same process.
    assert two.get(api).json()["status"] == "running"
    assert two.post(api, json={"type": "standard"}).json()["status"] == "running"
    assert two.get(f"{body['url']}api/projects/").status_code == 200
    assert evaluation_pid(parts, "training_id", tid) == pid
    assert len(aim_servers(parts, tid)) == 1

    # Stopped through the other process: the process is gone, both say expired.
    assert two.delete(api).status_code == 204
    wait_gone(parts, [pid], tid)
    assert not aim_servers(parts, tid)
    assert one.get(api).json()["status"] == two.get(api).json()["status"] == "expired"

    # Revived by a proxied request through the second; deleting the training through the
    # first stops it.
    assert two.get(f"{body['url']}api/projects/").status_code == 200
    revived = evaluation_pid(parts, "training_id", tid)
    assert revived is not None and revived != pid and len(aim_servers(parts, tid)) == 1
    assert one.delete(f"/api/v1/trainings/{tid}").status_code == 204
    wait_gone(parts, [revived], tid)
    assert not aim_servers(parts, tid)
