"""A training that plants links in its workspace: the platform follows none of them.

The boot file makes its log_url folder and its second output folder symbolic links into another
user's repository, puts in its outputs a symbolic link and a hard link to files outside them,
and plants a fake Aim repository reached through a link and a linked inference app. Nothing
outside is then listed, served, written, evaluated, published or run, and each refusal names
the path (a 4xx, never a 500).
"""

from __future__ import annotations

import io
import re
import tarfile
from typing import Any

import httpx

from tests.live import Live, unique
from tests.repo_files import config, create_repo, submit

PLANT = '''
import argparse, os, pathlib
p = argparse.ArgumentParser()
p.add_argument("--output_url")
p.add_argument("--second_url")
p.add_argument("--victim")
a, _ = p.parse_known_args()
out, second = pathlib.Path(a.output_url), pathlib.Path(a.second_url)
up = "../../../../"  # from out/ (workspace/out): followed by the platform, lands in its data dir
(out / "model.ckpt").write_bytes(b"real weights")
(out / "secret.txt").symlink_to(up + "session-secret")
(out / "stolen.ckpt").symlink_to(up + "session-secret")
try:
    os.link(out.parent.parent.parent.parent / "session-secret", out / "hard.ckpt")
except OSError:  # a sandbox hides the data dir: a second name of an own file is refused too
    (out / "mine.bin").write_bytes(b"x")
    os.link(out / "mine.bin", out / "hard.ckpt")
(out / "victim").symlink_to(up + "repos/" + a.victim)
(out / "logs").symlink_to(up + "repos/" + a.victim)
(out / "aimlink").symlink_to(up + "repos/" + a.victim)
(out / "db" / ".aim" / "meta").mkdir(parents=True)
(out / "db" / ".aim" / "meta" / "chunks").symlink_to("../../../" + up + "repos/" + a.victim)
# Where a sandbox leaves these writable, the run replaces a whole output folder and its
# code's inference app by links too.
victim = up + "repos/" + a.victim
app = out.parent / "inference" / "app.py"
for name, plant in (
        ("second", lambda: (second.rmdir(), second.symlink_to("../" + victim))),
        ("inference", lambda: (app.parent.mkdir(exist_ok=True), app.unlink(missing_ok=True),
                               app.symlink_to(victim + "/code/x.py")))):
    try:
        plant()
        print("PLANTED", name, flush=True)
    except OSError as exc:
        print("could not plant", name, exc, flush=True)
print("planted", flush=True)
'''


def _signed_in(live: Live, api: httpx.Client) -> httpx.Client:
    browser = httpx.Client(base_url=live.url, follow_redirects=False)
    form = browser.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert csrf, form
    token = api.headers["Authorization"].removeprefix("Bearer ")
    assert browser.post("/login", data={"token": token, "csrf_token": csrf[1]}).status_code == 303
    return browser


def _victim(live: Live) -> tuple[str, httpx.Client, dict[str, Any]]:
    _, client = live.new_user("v")
    repo = create_repo(client, {"README.md": "mine", "code/x.py": "print(1)"})
    files = client.get(f"/api/v1/repos/{repo}").json()["files"]
    return repo, client, {f["path"]: f["size"] for f in files}


