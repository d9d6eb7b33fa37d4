"""Inference through the live platform: predictions, bad uploads, recovery, batching, publish."""

from __future__ import annotations

import asyncio
import io
import math
import shutil
import struct
import sys
import tarfile
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from app.config import get_settings
from app.inference.manager import PredictorManager, PredictorSpec, checkpoint_of
from app.models import Repository, Training, TrainingStatus, User
from app.procs import sandbox as sandboxing
from tests.browser import LAPTOP, ConsoleWatch, chromium_missing, launch, screenshot
from tests.cifar_data import write_cifar_binary
from tests.conftest import SHARED_DATA
from tests.inference_apps import (
    BROKEN_APP,
    CLASSES,
    FAKE_APP,
    TRAIN_WITHOUT_CHECKPOINT,
    completed_training,
    fake_repo,
    image_bytes,
    predict,
)
from tests.live import Live, unique
from tests.repo_files import config, create_repo, submit


@pytest.fixture(scope="module")
def trained(live: Live) -> tuple[httpx.Client, int]:
    """A user's client and a Completed training whose inference app is the fake model."""
    _, client = live.new_user()
    return client, completed_training(live, client, fake_repo(client))


def check_distribution(body: dict[str, Any]) -> None:
    probs = [p["probability"] for p in body["predictions"]]
    assert sorted(p["label"] for p in body["predictions"]) == sorted(CLASSES)
    assert probs == sorted(probs, reverse=True)
    assert math.isclose(sum(probs), 1.0, abs_tol=1e-4)
    assert all(0.0 <= p <= 1.0 for p in probs)


def predictor_pids(client: httpx.Client, training_id: int) -> list[int]:
    body = client.get(f"/api/v1/trainings/{training_id}/inference").json()
    return [p["pid"] for p in body["predictors"]]


def test_predict_returns_every_class_sorted_with_the_best_checkpoint(
        trained: tuple[httpx.Client, int]) -> None:
    client, tid = trained
    first = predict(client, tid, image_bytes())
    assert first.status_code == 200, first.text
    body = first.json()
    check_distribution(body)
    assert body["checkpoint"]["path"] == "out/best.ckpt" and body["checkpoint"]["default"]
    assert body["image"] == {"format": "JPEG", "width": 64, "height": 48}
    again = predict(client, tid, image_bytes()).json()
    assert again["predictions"] == body["predictions"]
    assert again["timing"]["cold_start_s"] is None and again["timing"]["forward_ms"] > 0
    other = predict(client, tid, image_bytes((250, 250, 20))).json()
    assert other["predictions"] != body["predictions"]

    status = client.get(f"/api/v1/trainings/{tid}/inference").json()
    assert status["available"] and len(status["predictors"]) == 1
    assert [c["path"] for c in status["checkpoints"]] == [
        "out/ckpt/resnet-2_10.ckpt", "out/best.ckpt", "out/ckpt/resnet-1_10.ckpt"]
    assert [c["default"] for c in status["checkpoints"]] == [False, True, False]


def test_a_named_checkpoint_is_used_and_an_unknown_one_is_refused(
        trained: tuple[httpx.Client, int]) -> None:
    client, tid = trained
    r = predict(client, tid, image_bytes(), checkpoint="resnet-1_10.ckpt")
    assert r.status_code == 200, r.text
    assert r.json()["checkpoint"]["path"] == "out/ckpt/resnet-1_10.ckpt"
    check_distribution(r.json())
    by_path = predict(client, tid, image_bytes(), checkpoint="out/ckpt/resnet-2_10.ckpt")
    assert by_path.json()["checkpoint"]["name"] == "resnet-2_10.ckpt"
    missing = predict(client, tid, image_bytes(), checkpoint="nope.ckpt")
    assert missing.status_code == 422
    assert missing.json()["fields"][0]["field"] == "checkpoint"
    assert "out/best.ckpt" in missing.json()["detail"]


def _png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG that claims width x height grayscale pixels (all zero)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 64, 9)  # only the first rows: size is checked first
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(
        b"IEND", b"")


