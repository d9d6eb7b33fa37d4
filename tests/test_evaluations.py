"""Evaluation in Aim: custom and standard reports behind the login, comparison, metrics, expiry."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import select

from app.db import make_engine
from app.evaluations.aim_data import read_runs
from app.evaluations.log_parser import parse_log
from app.evaluations.offline import offline_page
from app.evaluations.sources import aim_state
from app.models import Service
from app.statuses import FINISHED
from tests.browser import LAPTOP, ConsoleWatch, chromium_missing, launch, screenshot
from tests.cifar_data import write_cifar_binary
from tests.live import Live, start_live, unique
from tests.repo_files import config, create_repo, submit

# Aim's own SQLAlchemy models use a pre-2.0 spelling; reading runs here imports them.
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.MovedIn20Warning")

AIM_SERVER = "app.evaluations.aim_server"

# A training that tracks into an Aim repository at ./db/ (two runs, as the sample's
# train_aim.py loops over batch sizes) and prints LossMonitor-style lines.
AIM_TRAIN = """
import argparse
from aim import Run
p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=2)
a, _ = p.parse_known_args()
for bs in (64, 128):
    run = Run(repo="db", experiment="tiny", system_tracking_interval=None,
              capture_terminal_logs=False)
    run["hparams"] = {"batch_size": bs, "learning_rate": 0.001}
    for e in range(1, a.epochs + 1):
        for s in range(1, 11):
            loss = 2.3 / (e * 10 + s) ** 0.3
            run.track(loss, name="loss", step=(e - 1) * 10 + s, epoch=e,
                      context={"subset": "train"})
            print(f"Epoch:[{e:3d}/{a.epochs:3d}], step:[{s:5d}/   10], "
                  f"loss:[{loss:.3f}/{loss:.3f}], time: 12.5 ms, lr: 0.00100", flush=True)
        run.track(0.1 * e, name="accuracy", step=e, epoch=e, context={"subset": "test"})
        print(f"Epoch: [{e}/{a.epochs}], Train Loss: [{loss:.3f}], Accuracy: {0.1 * e:.4f}",
              flush=True)
    run.close()
"""
PLAIN_TRAIN = """
import argparse, time
p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--pause", type=float, default=0)
a, _ = p.parse_known_args()
for e in range(1, a.epochs + 1):
    for s in (10, 20):
        print(f"Epoch:[{e:3d}/{a.epochs:3d}], step:[{s:5d}/   20], "
              f"loss:[{2.0 / e + s / 100:.3f}/{2.0 / e:.3f}], time: 80{e}.5 ms, "
              f"lr: 0.0{e}", flush=True)
        time.sleep(a.pause)
    print(f"Epoch: [{e}/{a.epochs}], Train Loss: [{2.0 / e:.3f}], Accuracy: {0.3 * e:.4f}",
          flush=True)
"""
REPO_FILES = {"README.md": "evaluation tests", "code/aim_train.py": AIM_TRAIN,
              "code/plain.py": PLAIN_TRAIN, "code/fail.py": "raise SystemExit(2)\n",
              "code/quiet.py": "print('no metrics here')\n"}


@dataclass
class Trained:
    repo: str
    client: httpx.Client
    aim: int      # Completed, wrote an Aim repository at code/db/
    plain: int    # Completed, metrics only in its log
    failed: int   # Failed


def run_training(live: Live, client: httpx.Client, repo: str, name: str, boot: str,
                 **extra: Any) -> dict[str, Any]:
    r = submit(client, repo, config(name, boot_file=boot, **extra))
    assert r.status_code == 201, r.text
    return live.wait_status(client, r.json()["id"], FINISHED, timeout=120)


@pytest.fixture(scope="module")
def trained(live: Live) -> Trained:
    _, client = live.new_user("ev")
    repo = create_repo(client, REPO_FILES)
    aim = run_training(live, client, repo, "aim-run", "aim_train.py")
    plain = run_training(live, client, repo, "plain-run", "plain.py")
    failed = run_training(live, client, repo, "failed-run", "fail.py")
    assert (aim["status"], plain["status"], failed["status"]) == \
        ("Completed", "Completed", "Failed"), (aim, plain, failed)
    return Trained(repo, client, aim["id"], plain["id"], failed["id"])


def wait_running(client: httpx.Client, url: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(url).json()
        if body["status"] != "starting":
            assert body["status"] == "running", body
            return body
        time.sleep(0.1)
    raise AssertionError(f"evaluation stayed starting: {body}")


def _aim_service(live: Live, column: str, subject_id: int) -> tuple[int | None, str] | None:
    """(pid, socket) of the evaluation's Aim process: its row among the services."""
    owner = f"{'training' if column == 'training_id' else 'repo'}:{subject_id}"
    engine = make_engine(live.database_url or f"sqlite:///{live.data_dir / 'trainyard.db'}")
    try:
        with engine.connect() as db:
            row = db.execute(select(Service.pid, Service.socket).where(
                Service.kind == "aim", Service.owner_key == owner)).first()
    finally:
        engine.dispose()
    return None if row is None else (row[0], row[1] or "")


