"""The seed workflow through the platform: fork the sample, import data, train for real."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cifar_data import write_cifar_binary
from tests.live import Live

QUICK = {"epochs": "1", "train_limit": "64", "test_limit": "32", "batch_size": "16"}


def test_fork_import_and_train_the_quick_config(live: Live, tmp_path: Path) -> None:
    folder = write_cifar_binary(tmp_path / "cifar-10-batches-bin", 64, 32)
    r = live.admin.post("/api/v1/datasets", json={"name": "cifar10", "path": str(folder)})
    assert r.status_code in (201, 409), r.text
    user, client = live.new_user("alice")
    assert client.post("/api/v1/repos", json={"name": "ResNet50"}).status_code == 201
    text = client.get(f"/api/v1/repos/{user}/ResNet50/files/train/config_quick.json").text
    cfg = json.loads(text)
    assert cfg["inputs"] == [{"input_url": "datasets/admin/cifar10/", "name": "data_url"}]
    # Shrink the run for a test: the same config, smaller hyperparameters.
    cfg["hypeparameters"] = [{"name": k, "value": v} for k, v in QUICK.items()]
    r = client.post(f"/api/v1/repos/{user}/ResNet50/trainings", json=cfg)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    done = live.wait_status(client, tid, {"Completed", "Failed", "Abnormal"}, timeout=240)
    log = client.get(f"/api/v1/trainings/{tid}/log").text
    assert done["status"] == "Completed", log[-3000:]
    assert "Epoch:[" in log and "Accuracy:" in log
    outputs = {o["path"]: o for o in client.get(f"/api/v1/trainings/{tid}/outputs").json()}
    assert outputs["train/output/best.ckpt"]["checkpoint"] is True
    assert any(p.startswith("train/output/resnet50-1") for p in outputs)
    # The seed's own config (Xihe's legacy runtime names) is accepted as is.
    r = client.post(f"/api/v1/repos/{user}/ResNet50/trainings",
                    json={"config_path": "train/config.json"})
    assert r.status_code == 201, r.text
    assert r.json()["runtime"].startswith("mindspore-")
    client.post(f"/api/v1/trainings/{r.json()['id']}/terminate")
    live.wait_status(client, r.json()["id"], {"Terminated", "Completed", "Failed"}, timeout=30)


def test_the_sample_refuses_epochs_below_one(live: Live, tmp_path: Path) -> None:
    folder = write_cifar_binary(tmp_path / "cifar-10-batches-bin", 64, 32)
    r = live.admin.post("/api/v1/datasets", json={"name": "cifar10", "path": str(folder)})
    assert r.status_code in (201, 409), r.text
    user, client = live.new_user("bob")
    assert client.post("/api/v1/repos", json={"name": "ResNet50"}).status_code == 201
    cfg = json.loads(client.get(f"/api/v1/repos/{user}/ResNet50/files/train/config_quick.json")
                     .text)
    cfg["hypeparameters"] = [{"name": "epochs", "value": "-1"}]
    r = client.post(f"/api/v1/repos/{user}/ResNet50/trainings", json=cfg)
    assert r.status_code == 201, r.text
    done = live.wait_status(client, r.json()["id"], {"Completed", "Failed", "Abnormal"},
                            timeout=120)
    log = client.get(f"/api/v1/trainings/{r.json()['id']}/log").text
    assert done["status"] == "Failed", log[-2000:]
    assert done["exit_code"] == 2
    assert "--epochs must be at least 1, got -1" in log
    assert "best test accuracy" not in log
