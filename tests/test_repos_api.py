"""Users, tokens and repositories through the live platform."""

from __future__ import annotations

from tests.live import Live, unique
from tests.repo_files import tar_gz, zip_bytes


def test_health_and_authentication(live: Live) -> None:
    anon = live.client(None)
    health = anon.get("/api/v1/health").json()
    assert health["status"] == "ok" and health["sandbox"] in {"on", "off"}
    assert "/api/v1/trainings/{training_id}/log/stream" in anon.get("/openapi.json").json()["paths"]
    assert anon.get("/docs").status_code == 200
    r = anon.get("/api/v1/repos")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert live.client("ty_wrong").get("/api/v1/repos").status_code == 401
    name, client = live.new_user()
    assert client.get("/api/v1/me").json()["username"] == name
    r = client.post("/api/v1/users", json={"username": unique("x")})
    assert r.status_code == 403
    r = live.admin.post("/api/v1/users", json={"username": name})
    assert r.status_code == 409
    r = live.admin.post("/api/v1/users", json={"username": "../bad"})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "username"


def test_fork_the_sample_and_edit_files(live: Live) -> None:
    user, client = live.new_user()
    r = client.post("/api/v1/repos", json={"name": "ResNet50", "template": "resnet50"})
    assert r.status_code == 201, r.text
    assert r.json()["owner"] == user and r.json()["name"] == "ResNet50"
    detail = client.get(f"/api/v1/repos/{user}/ResNet50").json()
    paths = {f["path"] for f in detail["files"]}
    for expected in ("inference/app.py", "train/config.json", "train/train_dir/train.py",
                     "train/train_dir/train_aim.py", "train/config_aim.json"):
        assert expected in paths
    cfg = client.get(f"/api/v1/repos/{user}/ResNet50/files/train/config.json")
    assert cfg.status_code == 200 and "job_name" in cfg.text
    r = client.put(f"/api/v1/repos/{user}/ResNet50/files/notes/new.txt", content=b"hello")
    assert r.status_code == 200 and r.json() == {"path": "notes/new.txt", "size": 5}
    assert client.get(f"/api/v1/repos/{user}/ResNet50/files/notes/new.txt").text == "hello"
    r = client.get(f"/api/v1/repos/{user}/ResNet50/files/%2e%2e/%2e%2e/etc/passwd")
    assert r.status_code in (404, 422)
    assert client.post("/api/v1/repos", json={"name": "ResNet50"}).status_code == 409
    r = client.post("/api/v1/repos", json={"name": "x", "template": "vgg"})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "template"
    assert [x["name"] for x in client.get("/api/v1/repos").json()] == ["ResNet50"]
    _, other = live.new_user()
    assert other.get(f"/api/v1/repos/{user}/ResNet50").status_code == 404


def test_repo_from_archives(live: Live) -> None:
    _, client = live.new_user()
    for filename, blob in (("r.tar.gz", tar_gz({"a/b.py": "x = 1"}, root="project")),
                           ("r.zip", zip_bytes({"a/b.py": "x = 1", "c.txt": "c"}))):
        name = unique("arch")
        r = client.post("/api/v1/repos", data={"name": name}, files={"archive": (filename, blob)})
        assert r.status_code == 201, r.text
        owner = r.json()["owner"]
        assert client.get(f"/api/v1/repos/{owner}/{name}/files/a/b.py").text == "x = 1"
    evil = tar_gz({"../escape.py": "boom"})
    name = unique("evil")
    r = client.post("/api/v1/repos", data={"name": name}, files={"archive": ("e.tar.gz", evil)})
    assert r.status_code == 422 and "escape" in r.json()["detail"]
    assert client.get("/api/v1/repos").json() and name not in {
        x["name"] for x in client.get("/api/v1/repos").json()}
    r = client.post("/api/v1/repos", data={"name": unique("n")},
                    files={"archive": ("x.txt", b"just text")})
    assert r.status_code == 422


def test_repository_names_are_unique_whatever_their_case(any_live: Live) -> None:
    user, client = any_live.new_user()
    assert client.post("/api/v1/repos", json={"name": "ResNet50"}).status_code == 201
    r = client.post("/api/v1/repos", json={"name": "resnet50"})
    assert r.status_code == 409 and r.json()["error"] == "duplicate_repo"
    assert r.json()["detail"] == f"repository '{user}/ResNet50' already exists (names ignore case)"
    r = client.post("/api/v1/repos", data={"name": "RESNET50"},
                    files={"archive": ("r.tar.gz", tar_gz({"a.py": "x = 1", "b.py": ""}))})
    assert r.status_code == 409, r.text
    assert [x["name"] for x in client.get("/api/v1/repos").json()] == ["ResNet50"]
    _, other = any_live.new_user()
    assert other.post("/api/v1/repos", json={"name": "resnet50"}).status_code == 201


def test_an_archive_under_one_top_folder_says_that_folder_was_left_out(live: Live) -> None:
    _, client = live.new_user()

    def upload(blob: bytes) -> dict[str, object]:
        r = client.post("/api/v1/repos", data={"name": unique("top")},
                        files={"archive": ("r.tar.gz", blob)})
        assert r.status_code == 201, r.text
        body: dict[str, object] = r.json()
        return body

    plain = upload(tar_gz({"train.py": "", "config.json": '{"code_dir": ""}'},
                          root="project"))
    assert plain["stripped_root"] == "project"
    assert client.get(f"/api/v1/repos/{plain['full_name']}/files/train.py").status_code == 200
    # Its config names train/ as the code folder: train/ is part of the repository.
    named = upload(tar_gz({"train_dir/train.py": "", "config.json":
                           '{// the sample layout\n "code_dir": "train/train_dir/",}'},
                          root="train"))
    assert named["stripped_root"] is None
    r = client.get(f"/api/v1/repos/{named['full_name']}/files/train/train_dir/train.py")
    assert r.status_code == 200
    several = upload(tar_gz({"a.py": "", "b/c.py": ""}))
    assert several["stripped_root"] is None