def test_bad_uploads_are_refused_and_the_predictor_keeps_serving(
        trained: tuple[httpx.Client, int]) -> None:
    client, tid = trained
    assert predict(client, tid, image_bytes()).status_code == 200
    pids = predictor_pids(client, tid)
    jpeg = image_bytes(size=(300, 200))
    cases = {
        "not an image": (b"print('hello')\n" * 20, 422, "not an image"),
        "truncated": (jpeg[: len(jpeg) // 2], 422, "truncated"),
        "empty": (b"", 422, "empty"),
        "pixel bomb": (_png_bomb(20_000, 20_000), 413, "pixels"),
        "too many bytes": (b"\xff\xd8" + b"\0" * (21 * 1024 * 1024), 413, "limit"),
    }
    for name, (data, status, words) in cases.items():
        r = predict(client, tid, data)
        assert r.status_code == status, (name, r.text)
        assert words in r.json()["detail"], (name, r.text)
    no_file = client.post(f"/api/v1/trainings/{tid}/predict", data={"checkpoint": "x"})
    assert no_file.status_code == 422
    assert predict(client, tid, image_bytes()).status_code == 200
    assert predictor_pids(client, tid) == pids


@pytest.mark.parametrize("mode,fmt", [("RGBA", "PNG"), ("L", "PNG"), ("P", "GIF"),
                                      ("RGB", "WEBP"), ("RGB", "BMP"), ("CMYK", "JPEG"),
                                      ("LA", "PNG")])
def test_common_formats_and_modes_predict(trained: tuple[httpx.Client, int], mode: str,
                                          fmt: str) -> None:
    client, tid = trained
    color: tuple[int, ...] = {"RGBA": (10, 200, 30, 120), "L": (90,), "P": (3,),
                              "CMYK": (0, 80, 200, 10), "LA": (40, 200)}.get(mode, (7, 8, 9))
    r = predict(client, tid, image_bytes(color, (97, 61), fmt=fmt, mode=mode))
    assert r.status_code == 200, r.text
    check_distribution(r.json())
    assert r.json()["image"]["format"] == fmt


def test_a_large_photo_is_accepted(trained: tuple[httpx.Client, int]) -> None:
    client, tid = trained
    buf = io.BytesIO()
    Image.effect_noise((4000, 3000), 40).convert("RGB").save(buf, "JPEG", quality=90)
    r = predict(client, tid, buf.getvalue())
    assert r.status_code == 200, r.text
    assert r.json()["image"]["width"] == 4000
    assert r.json()["timing"]["decode_ms"] < 2000


def test_a_crashing_predictor_fails_its_request_and_restarts(live: Live) -> None:
    _, client = live.new_user()
    tid = completed_training(live, client, fake_repo(client))
    assert predict(client, tid, image_bytes()).status_code == 200
    red = image_bytes((255, 0, 0), fmt="PNG")  # the fake model exits on a pure red image
    crash = predict(client, tid, red, filename="red.png")
    assert crash.status_code == 502, crash.text
    assert crash.json()["error"] == "predictor_failed"
    after = predict(client, tid, image_bytes())
    assert after.status_code == 200, after.text
    assert after.json()["timing"]["cold_start_s"] is not None


def test_warm_up_starts_the_predictor_before_the_first_image(live: Live) -> None:
    _, client = live.new_user()
    tid = completed_training(live, client, fake_repo(client))
    r = client.post(f"/api/v1/trainings/{tid}/inference", json={"checkpoint": None})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "starting"
    assert r.json()["checkpoint"]["path"] == "out/best.ckpt"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        predictors = client.get(f"/api/v1/trainings/{tid}/inference").json()["predictors"]
        if predictors and predictors[0]["ready"]:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the predictor did not become ready: {predictors}")
    assert client.post(f"/api/v1/trainings/{tid}/inference").json()["status"] == "ready"
    first = predict(client, tid, image_bytes())
    assert first.status_code == 200 and first.json()["timing"]["cold_start_s"] is None
    assert client.delete(f"/api/v1/trainings/{tid}/inference").status_code == 204
    assert client.get(f"/api/v1/trainings/{tid}/inference").json()["predictors"] == []


def test_only_completed_trainings_with_a_checkpoint_and_an_app_predict(live: Live) -> None:
    _, client = live.new_user()
    no_ckpt = completed_training(live, client, fake_repo(client, train=TRAIN_WITHOUT_CHECKPOINT))
    r = predict(client, no_ckpt, image_bytes())
    assert r.status_code == 409 and r.json()["error"] == "no_checkpoint", r.text
    status = client.get(f"/api/v1/trainings/{no_ckpt}/inference").json()
    assert status["available"] is False and "checkpoint" in status["problem"]

    no_app = completed_training(live, client, fake_repo(client, app=None), "no-app-run")
    r = predict(client, no_app, image_bytes())
    assert r.status_code == 409 and r.json()["error"] == "no_inference_app", r.text

    failed_repo = fake_repo(client, train="import sys\nsys.exit(4)\n")
    failed = submit(client, failed_repo, config("failing-run", hypeparameters=[])).json()["id"]
    live.wait_status(client, failed, {"Failed"})
    r = predict(client, failed, image_bytes())
    assert r.status_code == 409 and r.json()["error"] == "training_not_completed", r.text
    assert "Failed" in r.json()["detail"]

    broken = completed_training(live, client, fake_repo(client, app=BROKEN_APP), "broken-app")
    r = predict(client, broken, image_bytes())
    assert r.status_code == 502 and "missing weights" in r.json()["detail"], r.text


def test_only_readers_of_the_repo_may_predict(live: Live,
                                              trained: tuple[httpx.Client, int]) -> None:
    _, stranger = live.new_user()
    _, tid = trained
    assert predict(stranger, tid, image_bytes()).status_code == 404
    assert stranger.get(f"/api/v1/trainings/{tid}/inference").status_code == 404
    anonymous = live.client(None)
    assert predict(anonymous, tid, image_bytes()).status_code == 401


def test_concurrent_requests_are_batched(trained: tuple[httpx.Client, int]) -> None:
    client, tid = trained
    assert predict(client, tid, image_bytes()).status_code == 200

    def one(i: int) -> dict[str, Any]:
        r = predict(client, tid, image_bytes((i * 20 % 256, 90, 140)))
        assert r.status_code == 200, r.text
        return dict(r.json())

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(32)))
    for body in results:
        check_distribution(body)
    assert max(b["timing"]["batch_size"] for b in results) > 1


