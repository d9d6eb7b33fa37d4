"""Request bodies declared as models: the documented schema is generated from them, each route
takes one body shape (the first API's two-shape routes keep working), bodies over a route's
cap are refused before they are read, and validation errors have one shape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.inproc import in_process_api
from tests.repo_files import BOOT_FILES, tar_gz

MULTIPART = "multipart/form-data"


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app in this process on a fresh SQLite database."""
    with in_process_api(tmp_path, monkeypatch) as client:
        yield client


def _body_schema(spec: dict[str, Any], path: str) -> tuple[str, dict[str, Any]]:
    content = spec["paths"][path]["post"]["requestBody"]["content"]
    assert len(content) == 1, (path, content)
    media_type, body = next(iter(content.items()))
    ref = body["schema"].get("$ref", "")
    return media_type, spec["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else {}


def test_the_documented_bodies_are_the_models(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    expected = {
        "/api/v1/repos/fork": ("application/json", {"name"}),
        "/api/v1/repos/upload": (MULTIPART, {"name", "archive"}),
        "/api/v1/datasets/upload": (MULTIPART, {"name", "archive"}),
        "/api/v1/datasets/import": ("application/json", {"name"}),
        "/api/v1/models": (MULTIPART, {"name", "file"}),
        "/api/v1/trainings/{training_id}/predict": (MULTIPART, {"file"}),
    }
    for path, (media_type, required) in expected.items():
        found, schema = _body_schema(spec, path)
        assert found == media_type and set(schema["required"]) == required, (path, schema)
    upload = spec["components"]["schemas"]["RepoUpload"]["properties"]["archive"]
    assert upload["contentMediaType"] == "application/octet-stream"
    files = spec["components"]["schemas"]["ModelUpload"]["properties"]["file"]
    assert files["type"] == "array"
    # The mission's routes that take either shape document the split routes' bodies.
    for path, parts in {"/api/v1/repos": ("RepoCreate", "RepoUpload"),
                        "/api/v1/datasets": ("DatasetImport", "DatasetUpload")}.items():
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        assert {media: body["schema"]["$ref"].rsplit("/", 1)[1]
                for media, body in content.items()} == {"application/json": parts[0],
                                                         MULTIPART: parts[1]}
        assert "x-bodies-of" not in spec["paths"][path]["post"]
    config = spec["paths"]["/api/v1/repos/{owner}/{name}/trainings"]["post"]["requestBody"]
    choices = config["content"]["application/json"]["schema"]["anyOf"]
    assert choices[1]["required"] == ["config_path"]
    predict = spec["paths"]["/api/v1/trainings/{training_id}/predict"]["post"]
    assert predict["x-max-body-bytes"] > 20_000_000


def test_new_and_first_api_routes_create_the_same(api: TestClient, tmp_path: Path) -> None:
    archive = tar_gz(BOOT_FILES)
    assert api.post("/api/v1/repos/fork", json={"name": "forked"}).status_code == 201
    up = api.post("/api/v1/repos/upload", data={"name": " uploaded "},
                  files={"archive": ("r.tar.gz", archive)})
    assert up.status_code == 201 and up.json()["full_name"] == "admin/uploaded", up.text
    assert api.post("/api/v1/repos", json={"name": "old-fork"}).status_code == 201
    assert api.post("/api/v1/repos", data={"name": "old-upload"},
                    files={"archive": ("r.tar.gz", archive)}).status_code == 201
    assert (tmp_path / "repos" / "admin" / "old-upload" / "code" / "main.py").is_file()

    # A JSON body on the multipart route, and a form without its file, name the field.
    for response in (api.post("/api/v1/repos/upload", json={"name": "x"}),
                     api.post("/api/v1/repos", data={"name": "x"},
                              files={"other": ("a", b"1")})):
        assert response.status_code == 422, response.text
        assert {"field": "archive", "message": "Field required"} in response.json()["fields"]

    ckpt = [("file", ("a.ckpt", b"1")), ("file", ("b.ckpt", b"22"))]
    model = api.post("/api/v1/models", data={"name": "m1", "is_public": ""}, files=ckpt)
    assert model.status_code == 201, model.text
    assert [f["path"] for f in model.json()["files"]] == ["a.ckpt", "b.ckpt"]
    long = api.post("/api/v1/models", data={"name": "m2", "description": "x" * 201},
                    files=ckpt[:1])
    assert long.status_code == 422 and long.json()["fields"][0]["field"] == "description"

    for route in ("/api/v1/datasets/upload", "/api/v1/datasets"):
        bad = api.post(route, data={"name": "d1", "is_public": "maybe"},
                       files={"archive": ("d.tar.gz", archive)})
        assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "is_public"
    for route in ("/api/v1/datasets/import", "/api/v1/datasets"):
        refused = api.post(route, json={"name": "d1", "path": str(tmp_path / "none")})
        assert refused.status_code == 422 and "not an existing" in refused.json()["detail"]


def test_a_body_over_the_routes_cap_is_refused_before_it_is_read(api: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: refused once 1 MiB has arrived
        yield b'{"name": "'
        for _ in range(3):
            yield b"a" * (1 << 20)
        yield b'"}'

    big = b'{"name": "' + b"a" * (2 << 20) + b'"}'
    for body in (big, chunks()):
        r = api.post("/api/v1/repos/fork", content=body,
                     headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"] == "too_large", r.text
        assert "limit of 1048576 bytes" in r.json()["detail"]
    r = api.post("/api/v1/trainings/1/predict", content=b"x" * (21 << 20),
                 headers={"Content-Type": f"{MULTIPART}; boundary=b"})
    assert r.status_code == 413 and r.json()["error"] == "too_large", r.text


def test_validation_errors_name_nested_fields_one_way(api: TestClient) -> None:
    r = api.post("/api/v1/users", json={"username": ["a"], "is_admin": "perhaps"})
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["fields"]] == ["username", "is_admin"]
    r = api.get("/api/v1/trainings/1/log", params={"limit": 0})
    assert r.json()["fields"][0]["field"] == "query.limit"
    r = api.post("/api/v1/repos/fork", content=b'{"name": ', headers={
        "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body", r.text
