"""Predictors and Aim UIs in the sandbox, attacked from inside and inspected from outside.

A probe predictor (a repository's `inference/app.py`, user code) looks for every way out that
issue 13 lists and answers with what it found; an Aim UI, which runs Trainyard's code over a
training's Aim repository, is inspected from outside: its uid, environment, namespaces and
what its mount namespace shows of the data dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from app import storage
from app.config import get_settings
from app.procs import services
from tests.inference_apps import (
    FAKE_APP,
    PROBE_APP,
    TRAIN_WITH_CHECKPOINTS,
    completed_training,
    fake_repo,
    image_bytes,
    predict,
)
from tests.live import Live
from tests.sandboxing import require_sandbox
from tests.test_evaluations import evaluation_pid

PLATFORM_WORDS = ("uvicorn", "celery", "redis-server", "app.cli.main", "trainyard")
# Prints one LossMonitor line, so that a standard evaluation (an Aim UI) can start on it.
TRAIN_WITH_METRICS = TRAIN_WITH_CHECKPOINTS + (
    'print("Epoch:[  1/  1], step:[    1/    1], loss:[2.000/2.000], time: 1.0 ms, '
    'lr: 0.01000", flush=True)\n')


@pytest.fixture(scope="module", autouse=True)
def sandbox_works() -> None:
    """Skip only where this kernel cannot run the sandbox (and never in CI)."""
    require_sandbox()


def _api_process(live: Live) -> psutil.Process:
    [api] = [p for p in psutil.Process(live.proc.pid).children()
             if "uvicorn" in " ".join(p.cmdline())]
    return api


def _redis_port(live: Live) -> int:
    for proc in psutil.Process(live.proc.pid).children(recursive=True):
        if "redis-server" in proc.name():
            [port] = {c.laddr.port for c in proc.net_connections("tcp")
                      if c.status == psutil.CONN_LISTEN}
            return int(port)
    raise AssertionError("no embedded redis-server")


def _sockets(live: Live) -> list[str]:
    return sorted(str(p) for p in (live.data_dir / "run").rglob("*.sock"))


def _wait_evaluation(client: httpx.Client, training_id: int) -> dict[str, Any]:
    api = f"/api/v1/trainings/{training_id}/evaluation"
    assert client.post(api, json={"type": "standard"}).status_code == 202
    deadline = time.monotonic() + 90
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(api).json()
        if body["status"] != "starting":
            break
        time.sleep(0.1)
    assert body["status"] == "running", body
    return body


def _aim_server(live: Live, training_id: int) -> psutil.Process:
    """The Python process serving a training's Aim UI (inside the sandbox, below the shim)."""
    pid = evaluation_pid(live, "training_id", training_id)
    assert pid is not None
    [server] = [p for p in psutil.Process(pid).children(recursive=True)
                if p.cmdline()[:3] == [p.cmdline()[0], "-m", "app.evaluations.aim_server"]]
    return server


@pytest.fixture(scope="module")
def neighbours(live: Live) -> dict[str, Any]:
    """Another user's warm predictor and running Aim UI: the probe must reach neither."""
    _, client = live.new_user("nb")
    repo = fake_repo(client, app=FAKE_APP, train=TRAIN_WITH_METRICS)
    training_id = completed_training(live, client, repo)
    before = set(_sockets(live))  # services of other tests on the same platform
    assert predict(client, training_id, image_bytes()).status_code == 200
    _wait_evaluation(client, training_id)
    sockets = [s for s in _sockets(live) if s not in before]
    assert len(sockets) >= 2, sockets  # the predictor's and the Aim UI's
    return {"client": client, "training": training_id, "sockets": sockets}


