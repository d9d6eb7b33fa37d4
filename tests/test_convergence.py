"""The database is the truth and converges: lost workers, lost messages, creates during outages.

Real processes in the production shape (tests/cluster.py): a redis-server we kill and restart,
the API under uvicorn, `trainyard worker --name ...` processes whose whole tree we SIGKILL; on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from typing import Any

import httpx
import psutil
import pytest
import redis
from sqlalchemy import Engine, create_engine, text

from tests.cluster import Cluster
from tests.live import ADMIN_TOKEN, ROOT, wait_status
from tests.pg import private_database
from tests.repo_files import config, create_repo, submit

LIMIT_S = 60  # the promise: a lost worker's trainings end within a minute


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    """Redis, the API and (per test) named workers on one database."""
    with ExitStack() as stack:
        # Its own database: another platform's reconciler must not see these trainings.
        url = None if request.param == "sqlite" else stack.enter_context(private_database())
        platform = Cluster(tmp_path_factory.mktemp(f"cluster-{request.param}"),
                           database_url=url)
        try:
            yield platform.start()
        finally:
            platform.stop()


@pytest.fixture
def client(cluster: Cluster) -> Iterator[httpx.Client]:
    """A fresh user; the test's workers are killed afterwards."""
    admin = cluster.client(ADMIN_TOKEN)
    r = admin.post("/api/v1/users", json={"username": f"u{uuid.uuid4().hex[:8]}"})
    assert r.status_code == 201, r.text
    user = cluster.client(r.json()["token"])
    yield user
    for name in list(cluster.workers):
        cluster.kill_worker(name)
    # Leave nothing queued for the next test: end what is unfinished, empty the queue.
    for repo in user.get("/api/v1/repos").json():
        for t in user.get(f"/api/v1/repos/{repo['full_name']}/trainings").json():
            if not t["finished"]:
                user.post(f"/api/v1/trainings/{t['id']}/terminate")
    redis.Redis(port=cluster.redis_port).delete("trainings.cpu")


def _name(role: str) -> str:
    return f"{role}-{uuid.uuid4().hex[:6]}@test"


def wait_for(client: httpx.Client, tid: int, statuses: set[str],
             timeout: float = 120) -> dict[str, Any]:
    return wait_status(client, tid, statuses, timeout=timeout, poll_s=0.2)


def _stream_ends(client: httpx.Client, tid: int) -> str:
    with client.stream("GET", f"/api/v1/trainings/{tid}/log/stream", timeout=30) as r:
        event = ""
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif event == "end" and line.startswith("data:"):
                return line.split(":", 1)[1].strip()
    raise AssertionError("the log stream closed without an end event")


def test_a_killed_worker_ends_its_training_abnormal_and_frees_the_repo(
        cluster: Cluster, client: httpx.Client) -> None:
    first, second = _name("doomed"), _name("kept")
    cluster.start_worker(first)
    cluster.start_worker(second)
    r1, r2 = create_repo(client), create_repo(client)
    t1 = submit(client, r1, config("lost-run", boot_file="sleep.py")).json()["id"]
    owner = wait_for(client, t1, {"Running"})["worker"]
    t2 = submit(client, r2, config("kept-run", boot_file="sleep.py")).json()["id"]
    other = wait_for(client, t2, {"Running"})["worker"]
    assert {owner, other} == {first, second}

    killed_at = time.monotonic()
    cluster.kill_worker(owner)
    lost = wait_for(client, t1, {"Abnormal"}, timeout=LIMIT_S)
    assert time.monotonic() - killed_at < LIMIT_S
    assert owner in lost["error"] and "last at" in lost["error"], lost["error"]
    assert _stream_ends(client, t1) == "Abnormal"
    # The repository is free again, and the other worker's training was not touched.
    assert submit(client, r1, config("after-loss")).status_code == 201
    kept = client.get(f"/api/v1/trainings/{t2}").json()
    assert (kept["status"], kept["worker"]) == ("Running", other)
    workers = cluster.client(ADMIN_TOKEN).get("/api/v1/workers").json()["workers"]
    by_name = {w["name"]: w for w in workers}
    assert by_name[owner]["online"] is False and by_name[other]["online"] is True
    assert by_name[other]["running"] == [t2]