def evaluation_pid(live: Live, column: str, subject_id: int) -> int | None:
    found = _aim_service(live, column, subject_id)
    return None if found is None else found[0]


def served_repo(live: Live, column: str, subject_id: int) -> Path:
    """The Aim repository an evaluation's process serves: in its box, beside its socket."""
    found = _aim_service(live, column, subject_id)
    assert found is not None
    socket = found[1]
    path = Path(socket)
    assert path.parent.parent.parent == live.data_dir / "run" / "aim"
    return path.parent / "repo"


def process_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


# -- without a platform -------------------------------------------------------------------

def test_log_parser_reads_spacing_variants_and_splits_runs() -> None:
    log = "\n".join([
        "Epoch:[  1/ 2], step:[   10/   20], loss:[2.301/2.305], time: 812.345 ms, lr: 0.00100",
        "[INFO] epoch:[1/2],step:[20/20],loss:[2.2/2.25],time:0.8 s,lr:[0.0009]",
        "Epoch: [1/2], Train Loss: [1.9], Accuracy: 0.4123",
        "epoch: 2 step: 5, loss is 1.5",
        "Epoch: [ 2 / 2 ] , Train Loss : [ 1.7 ] , Accuracy : 0.5",
        "unrelated line with epoch in it",
        "Epoch:[  1/ 2], step:[   10/   20], loss:[2.4/2.4], time: 9 ms, lr: 0.001",
        "Epoch: [1/2], Accuracy: 0.2",
    ])
    runs = parse_log(log, run_name="job", params={"hparams": {"epochs": 2}})
    assert [r.name for r in runs] == ["job", "job #2"]
    first = {(s.name, tuple(s.context.items())): s for s in runs[0].series.values()}
    loss = first[("loss", (("subset", "train"),))]
    assert loss.steps == [10, 20, 5] and loss.values == [2.301, 2.2, 1.5]
    assert loss.epochs == [1, 1, 2]
    assert first[("step_time_ms", (("subset", "train"),))].values == [812.345, 800.0]
    assert first[("lr", (("subset", "train"),))].values == [0.001, 0.0009]
    accuracy = first[("accuracy", (("subset", "test"),))]
    assert accuracy.steps == [1, 2] and accuracy.values == [0.4123, 0.5]
    assert first[("epoch_loss", (("subset", "train"),))].values == [1.9, 1.7]
    assert "time" not in {s.name for s in runs[0].series.values()}
    assert runs[1].params == {"hparams": {"epochs": 2}}
    assert [s.name for s in runs[1].series.values()] == ["loss", "step_time_ms", "lr",
                                                        "accuracy"]


def test_offline_page_drops_external_assets_and_encodes_state() -> None:
    page = ('<html><head><meta charset="utf-8"/><script src="https://cdn.example/p.js">'
            '</script><link rel="stylesheet" href="https://fonts.example/icons"/>'
            '<link rel="stylesheet" href="/trainings/1/aim/static-files/a.css"/></head></html>')
    out = offline_page(page)
    assert "cdn.example" not in out and "fonts.example" not in out
    assert "/trainings/1/aim/static-files/a.css" in out
    assert out.index("window.loadPyodide") < out.index("a.css")
    # Aim's UI state in URLs: "O-" + url-safe base64 of encodeURI(JSON), no padding.
    assert aim_state({"a": 1}) == "O-JTdCJTIyYSUyMjoxJTdE"


# -- through the live platform --------------------------------------------------------------