def test_a_probe_predictor_finds_no_way_out(live: Live, neighbours: dict[str, Any]) -> None:
    api_port = int(live.url.rsplit(":", 1)[1])
    targets = {"data_dir": str(live.data_dir), "sockets": neighbours["sockets"],
               "ports": [api_port, _redis_port(live), 6379, 5432]}
    _, client = live.new_user("probe")
    repo = fake_repo(client, app=PROBE_APP.replace("__TARGETS__", repr(targets)))
    training_id = completed_training(live, client, repo)
    r = predict(client, training_id, image_bytes())
    assert r.status_code == 200, r.text
    report = json.loads(r.json()["predictions"][0]["label"])

    # Positive controls: the probe ran, and it can use what is its own.
    assert report["checkpoint"] == "read 16 bytes"
    assert report["writes"]["tmp"] == report["writes"]["home"] == "written"

    assert report["env"] == {}
    mib = 1024 * 1024
    assert report["limits"] == {"RLIMIT_DATA": get_settings().service_memory_mb * mib,
                                "RLIMIT_FSIZE": 1024 * mib, "RLIMIT_NOFILE": 4096}
    assert report["uid"] != 0 and report["euid"] != 0
    if os.geteuid() == 0:
        assert report["uid"] == get_settings().sandbox_uid
    processes = report["processes"]
    assert len(processes) <= 3, processes  # bwrap's init, the predictor, maybe a helper
    for pid, proc in processes.items():
        assert not proc["secret_in_environ"], (pid, proc)
        assert not any(word in proc["cmdline"] for word in PLATFORM_WORDS), (pid, proc)

    listed = report["data_dir_list"]
    assert not {"trainyard.db", "session-secret", "repos", "redis", "datasets"} & set(listed)
    assert all(v.startswith("refused") for v in report["reads"].values()), report["reads"]
    assert report["other_repos"].startswith("refused")
    assert report["runtime_area"] == ["predictors"]  # only the way to its own box
    assert not set(report["globbed_sockets"]) & set(neighbours["sockets"])
    for name in ("data_dir", "checkpoint", "own_code"):
        assert report["writes"][name].startswith("refused"), (name, report["writes"])
    assert not (live.data_dir / "probe.txt").exists()

    assert all(v.startswith("refused") for v in report["tcp"].values()), report["tcp"]
    assert set(report["unix"]) == set(neighbours["sockets"])
    assert all(v.startswith("refused") for v in report["unix"].values()), report["unix"]


def test_a_training_cannot_reach_the_services_sockets(live: Live,
                                                     neighbours: dict[str, Any]) -> None:
    probe = ("import json, socket\n"
             "found = {}\n"
             f"for path in {neighbours['sockets']!r}:\n"
             "    try:\n"
             "        with socket.socket(socket.AF_UNIX) as s:\n"
             "            s.settimeout(2)\n"
             "            s.connect(path)\n"
             "        found[path] = 'connected'\n"
             "    except OSError as exc:\n"
             "        found[path] = 'refused: ' + type(exc).__name__\n"
             "print('PROBE ' + json.dumps(found), flush=True)\n")
    _, client = live.new_user("tp")
    training_id = completed_training(live, client, fake_repo(client, train=probe))
    log = client.get(f"/api/v1/trainings/{training_id}/log").text
    [line] = [x for x in log.splitlines() if x.startswith("PROBE ")]
    found = json.loads(line[len("PROBE "):])
    assert set(found) == set(neighbours["sockets"])
    assert all(v.startswith("refused") for v in found.values()), found


def test_services_run_as_another_user_in_their_own_namespaces(
        live: Live, neighbours: dict[str, Any]) -> None:
    api = _api_process(live)
    body = neighbours["client"].get(f"/api/v1/trainings/{neighbours['training']}/inference")
    [pid] = [p["pid"] for p in body.json()["predictors"]]
    shim = psutil.Process(pid)
    [predictor] = [p for p in shim.children(recursive=True)
                   if "predictor.py" in " ".join(p.cmdline()) and "bwrap" not in p.name()]
    aim = _aim_server(live, neighbours["training"])
    for service in (predictor, aim):
        assert service.uids().real != 0 or os.geteuid() != 0
        assert not any(k.startswith("TRAINYARD_") for k in service.environ())
        limits = Path(f"/proc/{service.pid}/limits").read_text()
        [data] = [line.split()[3] for line in limits.splitlines()
                  if line.startswith("Max data size")]
        assert int(data) == get_settings().service_memory_mb * 1024 * 1024, limits
        for ns in ("pid", "net", "mnt"):
            assert os.readlink(f"/proc/{service.pid}/ns/{ns}") != \
                os.readlink(f"/proc/{api.pid}/ns/{ns}"), ns
        # What the data dir looks like through the service's own root.
        seen = Path(f"/proc/{service.pid}/root") / str(live.data_dir).lstrip("/")
        for secret in ("trainyard.db", "session-secret", "repos", "redis"):
            assert not (seen / secret).exists(), (service.cmdline(), secret)


