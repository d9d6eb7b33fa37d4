"""Training instances through the live platform: rules, execution, logs, outputs, terminate."""

from __future__ import annotations

import io
import json
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.cifar_data import write_cifar_binary
from tests.live import Live
from tests.repo_files import config, create_repo, processes_naming, submit
from tests.test_training_config import SEED_CONFIG

FINISHED = {"Completed", "Failed", "Terminated", "Timeout", "Abnormal"}


def test_training_runs_prints_and_writes_outputs(live: Live) -> None:
    _, client = live.new_user()
    repo = create_repo(client)
    r = submit(client, repo, config("first-run", hypeparameters=[{"name": "epochs",
                                                                 "value": 3}]))
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "Pending" and created["repo"] == repo
    assert created["runtime"].startswith("mindspore")
    done = live.wait_status(client, created["id"], FINISHED)
    assert done["status"] == "Completed", done
    assert done["started_at"] and done["finished_at"] and done["duration_s"] >= 0
    assert done["worker"]
    log = client.get(f"/api/v1/trainings/{created['id']}/log").text
    assert "epoch 1/3" in log and "epoch 3/3" in log and "finished" in log
    tail = client.get(f"/api/v1/trainings/{created['id']}/log", params={"offset": -9})
    assert tail.text.endswith("\n") and int(tail.headers["X-Log-Start"]) > 0

    outputs = client.get(f"/api/v1/trainings/{created['id']}/outputs").json()
    paths = {o["path"]: o for o in outputs}
    assert paths["out/model.ckpt"]["checkpoint"] is True
    assert paths["out/model.ckpt"]["size"] == 700
    assert paths["out/sub/notes.txt"]["checkpoint"] is False
    one = client.get(f"/api/v1/trainings/{created['id']}/outputs/out/model.ckpt")
    assert one.content == b"weights" * 100
    whole = client.get(f"/api/v1/trainings/{created['id']}/outputs/out")
    assert whole.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(whole.content)) as tar:
        assert sorted(tar.getnames()) == ["out", "out/model.ckpt", "out/sub",
                                          "out/sub/notes.txt"]
    missing = client.get(f"/api/v1/trainings/{created['id']}/outputs/code/main.py")
    assert missing.status_code == 404


def test_failed_training_keeps_the_error_tail(live: Live) -> None:
    _, client = live.new_user()
    repo = create_repo(client)
    tid = submit(client, repo, config("broken-run", boot_file="fail.py")).json()["id"]
    done = live.wait_status(client, tid, FINISHED)
    assert done["status"] == "Failed" and done["exit_code"] == 3
    assert "Traceback: something broke" in done["error"]
    assert "line 49" in done["error"] and "line 0\n" not in done["error"]


def test_platform_secrets_do_not_reach_the_training(live: Live) -> None:
    _, client = live.new_user()
    repo = create_repo(client)
    tid = submit(client, repo, config("env-check", boot_file="env.py",
                                      env_variables={"MY_FLAG": "on"})).json()["id"]
    assert live.wait_status(client, tid, FINISHED)["status"] == "Completed"
    log = client.get(f"/api/v1/trainings/{tid}/log").text
    env = json.loads(log.split("ENV ", 1)[1].splitlines()[0])
    assert env["MY_FLAG"] == "on" and env["PYTHONUNBUFFERED"] == "1"
    leaked = [k for k, v in env.items() if k.startswith(("TRAINYARD_", "CELERY"))
              or "redis://" in v or "ty_" in v or "postgresql" in v]
    assert leaked == []


def test_code_is_snapshotted_at_submission(live: Live) -> None:
    _, client = live.new_user()
    repo = create_repo(client)
    blocker = submit(client, repo, config("blocker", boot_file="sleep.py")).json()["id"]
    # Edits after submission must not change what the queued training runs.
    r = client.put(f"/api/v1/repos/{repo}/files/code/sleep.py", content=b"print('edited')")
    assert r.status_code == 200
    live.wait_status(client, blocker, {"Running"})
    time.sleep(0.5)
    assert "sleeping" in client.get(f"/api/v1/trainings/{blocker}/log").text
    client.post(f"/api/v1/trainings/{blocker}/terminate")
    assert live.wait_status(client, blocker, FINISHED, timeout=15)["status"] == "Terminated"