def test_metrics_of_an_aim_repository_nobody_indexed_yet(trained: Trained) -> None:
    # Runs enter an Aim repository's index only when an Aim UI indexes them; the metrics
    # endpoint must read them before that (as it does while the training runs).
    body = trained.client.get(f"/api/v1/trainings/{trained.aim}/metrics").json()
    assert body["source"] == "aim" and body["aim_repo"] == "code/db/"
    assert sorted(r["params"]["hparams"]["batch_size"] for r in body["runs"]) == [64, 128]
    loss = [s for s in body["series"] if s["name"] == "loss"]
    assert len(loss) == 2 and loss[0]["steps"] == list(range(1, 21))
    assert loss[0]["context"] == {"subset": "train"} and loss[0]["epochs"][-1] == 2


def test_custom_evaluation_is_served_through_the_login(live: Live, trained: Trained) -> None:
    client, tid = trained.client, trained.aim
    api = f"/api/v1/trainings/{tid}/evaluation"
    started = time.monotonic()
    r = client.post(api, json={"type": "custom", "aim_path": "./db/"})
    assert r.status_code == 202, r.text
    assert r.json()["status"] in ("starting", "running")
    body = wait_running(client, api)
    assert time.monotonic() - started < 30
    assert body["url"] == f"/trainings/{tid}/aim/" and body["type"] == "custom"
    assert body["report_url"].startswith(f"/trainings/{tid}/aim/metrics?select=O-")

    index = client.get(body["url"], headers={"Accept": "text/html"})
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert "default-src 'self'" in index.headers["content-security-policy"]
    assert not re.search(r'(?:src|href)="https?://', index.text)
    assert "cdn.jsdelivr.net" not in index.text and "pyodide.js" not in index.text
    assets = re.findall(rf'(?:src|href)="(/trainings/{tid}/aim/static-files/[^"]+)"', index.text)
    assert any("main.js" in a for a in assets), assets
    script = client.get(next(a for a in assets if "main.js" in a))
    assert script.status_code == 200 and len(script.content) > 100_000
    assert script.headers.get("content-encoding") == "gzip"
    params = client.get(f"{body['url']}api/projects/params/", params={"sequence": "metric"})
    assert params.status_code == 200, params.text
    assert set(params.json()["metric"]) == {"loss", "accuracy"}
    assert params.json()["params"]["hparams"]["batch_size"] == {"__example_type__": "<class 'int'>"}

    again = client.post(api, json={"type": "custom", "aim_path": "db"})
    assert again.status_code == 202 and again.json()["status"] == "running"
    assert again.json()["created_at"] == body["created_at"]
    assert again.json()["aim_path"] == "code/db/"

    anonymous = live.client(None)
    assert anonymous.get(body["url"]).status_code == 401
    page = anonymous.get(body["url"], headers={"Accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"] == f"/login?next=/trainings/{tid}/aim/"
    assert anonymous.get(f"{body['url']}api/projects/").status_code == 401
    _, stranger = live.new_user("st")
    assert stranger.get(f"{body['url']}api/projects/").status_code == 404
    assert stranger.get(api).status_code == 404


def test_evaluation_rules_refuse(live: Live, trained: Trained) -> None:
    client = trained.client
    failed = client.post(f"/api/v1/trainings/{trained.failed}/evaluation",
                         json={"type": "standard"})
    assert failed.status_code == 409
    assert failed.json()["error"] == "training_not_completed"
    assert "Failed" in failed.json()["detail"]
    missing = client.post(f"/api/v1/trainings/{trained.plain}/evaluation",
                          json={"type": "custom", "aim_path": "./nope/"})
    assert missing.status_code == 409 and missing.json()["error"] == "aim_repo_not_found"
    assert "./nope/" in missing.json()["detail"]
    outside = client.post(f"/api/v1/trainings/{trained.plain}/evaluation",
                          json={"type": "custom", "aim_path": "../../.."})
    assert outside.status_code == 422
    no_path = client.post(f"/api/v1/trainings/{trained.plain}/evaluation",
                          json={"type": "custom"})
    assert no_path.status_code == 422 and "aim_path" in no_path.text
    never = client.get(f"/api/v1/trainings/{trained.plain}/evaluation")
    assert never.status_code == 404 and never.json()["error"] == "no_evaluation"
    assert live.client(None).post(f"/api/v1/trainings/{trained.plain}/evaluation",
                                  json={"type": "standard"}).status_code == 401


def test_standard_evaluation_names_metrics_from_the_log(live: Live, trained: Trained) -> None:
    client, tid = trained.client, trained.plain
    api = f"/api/v1/trainings/{tid}/evaluation"
    assert client.post(api, json={"type": "standard"}).status_code == 202
    body = wait_running(client, api)
    params = client.get(f"{body['url']}api/projects/params/", params={"sequence": "metric"})
    metrics = params.json()["metric"]
    assert metrics["loss"] == [{"subset": "train"}]
    assert metrics["accuracy"] == [{"subset": "test"}]
    assert {"step_time_ms", "lr", "epoch_loss"} <= set(metrics) and "time" not in metrics
    assert "epochs" in params.json()["params"]["hparams"]
    # Trainyard's own repository, in the Aim process's box and not in the workspace.
    [run] = read_runs(served_repo(live, "training_id", tid))
    assert run.name == "plain-run" and run.params["hparams"] == {"epochs": 2}
    accuracy = next(s for s in run.series.values() if s.name == "accuracy")
    assert accuracy.steps == [1, 2] and accuracy.values == [0.3, 0.6]
    assert not (live.data_dir / "trainings" / str(tid) / "workspace" / "repo").exists()

    series = client.get(f"/api/v1/trainings/{tid}/metrics").json()
    assert series["source"] == "log" and series["aim_repo"] is None
    loss = next(s for s in series["series"] if s["name"] == "loss")
    assert loss["context"] == {"subset": "train"} and loss["steps"] == [10, 20, 30, 40]
    aim = client.get(f"/api/v1/trainings/{trained.aim}/metrics").json()
    assert aim["source"] == "aim" and aim["aim_repo"] == "code/db/"
    assert {s["name"] for s in aim["series"]} == {"loss", "accuracy"}
    assert len({s["run"] for s in aim["series"]}) == 2


def test_metrics_follow_a_running_training(live: Live) -> None:
    _, client = live.new_user("mr")
    repo = create_repo(client, REPO_FILES)
    r = submit(client, repo, config("live-metrics", boot_file="plain.py", hypeparameters=[
        {"name": "epochs", "value": "30"}, {"name": "pause", "value": "0.1"}]))
    tid = r.json()["id"]
    live.wait_status(client, tid, {"Running"} | FINISHED)
    counts = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(set(counts)) < 2:
        body = client.get(f"/api/v1/trainings/{tid}/metrics").json()
        loss = [s for s in body["series"] if s["name"] == "loss"]
        if loss:
            counts.append(len(loss[0]["steps"]))
        time.sleep(0.3)
    assert len(set(counts)) >= 2 and body["status"] == "Running", (counts, body["status"])
    thin = client.get(f"/api/v1/trainings/{tid}/metrics", params={"max_points": 10}).json()
    assert all(len(s["steps"]) <= 11 for s in thin["series"])
    client.post(f"/api/v1/trainings/{tid}/terminate")
    live.wait_status(client, tid, FINISHED)


def test_compare_puts_the_repository_trainings_side_by_side(live: Live,
                                                            trained: Trained) -> None:
    client = trained.client
    api = f"/api/v1/repos/{trained.repo}/evaluation"
    r = client.post(api)
    assert r.status_code == 202, r.text
    body = wait_running(client, api)
    assert body["type"] == "compare" and body["url"] == f"/repos/{trained.repo}/aim/"
    params = client.get(f"{body['url']}api/projects/params/",
                        params={"sequence": "metric"}).json()
    assert {"loss", "accuracy"} <= set(params["metric"])
    assert "job_name" in params["params"]["trainyard"]
    repo_id = body["repo_id"]
    runs = read_runs(served_repo(live, "repo_id", repo_id))
    names = sorted(r.name for r in runs)
    assert names[-1] == "plain-run" and sum(n.startswith("aim-run: ") for n in names) == 2
    assert {r.params["trainyard"]["job_name"] for r in runs} == {"aim-run", "plain-run"}
    assert live.client(None).get(f"{body['url']}api/projects/").status_code == 401


def test_deleting_a_training_stops_its_evaluation(live: Live) -> None:
    _, client = live.new_user("dl")
    repo = create_repo(client, REPO_FILES)
    tid = run_training(live, client, repo, "to-delete", "plain.py")["id"]
    api = f"/api/v1/trainings/{tid}/evaluation"
    client.post(api, json={"type": "standard"})
    wait_running(client, api)
    pid = evaluation_pid(live, "training_id", tid)
    assert pid is not None and psutil.pid_exists(pid)
    assert client.delete(f"/api/v1/trainings/{tid}").status_code == 204
    assert process_gone(pid)
    assert client.get(f"/trainings/{tid}/aim/api/projects/").status_code == 404


def test_concurrent_starts_make_one_aim_process(live: Live, trained: Trained) -> None:
    client, tid = trained.client, trained.plain
    api = f"/api/v1/trainings/{tid}/evaluation"
    client.delete(api)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: client.post(api, json={"type": "standard"}),
                                range(4)))
    assert [a.status_code for a in answers] == [202] * 4
    assert len({a.json()["created_at"] for a in answers}) == 1
    wait_running(client, api)
    log = live.data_dir / "trainings" / str(tid) / "evaluation" / "aim.log"
    writers = [p for p in _aim_processes(psutil.Process(live.proc.pid))
               if any(f.path == str(log) for f in p.open_files())]
    [writer] = writers  # the Aim server, below the shim whose pid the row holds
    assert evaluation_pid(live, "training_id", tid) in [p.pid for p in writer.parents()]