def test_a_second_worker_never_takes_a_live_workers_name(
        cluster: Cluster, client: httpx.Client) -> None:
    name = _name("taken")
    first = cluster.start_worker(name)
    repo = create_repo(client)
    tid = submit(client, repo, config("kept-run", boot_file="sleep.py")).json()["id"]
    wait_for(client, tid, {"Running"})

    # The same name again, on this host: refused before it consumes anything, naming the
    # holder; the holder's training runs on.
    twin = subprocess.run([sys.executable, "-m", "app.cli.main", "worker", "--name", name],
                          cwd=ROOT, env=cluster.env, capture_output=True, text=True,
                          timeout=120)
    assert twin.returncode == 3, twin.stderr[-3000:]
    said = twin.stderr
    assert f"worker name {name} is in use by a live worker on host {socket.gethostname()} " \
           f"(pid {first.pid}, last heartbeat " in said, said[-3000:]
    assert "another --name" in said
    time.sleep(2)
    kept = client.get(f"/api/v1/trainings/{tid}").json()
    assert (kept["status"], kept["worker"]) == ("Running", name)

    # Without --name, two workers on one host get names of their own: trainyard-<pid>@<host>.
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-m", "app.cli.main", "worker"], cwd=ROOT,
                                env=cluster.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        cluster.workers[f"trainyard-{proc.pid}@{socket.gethostname()}"] = proc
    admin = cluster.client(ADMIN_TOKEN)
    deadline = time.monotonic() + 90
    while not set(cluster.workers) <= {w["name"] for w in
                                       admin.get("/api/v1/workers").json()["workers"]
                                       if w["online"]}:
        assert time.monotonic() < deadline, admin.get("/api/v1/workers").text
        time.sleep(0.5)

    # A worker killed outright and started again under its name takes the name back at once
    # (its pid is dead), and its old training ends Abnormal.
    cluster.kill_worker(name)
    cluster.start_worker(name)
    lost = wait_for(client, tid, {"Abnormal"}, timeout=LIMIT_S)
    assert name in lost["error"], lost


def test_terminate_on_a_dead_workers_training_ends_terminated(
        cluster: Cluster, client: httpx.Client) -> None:
    name = _name("gone")
    cluster.start_worker(name)
    repo = create_repo(client)
    tid = submit(client, repo, config("orphan", boot_file="sleep.py")).json()["id"]
    wait_for(client, tid, {"Running"})
    cluster.kill_worker(name)
    asked_at = time.monotonic()
    r = client.post(f"/api/v1/trainings/{tid}/terminate")
    assert (r.status_code, r.json()["status"]) == (202, "Terminating")
    done = wait_for(client, tid, {"Terminated", "Abnormal"}, timeout=LIMIT_S)
    assert time.monotonic() - asked_at < LIMIT_S
    assert done["status"] == "Terminated" and name in done["error"], done


def test_trainings_queued_when_redis_restarts_empty_all_run(
        cluster: Cluster, client: httpx.Client) -> None:
    repos = [create_repo(client) for _ in range(3)]
    ids = [submit(client, repo, config(f"queued{i}")).json()["id"]
           for i, repo in enumerate(repos)]
    waiting = [client.get(f"/api/v1/trainings/{tid}").json()["waiting"] for tid in ids]
    assert [w["position"] for w in waiting] == [1, 2, 3], waiting
    assert all(w["online_workers"] == 0 and "no online worker" in w["note"] for w in waiting)

    cluster.kill_redis()
    cluster.start_redis()  # empty: the three messages are gone
    cluster.start_worker(_name("fresh"))
    for tid in ids:
        assert wait_for(client, tid, {"Completed", "Failed", "Abnormal"})["status"] == \
            "Completed"