def test_terminate_kills_the_whole_process_tree(live: Live) -> None:
    _, client = live.new_user()
    repo = create_repo(client)
    tid = submit(client, repo, config("family", boot_file="family.py")).json()["id"]
    live.wait_status(client, tid, {"Running"})
    out = live.data_dir / "trainings" / str(tid) / "workspace" / "out"
    deadline = time.monotonic() + 30
    while not (out / "grandchild.started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (out / "child.started").exists()
    family = processes_naming(str(out))
    assert len(family) >= 3  # the boot file, its child, the setsid grandchild
    r = client.post(f"/api/v1/trainings/{tid}/terminate")
    assert r.status_code == 202 and r.json()["status"] in ("Terminating", "Terminated")
    started = time.monotonic()
    done = live.wait_status(client, tid, FINISHED, timeout=15)
    assert done["status"] == "Terminated"
    while processes_naming(str(out)) and time.monotonic() - started < 10:
        time.sleep(0.1)
    assert processes_naming(str(out)) == []
    again = client.post(f"/api/v1/trainings/{tid}/terminate")
    assert again.status_code == 409 and again.json()["error"] == "training_finished"


def test_log_stream_delivers_lines_while_running(live: Live) -> None:
    _, client = live.new_user()
    repo = create_repo(client)
    tid = submit(client, repo, config("ticker", boot_file="ticker.py", hypeparameters=[
        {"name": "ticks", "value": "15"}, {"name": "every", "value": "0.2"}])).json()["id"]
    seen: list[tuple[str, str]] = []
    last_id = ""
    ticks_while_running = 0
    with client.stream("GET", f"/api/v1/trainings/{tid}/log/stream") as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        event = ""
        status = ""
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("id:"):
                last_id = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = line[5:].lstrip(" ")
                seen.append((event, data))
                if event == "status":
                    status = data
                if event == "log" and data.startswith("tick") and status == "Running":
                    ticks_while_running += 1
    assert seen[-1][0] == "end" and seen[-1][1] == "Completed"
    assert ticks_while_running >= 10  # lines arrived while the training was still running
    ticks = [d for e, d in seen if e == "log" and d.startswith("tick")]
    assert len(ticks) == 15
    # Resuming with Last-Event-ID sends nothing already seen.
    with client.stream("GET", f"/api/v1/trainings/{tid}/log/stream",
                       headers={"Last-Event-ID": last_id}) as resp:
        rest = [ln for ln in resp.iter_lines() if ln.startswith("data:") and "tick" in ln]
    assert rest == []
    log = client.get(f"/api/v1/trainings/{tid}/log").content
    assert int(last_id) == len(log)


def test_one_unfinished_training_per_repo_under_concurrency(any_live: Live) -> None:
    _, client = any_live.new_user()
    repo = create_repo(client)

    def create(i: int) -> httpx.Response:
        with any_live.client(client.headers["Authorization"].split()[1]) as c:
            return submit(c, repo, config(f"race-{i:02d}", boot_file="sleep.py"))

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(create, range(20)))
    codes = sorted(r.status_code for r in results)
    assert codes == [201] + [409] * 19, [r.text for r in results]
    assert {r.json()["error"] for r in results if r.status_code == 409} == {"training_running"}
    listed = client.get(f"/api/v1/repos/{repo}/trainings").json()
    assert len(listed) == 1
    running = listed[0]["id"]
    busy = submit(client, repo, config("one-more", boot_file="sleep.py"))
    assert busy.status_code == 409 and "terminate it" in busy.json()["detail"]
    assert client.delete(f"/api/v1/trainings/{running}").status_code == 204
    assert client.get(f"/api/v1/trainings/{running}").status_code == 404
    assert not (any_live.data_dir / "trainings" / str(running)).exists()


def test_five_trainings_per_repo_and_unique_names(any_live: Live) -> None:
    _, client = any_live.new_user()
    repo = create_repo(client)
    ids = []
    for i in range(5):
        r = submit(client, repo, config(f"done-{i}", hypeparameters=[]))
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
        any_live.wait_status(client, ids[-1], FINISHED)
        if i == 0:
            dup = submit(client, repo, config("done-0"))
            assert dup.status_code == 409 and dup.json()["error"] == "duplicate_name"
    full = submit(client, repo, config("sixth"))
    assert full.status_code == 409 and full.json()["error"] == "training_limit"
    assert "limit is 5" in full.json()["detail"]

    def create(i: int) -> int:
        with any_live.client(client.headers["Authorization"].split()[1]) as c:
            return submit(c, repo, config(f"again-{i}")).status_code

    assert client.delete(f"/api/v1/trainings/{ids[0]}").status_code == 204
    with ThreadPoolExecutor(6) as pool:
        codes = sorted(pool.map(create, range(6)))
    assert codes == [201] + [409] * 5
    assert len(client.get(f"/api/v1/repos/{repo}/trainings").json()) == 5


def test_invalid_config_names_the_field_and_leaves_nothing(live: Live) -> None:
    _, client = live.new_user()
    repo = create_repo(client)
    bad = config("ab", inputs=[{"name": "data_url", "input_url": "datasets/nobody/none/"}])
    r = submit(client, repo, bad)
    assert r.status_code == 422
    fields = {f["field"] for f in r.json()["fields"]}
    assert "job_name" in fields
    r = submit(client, repo, config("valid-name", inputs=[
        {"name": "data_url", "input_url": "datasets/nobody/none/"}]))
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "inputs[0].input_url"
    r = submit(client, repo, config("valid-name", boot_file="nope.py"))
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "boot_file"
    assert client.get(f"/api/v1/repos/{repo}/trainings").json() == []
    assert not list((live.data_dir / "trainings").glob("*")) or all(
        (p / "workspace").exists() for p in (live.data_dir / "trainings").iterdir())


