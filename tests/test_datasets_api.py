"""Datasets and models through the live platform: upload, import, use as training inputs."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from PIL import Image

from tests.cifar_data import CLASSES, write_cifar_binary
from tests.live import Live, unique
from tests.repo_files import config, create_repo, submit

LIST_INPUT = """
import argparse, os
p = argparse.ArgumentParser()
p.add_argument("--data_url")
p.add_argument("--pretrain_url")
p.add_argument("--output_url")
a, _ = p.parse_known_args()
print("DATA", sorted(os.listdir(a.data_url)), flush=True)
print("PRETRAIN", os.path.getsize(a.pretrain_url), flush=True)
"""


def image_folder_tar(per_class: int = 2) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for split in ("train", "test"):
            for label, cls in enumerate(CLASSES):
                for i in range(per_class):
                    img = io.BytesIO()
                    Image.new("RGB", (40, 30), (label * 20, i * 50, 90)).save(img, "PNG")
                    info = tarfile.TarInfo(f"cifar/{split}/{cls}/{i}.png")
                    info.size = img.tell()
                    img.seek(0)
                    tar.addfile(info, img)
    return buf.getvalue()


def test_upload_an_image_folder_and_train_on_it(live: Live) -> None:
    user, client = live.new_user()
    name = unique("cifar")
    r = client.post("/api/v1/datasets", data={"name": name},
                    files={"archive": ("cifar.tar.gz", image_folder_tar())})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["input_url"] == f"datasets/{user}/{name}/"
    assert body["format"] == "image-folder" and body["info"]["classes"] == list(CLASSES)
    assert body["info"]["train_count"] == 20 and body["info"]["test_count"] == 20
    assert name in {d["name"] for d in client.get("/api/v1/datasets").json()}

    r = client.post("/api/v1/models", data={"name": "warm-start"},
                    files={"file": ("resnet50.ckpt", b"\0" * 1234)})
    assert r.status_code == 201, r.text
    assert r.json()["files"] == [{"path": "resnet50.ckpt", "size": 1234}]

    repo = create_repo(client, {"README.md": "x", "code/main.py": LIST_INPUT})
    cfg = config("with-inputs", inputs=[
        {"name": "data_url", "input_url": body["input_url"]},
        {"name": "pretrain_url", "input_url": f"models/{user}/warm-start/resnet50.ckpt"}])
    r = submit(client, repo, cfg)
    assert r.status_code == 201, r.text
    done = live.wait_status(client, r.json()["id"], {"Completed", "Failed"})
    assert done["status"] == "Completed", done
    log = client.get(f"/api/v1/trainings/{done['id']}/log").text
    assert "test_batch.bin" in log and "data_batch_1.bin" in log and "PRETRAIN 1234" in log
    r = submit(client, repo, config("missing-file", inputs=[
        {"name": "pretrain_url", "input_url": f"models/{user}/warm-start/none.ckpt"}]))
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "inputs[0].input_url"


def test_bad_dataset_upload_leaves_nothing(live: Live) -> None:
    user, client = live.new_user()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"not an image"
        info = tarfile.TarInfo("train/cat/0.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    r = client.post("/api/v1/datasets", data={"name": "broken"},
                    files={"archive": ("b.tar.gz", buf.getvalue())})
    assert r.status_code == 422 and "0.png" in r.json()["detail"]
    assert not (live.data_dir / "datasets" / user / "broken").exists()
    assert "broken" not in {d["name"] for d in client.get("/api/v1/datasets").json()}
    r = client.post("/api/v1/datasets", json={"name": "x", "path": "/tmp"})
    assert r.status_code == 403


def test_admin_imports_a_binary_folder_from_the_server(live: Live, tmp_path: Path) -> None:
    folder = write_cifar_binary(tmp_path / "cifar-10-batches-bin", 30, 10)
    name = unique("bin")
    r = live.admin.post("/api/v1/datasets", json={"name": name, "path": str(folder)})
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "cifar10-binary"
    again = live.admin.post("/api/v1/datasets", json={"name": name, "path": str(folder)})
    assert again.status_code == 409
    assert live.admin.delete(f"/api/v1/datasets/admin/{name}").status_code == 204
    assert not (live.data_dir / "datasets" / "admin" / name).exists()


def test_datasets_and_models_are_private_until_made_public(live: Live) -> None:
    owner, alice = live.new_user()
    _, bob = live.new_user()
    name = unique("mine")
    r = alice.post("/api/v1/datasets", data={"name": name},
                   files={"archive": ("c.tar.gz", image_folder_tar(per_class=1))})
    assert r.status_code == 201 and r.json()["is_public"] is False, r.text
    r = alice.post("/api/v1/models", data={"name": name},
                   files={"file": ("m.ckpt", b"\0" * 10)})
    assert r.status_code == 201 and r.json()["is_public"] is False, r.text

    assert name not in {d["name"] for d in bob.get("/api/v1/datasets").json()}
    assert name not in {m["name"] for m in bob.get("/api/v1/models").json()}
    assert bob.get(f"/api/v1/datasets/{owner}/{name}").status_code == 404
    assert bob.get(f"/api/v1/models/{owner}/{name}").status_code == 404
    assert bob.patch(f"/api/v1/datasets/{owner}/{name}",
                     json={"is_public": True}).status_code == 404

    repo = create_repo(bob)
    inputs = [{"name": "data_url", "input_url": f"datasets/{owner}/{name}/"},
              {"name": "pretrain_url", "input_url": f"models/{owner}/{name}/m.ckpt"},
              {"name": "other_url", "input_url": f"datasets/{owner}/{unique('none')}/"}]
    r = submit(bob, repo, config("private-inputs", inputs=inputs))
    assert r.status_code == 422, r.text
    messages = {f["field"]: f["message"] for f in r.json()["fields"]}
    assert messages["inputs[0].input_url"] == \
        f"datasets/{owner}/{name} does not exist or is not yours"
    assert messages["inputs[1].input_url"].endswith("does not exist or is not yours")
    # A private dataset and a missing one read the same: existence is not revealed.
    assert messages["inputs[2].input_url"].endswith("does not exist or is not yours")

    r = alice.patch(f"/api/v1/datasets/{owner}/{name}", json={"is_public": True})
    assert r.status_code == 200 and r.json()["is_public"] is True
    r = alice.patch(f"/api/v1/models/{owner}/{name}", json={"is_public": True})
    assert r.status_code == 200 and r.json()["is_public"] is True
    assert name in {d["name"] for d in bob.get("/api/v1/datasets").json()}
    r = submit(bob, repo, config("public-inputs", inputs=inputs[:2]))
    assert r.status_code == 201, r.text
    # Others may use a public dataset, not change it.
    r = bob.patch(f"/api/v1/datasets/{owner}/{name}", json={"is_public": False})
    assert r.status_code == 403
    assert bob.patch(f"/api/v1/datasets/{owner}/{name}", json={}).status_code == 422


def test_an_admin_upload_is_public_for_every_user(live: Live) -> None:
    name = unique("shared")
    r = live.admin.post("/api/v1/datasets", data={"name": name},
                        files={"archive": ("c.tar.gz", image_folder_tar(per_class=1))})
    assert r.status_code == 201 and r.json()["is_public"] is True, r.text
    hidden = unique("adminonly")
    r = live.admin.post("/api/v1/datasets", data={"name": hidden, "is_public": "false"},
                        files={"archive": ("c.tar.gz", image_folder_tar(per_class=1))})
    assert r.status_code == 201 and r.json()["is_public"] is False
    _, user = live.new_user()
    names = {d["input_url"] for d in user.get("/api/v1/datasets").json()}
    assert f"datasets/admin/{name}/" in names and f"datasets/admin/{hidden}/" not in names
    repo = create_repo(user)
    r = submit(user, repo, config("shared-data", inputs=[
        {"name": "data_url", "input_url": f"datasets/admin/{name}/"}]))
    assert r.status_code == 201, r.text