BOOT_READS_PRETRAIN = """
import argparse
p = argparse.ArgumentParser()
p.add_argument("--pretrain_url")
a, _ = p.parse_known_args()
print("PRETRAIN " + open(a.pretrain_url, "rb").read().decode(), flush=True)
"""


def test_publish_a_checkpoint_as_a_model_input(live: Live,
                                               trained: tuple[httpx.Client, int]) -> None:
    client, tid = trained
    name = unique("resnet-")
    r = client.post(f"/api/v1/trainings/{tid}/publish",
                    json={"name": name, "description": "from a test"})
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["name"] == name and model["source_training_id"] == tid
    assert model["input_url"] == f"models/{model['owner']}/{name}/"
    assert model["files"] == [{"path": "best.ckpt", "size": len(b"the best weights")}]
    listed = client.get(f"/api/v1/models/{model['owner']}/{name}").json()
    assert listed["source_training_id"] == tid and listed["description"] == "from a test"
    again = client.post(f"/api/v1/trainings/{tid}/publish", json={"name": name})
    assert again.status_code == 409 and again.json()["error"] == "duplicate_model"
    bad = client.post(f"/api/v1/trainings/{tid}/publish", json={"name": "../x"})
    assert bad.status_code == 422
    raced = unique("race-")
    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(lambda _: client.post(
            f"/api/v1/trainings/{tid}/publish", json={"name": raced}).status_code, range(4)))
    assert statuses == [201, 409, 409, 409]

    repo = create_repo(client, {"code/main.py": BOOT_READS_PRETRAIN, "README.md": "x"})
    cfg = config("use-model", hypeparameters=[],
                 inputs=[{"input_url": model["input_url"] + "best.ckpt",
                          "name": "pretrain_url"}])
    created = submit(client, repo, cfg)
    assert created.status_code == 201, created.text
    done = live.wait_status(client, created.json()["id"], {"Completed", "Failed"})
    assert done["status"] == "Completed", done
    log = client.get(f"/api/v1/trainings/{done['id']}/log").text
    assert "PRETRAIN the best weights" in log


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie waits for the process that started it to reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _training_row(sessions: sessionmaker[Session]) -> int:
    """A Completed training's row for the launcher's foreign key (no files behind it)."""
    with sessions() as db:
        user = User(username=unique("u"))
        repo = Repository(owner=user, name=unique("r"))
        training = Training(repo=repo, job_name="t", config={}, boot_file="main.py",
                            runtime="python3.11", flavor="cpu", queue="cpu",
                            status=TrainingStatus.COMPLETED)
        db.add_all([user, repo, training])
        db.commit()
        return training.id