def test_links_planted_by_a_run_are_never_followed(live: Live) -> None:
    victim_repo, victim, victim_files = _victim(live)
    _, client = live.new_user()
    repo = create_repo(client, {"README.md": "planter", "code/plant.py": PLANT})
    cfg = config("planter", boot_file="plant.py", log_url="out/logs/",
                 outputs=[{"output_dir": "out/", "name": "output_url"},
                          {"output_dir": "second/", "name": "second_url"}],
                 hypeparameters=[{"name": "victim", "value": victim_repo}])
    r = submit(client, repo, cfg)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    done = live.wait_status(client, tid, {"Completed", "Failed"})
    assert done["status"] == "Completed", done

    # Nothing was written into the victim's repository through the log folder link.
    after = victim.get(f"/api/v1/repos/{victim_repo}").json()["files"]
    assert {f["path"]: f["size"] for f in after} == victim_files
    log = client.get(f"/api/v1/trainings/{tid}/log").text
    assert "[trainyard] the log copy was not written" in log and "'out/logs'" in log
    planted_second, planted_app = "PLANTED second" in log, "PLANTED inference" in log

    # The listing shows only the run's own files; links are flagged, never entered.
    listing = client.get(f"/api/v1/trainings/{tid}/outputs")
    assert listing.status_code == 200, listing.text
    entries = {e["path"]: e for e in listing.json()}
    assert entries["out/model.ckpt"]["refused"] is None
    linked = ["out/secret.txt", "out/stolen.ckpt", "out/hard.ckpt", "out/victim", "out/logs",
              "out/aimlink"] + (["second"] if planted_second else [])
    for planted in linked:
        assert entries[planted]["refused"], planted
        assert entries[planted]["size"] == 0 and not entries[planted]["checkpoint"]
    assert not [p for p in entries if p.startswith(("out/victim/", "out/logs/", "second/"))]

    # Downloads of the planted entries are 422s naming the path, never the data.
    for planted in ["out/secret.txt", "out/hard.ckpt", "out/victim/README.md",
                    "out/logs/README.md"] + (["second/README.md", "second"] if planted_second
                                             else []):
        r = client.get(f"/api/v1/trainings/{tid}/outputs/{planted}")
        assert r.status_code == 422, (planted, r.status_code, r.text[:200])
        assert r.json()["error"] == "unsafe_path"
        assert "/".join(planted.split("/")[:2]).removesuffix("/README.md") in r.json()["detail"]
    r = client.get(f"/api/v1/trainings/{tid}/outputs/out/model.ckpt")
    assert r.status_code == 200 and r.content == b"real weights"

    # The training page lists the refused entries with the reason, without a download link.
    page = _signed_in(live, client).get(f"/trainings/{tid}")
    assert page.status_code == 200
    assert "not served: &#39;out/secret.txt&#39; is a symbolic link" in page.text
    assert f"/api/v1/trainings/{tid}/outputs/out/secret.txt" not in page.text
    assert f"/api/v1/trainings/{tid}/outputs/out/model.ckpt" in page.text

    # The folder as .tar.gz: the real file, and a note of what was left out.
    r = client.get(f"/api/v1/trainings/{tid}/outputs/out")
    assert r.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        names = tar.getnames()
        skipped = tar.extractfile("out/SKIPPED.txt")
        assert skipped is not None
        note = skipped.read().decode()
    assert sorted(n for n in names if not n.startswith("out/db")) == [
        "out", "out/SKIPPED.txt", "out/model.ckpt"]
    assert "out/hard.ckpt" in note and "out/secret.txt" in note
    assert b"session" not in r.content

    # Publishing refuses the linked checkpoints; the real one publishes.
    for name in ("out/stolen.ckpt", "out/hard.ckpt"):
        r = client.post(f"/api/v1/trainings/{tid}/publish",
                        json={"name": unique("m"), "checkpoint": name})
        assert r.status_code == 422, r.text
        assert r.json()["fields"][0]["field"] == "checkpoint"
    r = client.post(f"/api/v1/trainings/{tid}/publish", json={"name": unique("m")})
    assert r.status_code == 201, r.text
    assert r.json()["size_bytes"] == len(b"real weights")

    # The code's inference app replaced by a link: no predictor starts from it.
    r = client.post(f"/api/v1/trainings/{tid}/inference", json={})
    assert r.status_code == 409, r.text
    if planted_app:
        assert r.json()["error"] == "unsafe_path" and "inference/app.py" in r.json()["detail"]

    # A custom evaluation through a link, or of an Aim repository holding one, is refused.
    for aim_path, bad in (("out/aimlink/", "out/aimlink"), ("out/db/", "out/db/.aim/meta/chunks")):
        r = client.post(f"/api/v1/trainings/{tid}/evaluation",
                        json={"type": "custom", "aim_path": aim_path})
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "unsafe_path" and bad in r.json()["detail"]