def _aim_processes(root: psutil.Process) -> list[psutil.Process]:
    found = []
    for proc in root.children(recursive=True):
        try:
            if AIM_SERVER in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture()
def short_lived(tmp_path: Path) -> Iterator[Live]:
    """A platform whose reports expire after 2 s idle, with room for one Aim UI."""
    platform = start_live(tmp_path / "data", workers=1, extra_env={
        "TRAINYARD_EVALUATION_IDLE_S": "2", "TRAINYARD_MAX_EVALUATIONS": "1"})
    yield platform
    platform.stop()


def test_idle_reports_expire_and_none_outlive_trainyard(short_lived: Live) -> None:
    live = short_lived
    _, client = live.new_user("ex")
    repo = create_repo(client, REPO_FILES)
    first = run_training(live, client, repo, "first-run", "plain.py")["id"]
    second = run_training(live, client, repo, "second-run", "plain.py")["id"]
    api = f"/api/v1/trainings/{first}/evaluation"
    client.post(api, json={"type": "standard"})
    body = wait_running(client, api)
    pid = evaluation_pid(live, "training_id", first)
    assert pid is not None
    for _ in range(6):  # used every half second: it stays up past the idle time
        assert client.get(f"{body['url']}api/projects/").status_code == 200
        time.sleep(0.5)
    assert client.get(api).json()["status"] == "running"
    deadline = time.monotonic() + 15
    while client.get(api).json()["status"] != "expired" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.get(api).json()["status"] == "expired"
    assert process_gone(pid)
    # A proxied request starts an expired report again.
    assert client.get(f"{body['url']}api/projects/").status_code == 200
    assert client.get(api).json()["status"] == "running"

    # The cap is one Aim UI: starting another stops the least recently used.
    revived = evaluation_pid(live, "training_id", first)
    other = f"/api/v1/trainings/{second}/evaluation"
    assert client.get(f"{body['url']}api/projects/").status_code == 200  # just used
    client.post(other, json={"type": "standard"})
    assert client.get(api).json()["status"] == "expired"
    assert revived is not None and process_gone(revived)
    wait_running(client, other)

    # Killed outright, the API takes its Aim processes (and the warm spare) with it.
    [api_process] = [p for p in psutil.Process(live.proc.pid).children()
                     if "uvicorn" in " ".join(p.cmdline())]
    running = _aim_processes(api_process)
    assert len(running) >= 1
    api_process.kill()
    _gone, alive = psutil.wait_procs(running, timeout=15)
    assert alive == []


