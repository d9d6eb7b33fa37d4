"""Hostile request input gets a 4xx in the one error shape, never a 500."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from app.archives import iter_folder
from app.datasets.importer import import_dataset
from app.errors import TooLarge
from tests.live import Live, unique
from tests.repo_files import config, create_repo, submit

MB = 1024 * 1024

TRAINING_ROUTES = [
    ("GET", "/api/v1/trainings/{id}"), ("POST", "/api/v1/trainings/{id}/terminate"),
    ("DELETE", "/api/v1/trainings/{id}"), ("GET", "/api/v1/trainings/{id}/log"),
    ("GET", "/api/v1/trainings/{id}/log/stream"), ("GET", "/api/v1/trainings/{id}/outputs"),
    ("GET", "/api/v1/trainings/{id}/outputs/out/model.ckpt"),
    ("GET", "/api/v1/trainings/{id}/evaluation"), ("GET", "/api/v1/trainings/{id}/metrics"),
    ("GET", "/api/v1/trainings/{id}/inference"), ("POST", "/api/v1/trainings/{id}/publish"),
    ("GET", "/trainings/{id}/aim/"), ("GET", "/trainings/{id}/aim/api/runs/search/run"),
    ("GET", "/trainings/{id}"), ("GET", "/trainings/{id}/log.txt"),
]


@pytest.mark.parametrize("bad_id", [2**63, 2**64 + 5, 10**30, -1, 0])
def test_ids_outside_the_database_range_are_client_errors(live: Live, bad_id: int) -> None:
    _, client = live.new_user()
    for method, route in TRAINING_ROUTES:
        r = client.request(method, route.format(id=bad_id))
        assert r.status_code in (404, 422), (method, route, r.status_code, r.text)
        if r.status_code == 422:
            assert r.json()["fields"][0]["field"] == "path.training_id", r.text


def test_a_body_that_is_not_utf8_is_a_422(live: Live) -> None:
    _, client = live.new_user()
    headers = {"Content-Type": "application/json"}
    for route in ("/api/v1/repos", "/api/v1/datasets"):
        for body in (b'{"name": "caf\xe9"}', b"\xff\xfe\x00", b'{"name": "\xc3"}'):
            r = client.post(route, content=body, headers=headers)
            assert r.status_code == 422, (route, body, r.text)
            assert r.json()["error"] == "invalid" and "UTF-8" in r.json()["detail"]


def test_deep_or_huge_json_bodies_are_refused(live: Live) -> None:
    _, client = live.new_user()
    headers = {"Content-Type": "application/json"}
    r = client.post("/api/v1/repos", content=b"[" * 100_000, headers=headers)
    assert r.status_code == 422, r.text
    r = client.post("/api/v1/repos", content=b'{"name": "' + b"a" * (2 << 20) + b'"}',
                    headers=headers)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    r = client.post("/api/v1/repos/someone/something/trainings", headers=headers,
                    content=b'{"job_name": "' + b"a" * (64 << 20) + b'"}')
    assert r.status_code == 413 and "limited to" in r.json()["detail"], r.text[:300]
    assert client.get("/api/v1/health").status_code == 200


def _image_tree_zip(big_name: str, big: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for split in ("train", "test"):
            zf.writestr(f"{split}/cat/a.png", _png())
        zf.writestr(big_name, big)
    return buf.getvalue()


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


def test_an_image_entry_over_the_cap_is_refused_as_declared(tmp_path: Path) -> None:
    archive = tmp_path / "set.zip"
    archive.write_bytes(_image_tree_zip("train/cat/huge.png", bytes(64 * 1024)))
    with pytest.raises(TooLarge) as caught:
        import_dataset(archive, tmp_path / "out", max_bytes=10 * MB, max_image_bytes=32 * 1024)
    assert "train/cat/huge.png" in caught.value.detail and "32768" in caught.value.detail
    assert not (tmp_path / "out").exists()


def test_an_image_that_grows_past_the_cap_while_read_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    image = tmp_path / "src" / "a.png"
    image.write_bytes(_png())
    entry = next(e for e in iter_folder(tmp_path / "src", max_bytes=MB, max_files=10)
                 if e.name == "a.png")
    with image.open("ab") as grow:  # after its size was recorded
        grow.write(bytes(8 * 1024))
    with pytest.raises(TooLarge, match=r"'a\.png' is larger than the limit of 4096 bytes"):
        entry.read_bytes(limit=4096)
    assert entry.size < 4096


def test_a_dataset_upload_with_a_huge_image_is_a_413_naming_it(live: Live) -> None:
    _, client = live.new_user()
    blob = _image_tree_zip("train/cat/bomb.png", bytes(40 * MB))  # ~40 KB compressed
    assert len(blob) < MB
    r = client.post("/api/v1/datasets", data={"name": unique("bomb")},
                    files={"archive": ("set.zip", blob)})
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "too_large" and "train/cat/bomb.png" in r.json()["detail"]
    assert str(16 * MB) in r.json()["detail"]


def test_log_offsets_past_any_file_size_end_cleanly(live: Live) -> None:
    _, client = live.new_user()
    repo = create_repo(client)
    tid = submit(client, repo, config("offsets")).json()["id"]
    assert live.wait_status(client, tid, {"Completed", "Failed"})["status"] == "Completed"
    for offset in (10**30, 2**63 - 1):
        r = client.get(f"/api/v1/trainings/{tid}/log", params={"offset": offset})
        assert r.status_code == 200 and r.content == b"", r.text
    r = client.get(f"/api/v1/trainings/{tid}/log", params={"offset": -(10**30)})
    assert r.status_code == 200 and r.text.startswith("[trainyard]") and "finished" in r.text
    r = client.get(f"/api/v1/trainings/{tid}/log/stream", params={"offset": 10**30})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "query.offset"
    for last_id in ("99999999999999999999999999", "\u00b2", "-5"):
        with client.stream("GET", f"/api/v1/trainings/{tid}/log/stream",
                           headers={"Last-Event-ID": last_id.encode("latin-1")}) as r:
            assert r.status_code == 200
            body = r.read().decode()
        assert "event: end" in body, (last_id, body[-300:])


HOSTILE_SEGMENTS = ["%00", "a%00b", "x" * 5000, "%2e%2e", "%ff%fe", "..%2f..%2fetc", "%0a"]


def test_hostile_path_segments_are_client_errors(any_live: Live) -> None:
    live = any_live
    _, client = live.new_user()
    repo = create_repo(client)
    tid = submit(client, repo, config("segments")).json()["id"]
    live.wait_status(client, tid, {"Completed", "Failed"})
    for bad in HOSTILE_SEGMENTS:
        for method, route in (
                ("GET", f"/api/v1/repos/{repo}/files/{bad}"),
                ("PUT", f"/api/v1/repos/{repo}/files/{bad}"),
                ("GET", f"/api/v1/repos/{bad}/{bad}"), ("GET", f"/api/v1/datasets/{bad}/x"),
                ("GET", f"/api/v1/models/x/{bad}"), ("DELETE", f"/api/v1/repos/x/{bad}"),
                ("GET", f"/api/v1/trainings/{tid}/outputs/{bad}"),
                ("GET", f"/api/v1/trainings/{tid}/outputs/out/{bad}"),
                ("GET", f"/api/v1/repos/{repo}/evaluation"),
                ("POST", f"/api/v1/trainings/{tid}/evaluation")):
            r = client.request(method, route, content=b"x" if method == "PUT" else None,
                               json={"type": "custom", "aim_path": bad}
                               if method == "POST" else None)
            assert r.status_code < 500, (method, route[:120], r.status_code, r.text[:200])


def test_nul_characters_in_json_bodies_are_client_errors(any_live: Live) -> None:
    live = any_live
    _, client = live.new_user()
    repo = create_repo(client)
    nul = "a\u0000b"
    r = client.post("/api/v1/repos", json={"name": unique("n"), "template": "resnet50",
                                           "description": nul})
    assert r.status_code < 500, r.text
    assert live.admin.post("/api/v1/users", json={"username": nul}).status_code == 422
    for cfg in (config("nul-description", job_description=nul),
                config("nul-hyper", hypeparameters=[{"name": "epochs", "value": nul}]),
                config("nul-env", env_variables={"MY_VAR": nul}),
                config(nul), config("nul-out", outputs=[{"output_dir": nul, "name": "o"}])):
        r = submit(client, repo, cfg)
        assert r.status_code < 500, (cfg, r.status_code, r.text)
        if r.status_code == 201:
            live.wait_status(client, r.json()["id"], {"Completed", "Failed"})
            assert client.delete(f"/api/v1/trainings/{r.json()['id']}").status_code == 204
    r = client.post("/api/v1/models", data={"name": unique("m"), "description": nul},
                    files={"file": ("a.ckpt", b"weights")})
    assert r.status_code < 500, r.text