def test_runtime_area_is_the_platforms_alone(live: Live, neighbours: dict[str, Any]) -> None:
    run = live.data_dir / "run"
    assert run.stat().st_mode & 0o777 == 0o700 and run.stat().st_uid == os.geteuid()
    for socket in neighbours["sockets"]:
        box = Path(socket).parent
        assert box.stat().st_mode & 0o777 == 0o700
        assert box.parent.stat().st_mode & 0o777 == 0o700
        assert box.parent.stat().st_uid == os.geteuid()


def test_boxes_of_dead_api_processes_are_removed(tmp_path: Path) -> None:
    mine = services.new_box(tmp_path)
    orphan = services.new_box(tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait()
    (orphan.root / services.OWNER_FILE).write_text(str(gone.pid))
    assert services.remove_orphan_boxes(tmp_path) == 1
    assert mine.inner.is_dir() and not orphan.root.exists()
    assert mine.root.stat().st_mode & 0o777 == 0o700


def test_deleting_the_training_stops_both_sandboxes_entirely(
        live: Live, neighbours: dict[str, Any]) -> None:
    client, training_id = neighbours["client"], neighbours["training"]
    body = client.get(f"/api/v1/trainings/{training_id}/inference").json()
    shims = [psutil.Process(p["pid"]) for p in body["predictors"]]
    aim_shim = evaluation_pid(live, "training_id", training_id)
    assert aim_shim is not None
    everything = [psutil.Process(aim_shim), *shims]
    for shim in list(everything):
        everything += shim.children(recursive=True)
    assert any(p.name() == "bwrap" for p in everything)
    assert client.delete(f"/api/v1/trainings/{training_id}").status_code == 204
    _gone, alive = psutil.wait_procs(everything, timeout=15)
    assert alive == []
    assert not any(Path(s).exists() for s in neighbours["sockets"])


def test_links_planted_by_the_training_are_refused(live: Live) -> None:
    # The run may write its workspace: it links the predictor's files to platform secrets.
    secret = live.data_dir / "session-secret"
    plant = TRAIN_WITH_CHECKPOINTS + (
        "import os\n"
        f"os.symlink({str(secret)!r}, '../inference/pip-requirements.txt')\n")
    _, client = live.new_user("link")
    training_id = completed_training(live, client, fake_repo(client, train=plant))
    r = predict(client, training_id, image_bytes())
    assert r.status_code == 502, r.text
    assert "refused" in r.json()["detail"] and "link" in r.json()["detail"]
    assert secret.read_text().strip() not in r.text


def test_a_data_dir_too_long_for_unix_sockets_is_refused_clearly(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * (services.SOCKET_PATH_MAX - len(str(tmp_path))))
    with pytest.raises(OSError, match="too long for unix sockets"):
        services.new_box(deep)
    assert not deep.exists()


def test_a_deep_data_dir_gets_a_short_private_runtime_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = tmp_path / ("d" * 80) / "data"
    monkeypatch.setenv("TRAINYARD_DATA_DIR", str(deep))
    monkeypatch.delenv("TRAINYARD_RUNTIME_DIR", raising=False)
    get_settings.cache_clear()
    try:
        root = storage.runtime_root()
        assert not root.is_relative_to(deep) and root == storage.runtime_root()
        info = root.lstat()
        assert info.st_uid == os.geteuid() and info.st_mode & 0o777 == 0o700
        box = services.new_box(storage.runtime_dir("predictors"))  # short enough for sockets
        assert box.root.is_relative_to(root)
        shutil.rmtree(root)
        root.mkdir(mode=0o755)  # as another user could leave it in the shared temp dir
        root.chmod(0o755)
        with pytest.raises(OSError, match="not a private folder"):
            storage.runtime_root()
        root.rmdir()
    finally:
        get_settings.cache_clear()