def test_a_create_while_redis_is_down_runs_once_it_is_back(
        cluster: Cluster, client: httpx.Client) -> None:
    cluster.start_worker(_name("patient"))
    repo = create_repo(client)
    cluster.kill_redis()
    try:
        started = time.monotonic()
        r = submit(client, repo, config("during-outage"))
        assert r.status_code == 201, r.text
        assert time.monotonic() - started < 5
        body = r.json()
        assert body["status"] == "Pending"
        assert "waiting for the queue" in body["queue_note"]
        detail = client.get(f"/api/v1/trainings/{body['id']}").json()
        assert "waiting for the queue" in detail["waiting"]["note"]
        token = str(client.headers["Authorization"]).split()[1]
        assert "Waiting for the queue: Redis could not be reached" in \
            _browser(cluster, token).get(f"/trainings/{body['id']}").text
        assert "waiting for the queue" in _cli(cluster, token, "show", str(body["id"]))
        time.sleep(2)  # the reconciler tries, fails, and keeps it
        assert client.get(f"/api/v1/trainings/{body['id']}").json()["status"] == "Pending"
    finally:
        cluster.start_redis()
    done = wait_for(client, body["id"], {"Completed", "Failed", "Abnormal"}, timeout=180)
    assert done["status"] == "Completed" and done["queue_note"] is None, done


def _browser(cluster: Cluster, token: str) -> httpx.Client:
    browser = httpx.Client(base_url=cluster.url, follow_redirects=False, timeout=30)
    page = browser.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf, page.text
    assert browser.post("/login", data={"token": token, "csrf_token": csrf[1]}) \
        .status_code == 303
    return browser