@pytest.mark.browser
def test_report_opens_offline_with_the_loss_chart(live: Live, trained: Trained,
                                                  tmp_path: Path) -> None:
    missing = chromium_missing()
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import expect, sync_playwright

    client, tid = trained.client, trained.plain
    client.delete(f"/api/v1/trainings/{tid}/evaluation")  # start from a stopped report
    token = str(client.headers["Authorization"]).split()[1]
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            context = browser.new_context(viewport=LAPTOP)
            requests: list[str] = []
            context.on("request", lambda request: requests.append(request.url))
            page = context.new_page()
            watch = ConsoleWatch()
            watch.attach(page)
            page.goto(f"{live.url}/login?next=/trainings/{tid}")
            page.fill("#token", token)
            page.click("button[type=submit]")

            panel = page.locator("#evaluation-app")
            start = panel.locator("[data-role=start]")
            expect(panel.locator("[data-role=loss-chart] canvas")).to_have_count(1)
            expect(panel.locator("[data-role=accuracy-chart] canvas")).to_have_count(1)
            expect(start).to_have_text("Start evaluation")
            expect(start).to_be_enabled()
            panel.locator("[data-role=standard]").check()
            start.click()
            expect(start).to_have_text("Evaluating…")
            expect(start).to_be_disabled()
            view = panel.locator("[data-role=view]")
            expect(view).to_be_visible(timeout=60_000)
            expect(view).to_have_text("View report")
            screenshot(page, tmp_path, "evaluation-panel")

            with context.expect_page() as opened:
                view.click()
            report = opened.value
            report_watch = ConsoleWatch()
            report_watch.attach(report)
            title = report.locator("svg text", has_text='metric.name="loss"')
            expect(title.first).to_be_visible(timeout=30_000)
            expect(report.locator(".LineChart path.Line").first).to_be_attached()
            screenshot(report, tmp_path, "aim-report")
            assert report.url.startswith(f"{live.url}/trainings/{tid}/aim/metrics")
        finally:
            browser.close()
    foreign = [u for u in requests if not u.startswith(live.url)]
    assert foreign == [], foreign
    assert any("/aim/static-files/" in u for u in requests)
    assert any("/aim/api/runs/search/metric" in u for u in requests)
    assert watch.errors == []
    # Aim's code editor cancels its own loader when the explorer mounts (a plain object, not
    # an Error, hence "Object"); that rejection is Aim's and harmless. Nothing else may fail.
    assert [e for e in report_watch.errors if e != "pageerror: Object"] == []