def test_config_path_with_comments_and_syntax_errors(live: Live) -> None:
    _, client = live.new_user()
    repo = create_repo(client)
    jsonc = ('{\n  // a comment\n  "code_dir": "code/",\n  "boot_file": "main.py",\n'
             '  "outputs": [{"output_dir": "out/", "name": "output_url"},],\n'
             '  "job_name": "from-file",\n}\n')
    client.put(f"/api/v1/repos/{repo}/files/train/config.json", content=jsonc.encode())
    r = client.post(f"/api/v1/repos/{repo}/trainings", json={"config_path": "train/config.json"})
    assert r.status_code == 201, r.text
    assert r.json()["config"]["job_name"] == "from-file"
    live.wait_status(client, r.json()["id"], FINISHED)
    client.put(f"/api/v1/repos/{repo}/files/train/broken.json",
               content=b'{\n  "job_name": "x"\n  "code_dir": "code/"\n}')
    r = client.post(f"/api/v1/repos/{repo}/trainings", json={"config_path": "train/broken.json"})
    assert r.status_code == 422
    assert "line 3" in r.json()["detail"] and "column" in r.json()["detail"]
    r = client.post(f"/api/v1/repos/{repo}/trainings", json={"config_path": "train/none.json"})
    assert r.status_code == 404


def test_pending_training_terminates_at_once(live: Live, tmp_path: Path) -> None:
    _, client = live.new_user()
    repo = create_repo(client)
    first = submit(client, repo, config("long-one", boot_file="sleep.py")).json()["id"]
    r = client.post(f"/api/v1/trainings/{first}/terminate")
    assert r.status_code == 202
    done = live.wait_status(client, first, FINISHED, timeout=15)
    assert done["status"] == "Terminated"


def test_delete_repo_only_when_its_trainings_are_finished(live: Live) -> None:
    _user, client = live.new_user()
    repo = create_repo(client)
    tid = submit(client, repo, config("blocking", boot_file="sleep.py")).json()["id"]
    live.wait_status(client, tid, {"Running"})
    r = client.delete(f"/api/v1/repos/{repo}")
    assert r.status_code == 409 and r.json()["error"] == "training_running"
    client.post(f"/api/v1/trainings/{tid}/terminate")
    live.wait_status(client, tid, FINISHED, timeout=15)
    assert client.delete(f"/api/v1/repos/{repo}").status_code == 204
    assert client.get(f"/api/v1/repos/{repo}").status_code == 404
    assert client.get(f"/api/v1/trainings/{tid}").status_code == 404
    assert not (live.data_dir / "trainings" / str(tid)).exists()
    assert not (live.data_dir / "repos" / repo).exists()


def test_the_seeds_config_pasted_as_it_is(live: Live, tmp_path: Path) -> None:
    """The tutorial's config, comments and trailing comma included: the only problem left
    is the tutorial's dataset, which does not exist here, and the error says so."""
    user, client = live.new_user()
    assert client.post("/api/v1/repos", json={"name": "ResNet50"}).status_code == 201
    client.put(f"/api/v1/repos/{user}/ResNet50/files/train/seed.json",
               content=SEED_CONFIG.encode())
    r = client.post(f"/api/v1/repos/{user}/ResNet50/trainings",
                    json={"config_path": "train/seed.json"})
    assert r.status_code == 422, r.text
    fields = {f["field"]: f["message"] for f in r.json()["fields"]}
    assert set(fields) == {"inputs[0].input_url", "inputs[1].input_url"}
    assert "datasets/drizzlezyk/cifar10 does not exist" in fields["inputs[1].input_url"]
    # Pasted as the request body, with the inputs pointed at data that exists here.
    folder = write_cifar_binary(tmp_path / "cifar", 20, 10)
    live.admin.post("/api/v1/datasets", json={"name": "cifar10", "path": str(folder)})
    pasted = SEED_CONFIG.replace("datasets/drizzlezyk/cifar10/resnet50_224.ckpt",
                                 "datasets/admin/cifar10/test_batch.bin").replace(
        "datasets/drizzlezyk/cifar10/", "datasets/admin/cifar10/")
    r = client.post(f"/api/v1/repos/{user}/ResNet50/trainings", content=pasted.encode(),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert r.json()["config"]["job_name"] == "test1"
    client.post(f"/api/v1/trainings/{r.json()['id']}/terminate")
    live.wait_status(client, r.json()["id"], FINISHED, timeout=30)
    broken = pasted.replace('"boot_file": "train.py",', '"boot_file": "train.py"')
    r = client.post(f"/api/v1/repos/{user}/ResNet50/trainings", content=broken.encode(),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "line 5, column 6" in r.json()["detail"], r.text