def _cli(cluster: Cluster, token: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env.update({"TRAINYARD_URL": cluster.url, "TRAINYARD_TOKEN": token, "COLUMNS": "250"})
    done = subprocess.run([sys.executable, "-m", "app.cli.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_workers_queues_and_a_waiting_trainings_place_are_visible(
        cluster: Cluster, client: httpx.Client) -> None:
    name = _name("busy")
    cluster.start_worker(name)
    admin_client = cluster.client(ADMIN_TOKEN)
    deadline = time.monotonic() + 30
    while {w["name"] for w in admin_client.get("/api/v1/workers").json()["workers"]
           if w["online"]} != {name}:  # workers killed by earlier tests are seen lost first
        assert time.monotonic() < deadline
        time.sleep(0.5)
    busy_repo, queued_repo = create_repo(client), create_repo(client)
    running = submit(client, busy_repo, config("occupies", boot_file="sleep.py")).json()["id"]
    wait_for(client, running, {"Running"})
    queued = submit(client, queued_repo, config("waits")).json()["id"]
    token = str(client.headers["Authorization"]).split()[1]

    waiting = client.get(f"/api/v1/trainings/{queued}").json()["waiting"]
    assert waiting == {"queue": "trainings.cpu", "position": 1, "queue_depth": 1,
                       "online_workers": 1, "note": None}
    shown = _cli(cluster, token, "show", str(queued))
    assert "trainings.cpu: position 1 of 1; 1 online worker(s) serve it" in shown

    as_user = client.get("/api/v1/workers").json()
    assert as_user["workers"] is None
    assert as_user["instance_types"][0] | {"flavor": "-"} == {
        "flavor": "-", "queue": "trainings.cpu", "queue_depth": 1, "pending": 1,
        "online_workers": 1, "slots": 1, "busy_slots": 1}
    admin = cluster.client(ADMIN_TOKEN).get("/api/v1/workers").json()
    row = next(w for w in admin["workers"] if w["name"] == name)
    assert row["online"] and row["running"] == [running] and row["slots"] == 1
    assert row["queues"] == ["trainings.cpu"] and row["heartbeat_age_s"] < 8

    listing = _cli(cluster, ADMIN_TOKEN, "workers")
    assert name in listing and "online" in listing and str(running) in listing
    assert name not in _cli(cluster, token, "workers")

    page = _browser(cluster, ADMIN_TOKEN).get("/workers")
    assert page.status_code == 200 and name in page.text and "online" in page.text
    training_page = _browser(cluster, token).get(f"/trainings/{queued}")
    assert "Position 1 of 1 in queue trainings.cpu" in training_page.text
    client.post(f"/api/v1/trainings/{running}/terminate")
    wait_for(client, running, {"Terminated"}, timeout=20)


def test_when_only_the_workers_main_process_dies_the_orphaned_run_is_stopped(
        cluster: Cluster, client: httpx.Client) -> None:
    name = _name("headless")
    wrapper = cluster.start_worker(name)
    repo = create_repo(client)
    tid = submit(client, repo, config("orphaned", boot_file="sleep.py")).json()["id"]
    wait_for(client, tid, {"Running"})
    while "sleeping" not in client.get(f"/api/v1/trainings/{tid}/log").text:
        time.sleep(0.1)
    tree = psutil.Process(wrapper.pid).children(recursive=True)
    rows = cluster.client(ADMIN_TOKEN).get("/api/v1/workers").json()["workers"]
    main = psutil.Process(next(w["pid"] for w in rows if w["name"] == name))  # it beats
    assert main.pid in {p.pid for p in [psutil.Process(wrapper.pid), *tree]}
    sleeper = next(p for p in tree if "sleep.py" in " ".join(p.cmdline()))
    main.kill()  # the heartbeat dies; the pool child running the training does not
    lost = wait_for(client, tid, {"Abnormal"}, timeout=LIMIT_S)
    assert name in lost["error"]
    # The reconciler's terminate message (or the job's status read) stops the orphaned run.
    _gone, alive = psutil.wait_procs([sleeper], timeout=15)
    assert alive == []
    assert client.get(f"/api/v1/trainings/{tid}").json()["status"] == "Abnormal"


def _lease(engine: Engine) -> tuple[str, datetime]:
    with engine.connect() as conn:
        holder, expires = conn.execute(text(
            "SELECT holder, expires_at FROM leases WHERE name = 'reconciler'")).one()
    return str(holder), expires if isinstance(expires, datetime) else \
        datetime.fromisoformat(str(expires))


def test_one_reconciler_leads_and_another_takes_over_when_it_dies(
        cluster: Cluster, client: httpx.Client) -> None:
    cluster.start_worker(_name("voter"))
    assert cluster.api is not None
    engine = create_engine(cluster.db_url)
    try:
        seen = []
        for _ in range(10):  # two API processes and a worker compete: one holder, renewing
            seen.append(_lease(engine))
            time.sleep(0.5)
        assert len({holder for holder, _ in seen}) == 1, seen
        assert seen[-1][1] > seen[0][1]
        holder = seen[-1][0]
        pid = int(holder.split(":")[1])
        api_tree = psutil.Process(cluster.api.pid).children(recursive=True)
        workers = [p for w in cluster.workers.values()
                   for p in psutil.Process(w.pid).children(recursive=True)]
        assert pid in {p.pid for p in api_tree + workers}
        psutil.Process(pid).kill()  # no clean hand-over: the lease must expire
        killed_at = time.monotonic()
        while _lease(engine)[0] == holder:
            assert time.monotonic() - killed_at < 15, "nobody took the lease over"
            time.sleep(0.2)
        new_pid = int(_lease(engine)[0].split(":")[1])
        assert new_pid != pid and psutil.pid_exists(new_pid)
    finally:
        engine.dispose()


def test_a_running_training_outlives_a_redis_restart_and_still_terminates(
        cluster: Cluster, client: httpx.Client) -> None:
    cluster.start_worker(_name("steady"))
    tid = submit(client, create_repo(client), config("steady", boot_file="sleep.py")
                 ).json()["id"]
    wait_for(client, tid, {"Running"})
    cluster.kill_redis()
    cluster.start_redis()
    time.sleep(3)
    assert client.get(f"/api/v1/trainings/{tid}").json()["status"] == "Running"
    asked_at = time.monotonic()
    assert client.post(f"/api/v1/trainings/{tid}/terminate").status_code == 202
    # The subscription broke with Redis: the job's status read (every 10 s) takes over.
    done = wait_for(client, tid, {"Terminated", "Abnormal", "Failed"}, timeout=30)
    assert done["status"] == "Terminated", done
    assert time.monotonic() - asked_at < 15