@pytest.mark.parametrize("sandbox", ["auto", "off"])
def test_idle_predictors_stop_and_the_cap_evicts_the_least_recently_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: str,
        sessions: sessionmaker[Session]) -> None:
    monkeypatch.setenv("TRAINYARD_DATA_DIR", str(tmp_path / "data"))  # the sandbox's files
    monkeypatch.setenv("TRAINYARD_SANDBOX", sandbox)  # off: unsandboxed, as before issue 13
    get_settings.cache_clear()
    training_id = _training_row(sessions)
    app = tmp_path / "workspace" / "inference" / "app.py"
    app.parent.mkdir(parents=True)
    app.write_text(FAKE_APP)
    specs = []
    run = Path(tempfile.mkdtemp(prefix="ty-"))  # short: the sockets' paths must fit 107 bytes
    for name in ("a", "b"):
        checkpoint = tmp_path / "workspace" / f"{name}.ckpt"
        checkpoint.write_bytes(name.encode() * 10)
        specs.append(PredictorSpec(training_id=training_id, app_path=app, checkpoint=checkpoint,
                                   base_python=sys.executable, home=tmp_path / "home",
                                   log_path=tmp_path / f"{name}.log",
                                   envs_cache=tmp_path / "envs", runtime_dir=run))
    pixel = {"width": 2, "height": 2, "rgb": bytes(range(12))}

    async def pids(manager: PredictorManager) -> list[tuple[str, int | None]]:
        return [(checkpoint_of(r), r.pid) for r in await manager.running(training_id)]

    async def scenario() -> None:
        # Two managers on one database stand in for two API processes: the cap and the idle
        # time count the rows of both.
        one = PredictorManager(max_predictors=1, idle_s=0.6, sessions=sessions)
        two = PredictorManager(max_predictors=1, idle_s=0.6, sessions=sessions)
        one.start()
        two.start()
        try:
            first = await one.predict(specs[0], **pixel)
            assert first.cold_start_s is not None and len(first.scores) == len(CLASSES)
            [(_, pid_a)] = await pids(one)
            assert pid_a is not None
            tree = psutil.Process(pid_a).children(recursive=True)
            assert any(p.name() == "bwrap" for p in tree) == sandboxing.state().enabled
            assert (await two.predict(specs[0], **pixel)).cold_start_s is None  # one's process
            assert await pids(two) == [("a.ckpt", pid_a)]
            await two.predict(specs[1], **pixel)  # over the deployment's cap of one: `a` goes
            [(name, pid_b)] = await pids(one)
            assert name == "b.ckpt" and not running(pid_a)
            assert pid_b is not None
            again = await one.predict(specs[1], **pixel)  # two's predictor, found in the row
            assert again.cold_start_s is None
            await asyncio.sleep(2.0)  # idle for longer than idle_s: a sweeper stops it
            assert await pids(one) == [] and not running(pid_b)
            both = await asyncio.gather(one.predict(specs[0], **pixel),
                                        two.predict(specs[0], **pixel))  # started once
            assert all(b.cold_start_s is not None for b in both)
            [(_, pid)] = await pids(two)
            assert pid is not None
            assert len([c for c in (*one.launcher.children, *two.launcher.children)]) == 1
        finally:
            await one.shutdown()
            await two.shutdown()
        assert not psutil.pid_exists(pid) and await pids(one) == []

    try:
        asyncio.run(scenario())
    finally:
        get_settings.cache_clear()
        shutil.rmtree(run, ignore_errors=True)