@pytest.mark.slow
def test_the_sample_aim_training_opens_as_a_custom_report(live: Live, tmp_path: Path) -> None:
    dataset = unique("evcifar")
    r = live.admin.post("/api/v1/datasets", json={
        "name": dataset, "path": str(write_cifar_binary(tmp_path / "cifar", 32, 16))})
    assert r.status_code == 201, r.text
    _, client = live.new_user("sa")
    r = client.post("/api/v1/repos", json={"name": unique("resnet"), "template": "resnet50"})
    assert r.status_code == 201, r.text
    repo = f"{r.json()['owner']}/{r.json()['name']}"
    hyper = {"epochs": 2, "batch_size": 8, "train_limit": 32, "test_limit": 16, "log_every": 1}
    done = run_training(live, client, repo, "sample-aim", "train_aim.py",
                        code_dir="train/train_dir/",
                        outputs=[{"output_dir": "train/output/", "name": "output_url"}],
                        hypeparameters=[{"name": k, "value": str(v)} for k, v in hyper.items()],
                        inputs=[{"input_url": f"datasets/admin/{dataset}/",
                                 "name": "data_url"}])
    assert done["status"] == "Completed", done
    tid = done["id"]
    metrics = client.get(f"/api/v1/trainings/{tid}/metrics").json()
    assert metrics["source"] == "aim" and metrics["aim_repo"] == "train/train_dir/db/"
    contexts = {(s["name"], s["context"].get("subset")) for s in metrics["series"]}
    assert {("loss", None), ("loss", "train"), ("accuracy", "test")} <= contexts
    per_step = next(s for s in metrics["series"] if s["name"] == "loss" and not s["context"])
    assert len(per_step["steps"]) == 2 * 4

    api = f"/api/v1/trainings/{tid}/evaluation"
    assert client.post(api, json={"type": "custom", "aim_path": "./db/"}).status_code == 202
    body = wait_running(client, api)
    assert body["aim_path"] == "train/train_dir/db/"
    params = client.get(f"{body['url']}api/projects/params/", params={"sequence": "metric"})
    assert {"batch_size", "learning_rate", "momentum"} <= set(params.json()["params"]["hparams"])
    # The same log also makes a standard report with the parsed metrics.
    assert client.post(api, json={"type": "standard"}).status_code == 202
    body = wait_running(client, api)
    metric = client.get(f"{body['url']}api/projects/params/",
                        params={"sequence": "metric"}).json()["metric"]
    assert metric["loss"] == [{"subset": "train"}] and metric["accuracy"] == [{"subset": "test"}]