@pytest.mark.browser
def test_the_inference_page_classifies_picked_dropped_and_example_images(
        live: Live, trained: tuple[httpx.Client, int], tmp_path: Path) -> None:
    missing = chromium_missing()
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import expect, sync_playwright

    client, tid = trained
    token = str(client.headers["Authorization"]).split()[1]
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport=LAPTOP)
            watch = ConsoleWatch()
            watch.attach(page)
            watch.allow(422, "/predict")
            page.goto(f"{live.url}/login?next=/trainings/{tid}/predict")
            page.fill("#token", token)
            page.click("button[type=submit]")
            panel = page.locator("#inference-app")
            expect(panel).to_have_attribute("data-state", "ready")
            expect(page.locator("[data-role=checkpoint]")).to_have_value("out/best.ckpt")

            page.set_input_files("[data-role=file]", files=[{
                "name": "photo.png", "mimeType": "image/png",
                "buffer": image_bytes((20, 160, 90), (120, 80), fmt="PNG")}])
            expect(panel).to_have_attribute("data-state", "done")
            bars = page.locator(".infer__bar")
            expect(bars).to_have_count(len(CLASSES))
            expect(page.locator("[data-role=preview]")).to_be_visible()
            expect(page.locator("[data-role=meta]")).to_contain_text("out/best.ckpt")
            top = page.locator(".infer__bar--top .infer__fill")
            page.wait_for_function("document.querySelector('.infer__bar--top .infer__fill')"
                                   ".getBoundingClientRect().width > 10")
            assert top.bounding_box() is not None
            labels = bars.evaluate_all("items => items.map(i => i.dataset.label)")
            expected = predict(client, tid, image_bytes((20, 160, 90), (120, 80), fmt="PNG"))
            assert labels == [p["label"] for p in expected.json()["predictions"]]
            screenshot(page, tmp_path, "inference-picked")

            page.click("[data-name='cat.jpg']")
            expect(page.locator("[data-role=status]")).to_contain_text("cat.jpg")
            expect(panel).to_have_attribute("data-state", "done")

            page.select_option("[data-role=checkpoint]", "out/ckpt/resnet-1_10.ckpt")
            drop = page.evaluate_handle("""() => {
                const dt = new DataTransfer();
                dt.items.add(new File(["not an image at all"], "notes.txt",
                                      {type: "text/plain"}));
                return dt; }""")
            page.dispatch_event("[data-role=drop]", "drop", {"dataTransfer": drop})
            error = page.locator("[data-role=error]")
            expect(error).to_be_visible()
            expect(error).to_contain_text("not an image")
            # The bars of the previous image are gone: they are not the text file's answer.
            expect(page.locator(".infer__bar")).to_have_count(0)
            expect(page.locator("[data-role=meta]")).to_have_text("")

            data = list(image_bytes((200, 30, 30), fmt="PNG"))
            drop = page.evaluate_handle("""bytes => {
                const dt = new DataTransfer();
                dt.items.add(new File([new Uint8Array(bytes)], "dropped.png",
                                      {type: "image/png"}));
                return dt; }""", data)
            page.dispatch_event("[data-role=drop]", "drop", {"dataTransfer": drop})
            expect(panel).to_have_attribute("data-state", "done")
            expect(error).to_be_hidden()
            expect(page.locator("[data-role=meta]")).to_contain_text("resnet-1_10.ckpt")
            screenshot(page, tmp_path, "inference-dropped")
            assert watch.errors == []
        finally:
            browser.close()


ROOT = Path(__file__).resolve().parent.parent
SAMPLE_APP = ROOT / "samples" / "resnet50" / "inference" / "app.py"
# The originals when ../shared is there, else the scaled-down copies the page offers.
EXAMPLES = [SHARED_DATA / "inference-examples", ROOT / "frontend" / "static" / "examples"]


@pytest.mark.slow
def test_the_sample_model_classifies_the_ten_example_photos(live: Live, tmp_path: Path) -> None:
    user, client = live.new_user()
    cifar = write_cifar_binary(tmp_path / "cifar-10-batches-bin", 192, 64)
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar, arcname=cifar.name)
    r = client.post("/api/v1/datasets", data={"name": "tiny-cifar"},
                    files={"archive": ("cifar.tar.gz", archive.read_bytes())})
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/repos", json={"name": "resnet50", "template": "resnet50"})
    assert r.status_code == 201, r.text
    cfg = {"job_name": "tiny-resnet", "code_dir": "train/train_dir/", "boot_file": "train.py",
           "outputs": [{"output_dir": "train/output/", "name": "output_url"}],
           "inputs": [{"input_url": f"datasets/{user}/tiny-cifar/", "name": "data_url"}],
           "hypeparameters": [{"name": "epochs", "value": "1"},
                              {"name": "batch_size", "value": "32"},
                              {"name": "train_limit", "value": "64"},
                              {"name": "test_limit", "value": "32"}]}
    created = submit(client, f"{user}/resnet50", cfg)
    assert created.status_code == 201, created.text
    done = live.wait_status(client, created.json()["id"], {"Completed", "Failed", "Abnormal"},
                            timeout=600)
    assert done["status"] == "Completed", client.get(
        f"/api/v1/trainings/{done['id']}/log", params={"offset": -4000}).text
    tid = done["id"]

    folder = next(f for f in EXAMPLES if f.is_dir())
    photos = sorted(folder.glob("*.jpg"))
    assert [p.stem for p in photos] == list(CLASSES)
    for photo in photos:
        r = predict(client, tid, photo.read_bytes(), filename=photo.name)
        assert r.status_code == 200, (photo.name, r.text)
        check_distribution(r.json())
        assert r.json()["checkpoint"]["name"] == "best.ckpt"

    def one(photo: Path) -> dict[str, Any]:
        r = predict(client, tid, photo.read_bytes(), filename=photo.name)
        assert r.status_code == 200, r.text
        return dict(r.json())

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, photos * 3))
    for body in results:
        check_distribution(body)
    assert max(b["timing"]["batch_size"] for b in results) > 1
