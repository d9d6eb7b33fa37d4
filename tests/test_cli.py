"""The `trainyard` client commands, run as a real subprocess against the live platform."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import tomllib
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.cifar_data import write_cifar_binary
from tests.inference_apps import CLASSES, completed_training, fake_repo, image_bytes
from tests.live import ADMIN_TOKEN, ROOT, Live, free_port, unique
from tests.loss_monitor import LOSS_MONITOR_TRAIN
from tests.repo_files import BOOT_FILES, config, create_repo, submit, tar_gz


@dataclass
class Cli:
    """Runs `python -m app.cli.main ...` with its own config home and connection variables."""

    home: Path
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 120,
                 **extra_env: str) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **extra_env}
        return subprocess.run([sys.executable, "-m", "app.cli.main", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)


def make_cli(tmp_path: Path, **variables: str) -> Cli:
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / "cfg"), "COLUMNS": "250",
                "PYTHONUNBUFFERED": "1", **variables})
    return Cli(home=home, env=env)


@pytest.fixture
def user_cli(live: Live, tmp_path: Path) -> tuple[Cli, httpx.Client]:
    """A CLI connected (through the environment) as a fresh user, and that user's client."""
    _, client = live.new_user()
    token = str(client.headers["Authorization"]).split()[1]
    return make_cli(tmp_path, TRAINYARD_URL=live.url, TRAINYARD_TOKEN=token), client


def write_repo(root: Path, cfg_text: str) -> Path:
    for rel, content in {**BOOT_FILES, "train/config.json": cfg_text}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    (root / "code" / "__pycache__").mkdir()
    (root / "code" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0junk")
    return root


def push(cli: Cli, tmp_path: Path, cfg: dict[str, object] | None = None) -> str:
    """Push the boot files (and train/config.json) as a new repository; returns OWNER/NAME."""
    folder = write_repo(tmp_path / unique("src"), json.dumps(cfg or config("cli-run")))
    name = unique("r")
    r = cli("repos", "push", name, str(folder))
    assert r.returncode == 0, r.stderr
    match = re.search(r"created (\S+/" + name + ")", r.stdout)
    assert match, r.stdout
    return match.group(1)


def training_id(stdout: str) -> int:
    match = re.search(r"training (\d+) ", stdout)
    assert match, stdout
    return int(match.group(1))


def test_login_writes_a_private_config_file_used_later(live: Live, tmp_path: Path) -> None:
    cli = make_cli(tmp_path)
    path = cli.home / "cfg" / "trainyard" / "config.toml"
    bad = cli("login", "--url", live.url, "--token", "ty_wrong")
    assert bad.returncode == 1 and not path.exists()
    assert "invalid API token [401 unauthorized]" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
    port = free_port()
    down = cli("login", "--url", f"127.0.0.1:{port}", "--token", ADMIN_TOKEN)
    assert down.returncode == 1
    assert f"cannot reach http://127.0.0.1:{port}/api/v1/me" in down.stderr, down.stderr

    ok = cli("login", "--url", live.url + "/", "--token", ADMIN_TOKEN)
    assert ok.returncode == 0, ok.stderr
    assert "as admin" in ok.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = tomllib.loads(path.read_text())["default"]
    assert saved == {"url": live.url, "token": ADMIN_TOKEN}
    no_xdg = cli("login", "--url", live.url, XDG_CONFIG_HOME="", TRAINYARD_TOKEN=ADMIN_TOKEN)
    assert no_xdg.returncode == 0, no_xdg.stderr
    assert (cli.home / ".config" / "trainyard" / "config.toml").is_file()

    assert cli("repos", "list").returncode == 0
    assert cli("list", "--token", "ty_wrong").returncode == 1  # a flag beats the file
    env_bad = cli("repos", "list", TRAINYARD_TOKEN="ty_wrong")
    assert env_bad.returncode == 1 and "check the token" in env_bad.stderr
    # The saved token belongs to the saved server and is not sent to another one.
    elsewhere = cli("list", "--url", f"http://127.0.0.1:{port}")
    assert elsewhere.returncode == 1 and "no API token" in elsewhere.stderr


def test_push_submit_follow_list_and_download(user_cli: tuple[Cli, httpx.Client],
                                              tmp_path: Path) -> None:
    cli, client = user_cli
    repo = push(cli, tmp_path, config("cli-run", hypeparameters=[{"name": "epochs",
                                                                   "value": "3"}]))
    listed = cli("repos", "files", repo).stdout
    assert "code/main.py" in listed and "train/config.json" in listed
    assert "__pycache__" not in listed
    assert json.loads(cli("repos", "cat", repo, "train/config.json").stdout)["job_name"] \
        == "cli-run"

    run = cli("submit", "--repo", repo, "train/config.json", "--follow")
    assert run.returncode == 0, run.stderr
    tid = training_id(run.stdout)
    assert "Pending" in run.stdout and "epoch 1/3" in run.stdout and "finished" in run.stdout
    assert "ended: Completed" in run.stderr

    full_log = client.get(f"/api/v1/trainings/{tid}/log").text
    printed = cli("logs", str(tid))
    assert printed.returncode == 0 and printed.stdout == full_log
    followed = cli("logs", str(tid), "-f")
    assert followed.returncode == 0 and followed.stdout == full_log

    rows = [line.split() for line in cli("list").stdout.splitlines()]
    assert [str(tid), repo, "cli-run", "Completed"] in [row[:4] for row in rows]
    assert str(tid) in cli("list", "--repo", repo).stdout
    detail = cli("show", str(tid)).stdout
    assert "Completed (exit code 0)" in detail and '"job_name": "cli-run"' in detail
    assert re.search(r"Created by\s+\w", detail) and not re.search(r"Created by\s+-", detail)

    table = cli("outputs", str(tid)).stdout
    assert re.search(r"out/model\.ckpt\s+700 B\s+\S+ \S+\s+yes", table), table
    dest = tmp_path / "downloaded"
    got = cli("outputs", str(tid), "--download", str(dest))
    assert got.returncode == 0, got.stderr
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == ["out/model.ckpt", "out/sub/notes.txt"]
    assert (dest / "out/model.ckpt").read_bytes() == b"weights" * 100

    # An interrupted download resumes where it stopped while the server has the same file
    # (its ETag); a partial copy of another version starts over.
    etag = client.get(f"/api/v1/trainings/{tid}/outputs/out/model.ckpt").headers["etag"]
    resumed = tmp_path / "resumed"
    (resumed / "out/sub").mkdir(parents=True)
    (resumed / "out/model.ckpt.part").write_bytes(b"weights" * 40)
    (resumed / "out/model.ckpt.part.etag").write_text(etag)
    (resumed / "out/sub/notes.txt.part").write_bytes(b"OLD")
    (resumed / "out/sub/notes.txt.part.etag").write_text('"another-version"')
    got = cli("outputs", str(tid), "--download", str(resumed))
    assert got.returncode == 0, got.stderr
    assert "resuming model.ckpt at 280 bytes" in got.stderr
    assert "resuming notes.txt" not in got.stderr
    assert sorted(p.relative_to(resumed).as_posix() for p in resumed.rglob("*")
                  if p.is_file()) == files
    assert (resumed / "out/model.ckpt").read_bytes() == b"weights" * 100
    assert (resumed / "out/sub/notes.txt").read_text() == "done"


def test_local_config_file_errors_and_failed_exit_code(user_cli: tuple[Cli, httpx.Client],
                                                       tmp_path: Path) -> None:
    cli, _client = user_cli
    repo = push(cli, tmp_path)
    local = tmp_path / "local.jsonc"
    bad = config("bad-outputs", outputs=[{"output_dir": "out/", "name": "o"}],
                 hypeparameters=[{"name": "epochs", "value": "2"}, {"name": "epochs",
                                                                    "value": "3"}])
    local.write_text("// duplicate names\n" + json.dumps(bad))
    r = cli("submit", "--repo", repo, "--file", str(local))
    assert r.returncode == 1
    assert re.search(r"^  hypeparameters\[1\]\.name: ", r.stderr, re.M), r.stderr
    assert "[422 invalid]" in r.stderr and "Traceback" not in r.stderr

    local.write_text('{"job_name": "x",, }')
    syntax = cli("submit", "--repo", repo, "--file", str(local))
    assert syntax.returncode == 1 and "local.jsonc is not valid JSON: line 1" in syntax.stderr

    local.write_text("{\n  // fails on purpose\n" + json.dumps(
        config("broken-run", boot_file="fail.py"))[1:])
    failed = cli("submit", "--repo", repo, "--file", str(local), "-f")
    assert failed.returncode == 1, failed.stderr
    assert "Traceback: something broke" in failed.stdout
    assert "ended: Failed" in failed.stderr
    shown = cli("show", str(training_id(failed.stdout))).stdout
    assert "Failed (exit code 3)" in shown and "something broke" in shown

    missing = cli("submit", "--repo", repo, "nope/config.json")
    assert missing.returncode == 1 and "nope/config.json" in missing.stderr
    both = cli("submit", "--repo", repo, "train/config.json", "--file", str(local))
    assert both.returncode == 1 and "either CONFIG_PATH" in both.stderr


def test_terminate_and_delete_a_sleeping_training(live: Live,
                                                  user_cli: tuple[Cli, httpx.Client],
                                                  tmp_path: Path) -> None:
    cli, client = user_cli
    repo = push(cli, tmp_path, config("sleepy", boot_file="sleep.py"))
    tid = training_id(cli("submit", "--repo", repo, "train/config.json").stdout)
    live.wait_status(client, tid, {"Running"})
    follower = subprocess.Popen([sys.executable, "-m", "app.cli.main", "logs", str(tid), "-f"],
                                cwd=ROOT, env=cli.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    stopped = cli("terminate", str(tid))
    assert stopped.returncode == 0, stopped.stderr
    assert re.search(rf"training {tid}: (Terminating|Terminated)", stopped.stdout), stopped.stdout
    out, errors = follower.communicate(timeout=60)
    assert follower.returncode == 1 and "sleeping" in out and "ended: Terminated" in errors

    refused = cli("delete", str(tid))
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert cli("delete", str(tid), "--yes").returncode == 0
    gone = cli("show", str(tid))
    assert gone.returncode == 1 and f"training {tid} not found [404 not_found]" in gone.stderr


class CuttingProxy:
    """A TCP proxy to the live server that cuts the first log stream after `cut_after` bytes."""

    def __init__(self, upstream: str, cut_after: int) -> None:
        self.upstream = httpx.URL(upstream)
        self.cut_after = cut_after
        self.cuts = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        up = socket.create_connection((self.upstream.host, self.upstream.port or 80))
        cutting = threading.Event()  # set once this connection carries the first log stream

        def requests() -> None:
            try:
                while data := conn.recv(65536):
                    if b"/log/stream" in data and self.cuts == 0:
                        self.cuts += 1
                        cutting.set()
                    up.sendall(data)
            except OSError:
                pass

        threading.Thread(target=requests, daemon=True).start()
        sent = 0
        try:
            while data := up.recv(65536):
                if cutting.is_set() and sent + len(data) >= self.cut_after:
                    conn.sendall(data[:self.cut_after - sent])
                    break
                conn.sendall(data)
                sent += len(data) if cutting.is_set() else 0
        except OSError:
            pass
        finally:
            for sock in (conn, up):  # shutdown, unlike close, also wakes the other thread
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self.server.close()


def test_follow_resumes_where_a_dropped_stream_stopped(live: Live,
                                                       user_cli: tuple[Cli, httpx.Client],
                                                       tmp_path: Path) -> None:
    cli, client = user_cli
    repo = push(cli, tmp_path, config("ticking", boot_file="ticker.py", hypeparameters=[
        {"name": "ticks", "value": "25"}, {"name": "every", "value": "0.08"}]))
    proxy = CuttingProxy(live.url, cut_after=700)
    try:
        run = cli("submit", "--repo", repo, "train/config.json", "-f",
                  "--url", proxy.url)
    finally:
        proxy.close()
    assert run.returncode == 0, run.stderr
    assert proxy.cuts == 1 and "reconnecting" in run.stderr
    tid = training_id(run.stdout)
    log = client.get(f"/api/v1/trainings/{tid}/log").text
    assert run.stdout.split("\n", 1)[1] == log  # every line once, none lost or repeated
    assert "tick 24 " in log


def test_logs_are_paged_and_missing_things_are_readable(live: Live,
                                                        user_cli: tuple[Cli, httpx.Client],
                                                        tmp_path: Path) -> None:
    cli, client = user_cli
    boot = "import sys\nfor i in range(40000):\n    print(f'{i:08d} ' + 'x' * 70)\n"
    repo = push(cli, tmp_path, config("chatty", boot_file="chatty.py"))
    assert cli("repos", "put", repo, "code/chatty.py", str(
        _write(tmp_path / "chatty.py", boot))).returncode == 0
    tid = training_id(cli("submit", "--repo", repo, "train/config.json").stdout)
    assert live.wait_status(client, tid, {"Completed", "Failed"})["status"] == "Completed"
    printed = cli("logs", str(tid))
    assert printed.returncode == 0 and len(printed.stdout) > 3 * 1024 * 1024
    assert printed.stdout == client.get(f"/api/v1/trainings/{tid}/log",
                                        params={"limit": 16 * 1024 * 1024}).text

    nothing = cli("logs", "999999", "-f")
    assert nothing.returncode == 1 and "training 999999 not found" in nothing.stderr
    no_repo = cli("repos", "cat", "nobody/none", "x.py")
    assert no_repo.returncode == 1 and "[404 not_found]" in no_repo.stderr
    assert "OWNER/NAME" in cli("list", "--repo", "just-a-name").stderr


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_datasets_upload_import_and_list(live: Live, user_cli: tuple[Cli, httpx.Client],
                                         tmp_path: Path) -> None:
    cli, _client = user_cli
    folder = write_cifar_binary(tmp_path / "tiny", 30, 10)
    name = unique("ds")
    up = cli("datasets", "import", name, str(folder))
    assert up.returncode == 0, up.stderr
    assert re.search(rf"dataset \S+/{name} is ready", up.stdout), up.stdout
    assert re.search(rf"/{name}\s+cifar10-binary\s+30 train / 10 test, 10 classes",
                     cli("datasets", "list").stdout)
    denied = cli("datasets", "import", unique("ds"), str(folder), "--on-server")
    assert denied.returncode == 1 and "[403 forbidden]" in denied.stderr, denied.stderr

    admin = make_cli(tmp_path / "admin", TRAINYARD_URL=live.url, TRAINYARD_TOKEN=ADMIN_TOKEN)
    on_server = admin("datasets", "import", unique("srv"), str(folder), "--on-server")
    assert on_server.returncode == 0, on_server.stderr
    relative = admin("datasets", "import", unique("srv"), "tiny", "--on-server")
    assert relative.returncode == 1 and re.search(r"^  path: ", relative.stderr, re.M)

    archive = tmp_path / "web" / "tiny.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-bin")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(archive.parent))
    web = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        link = f"http://127.0.0.1:{web.server_address[1]}/tiny.tar.gz"
        fetched = admin("datasets", "import", unique("web"), link, "--from-url",
                        "--sha256", digest)
        assert fetched.returncode == 0, fetched.stderr
        wrong = admin("datasets", "import", unique("web"), link, "--from-url",
                      "--sha256", "0" * 64)
        assert wrong.returncode == 1 and "checksum_mismatch" in wrong.stderr, wrong.stderr
    finally:
        web.shutdown()


def test_models_upload_and_list(live: Live, user_cli: tuple[Cli, httpx.Client],
                                tmp_path: Path) -> None:
    cli, _client = user_cli
    ckpt = _write(tmp_path / "resnet.ckpt", "weights" * 1000)
    notes = _write(tmp_path / "notes.txt", "trained on tiny data")
    name = unique("m")
    r = cli("models", "upload", name, str(ckpt), str(notes), "--description", "tiny one")
    assert r.returncode == 0, r.stderr
    assert "use it in a config's inputs as: " in r.stdout
    assert re.search(rf"/{name}\s+tiny one\s+2\s+7\.0 kB", cli("models", "list").stdout)
    twice = cli("models", "upload", name, str(ckpt))
    assert twice.returncode == 1 and "[409" in twice.stderr, twice.stderr
    missing = cli("models", "upload", unique("m"), str(tmp_path / "nope.ckpt"))
    assert missing.returncode == 1 and "nope.ckpt is not a file" in missing.stderr


def test_evaluate_standard_waits_and_prints_a_report_url(live: Live,
                                                          user_cli: tuple[Cli, httpx.Client]
                                                          ) -> None:
    cli, client = user_cli
    repo = create_repo(client, {"README.md": "x", "code/losses.py": LOSS_MONITOR_TRAIN})
    tid = submit(client, repo, config("loss-run", boot_file="losses.py")).json()["id"]
    live.wait_status(client, tid, {"Completed"}, timeout=60)
    both = cli("evaluate", str(tid), "--standard", "--aim-path", "./db/")
    assert both.returncode == 1 and "exclude each other" in both.stderr
    missing = cli("evaluate", str(tid), "--aim-path", "./db/")
    assert missing.returncode == 1 and "aim_repo_not_found" in missing.stderr, missing.stderr

    r = cli("evaluate", str(tid), "--standard", "--wait")
    assert r.returncode == 0, r.stderr
    assert f"evaluation of training {tid} (standard): running" in r.stdout
    match = re.search(r"^report: (\S+)$", r.stdout, re.MULTILINE)
    assert match, r.stdout
    report = match[1]
    assert report.startswith(f"{live.url}/trainings/{tid}/aim/"), report
    assert client.get(report).status_code == 200
    assert httpx.get(report).status_code == 401
    again = cli("evaluate", str(tid), "--json")  # standard by default; reuses the report
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["report_url"] == report


@pytest.fixture(scope="module")
def fake_model(live: Live) -> tuple[str, int]:
    """A user's token and a Completed training whose inference app is a fake model."""
    _, client = live.new_user()
    token = str(client.headers["Authorization"]).split()[1]
    return token, completed_training(live, client, fake_repo(client))


def test_predict_prints_every_class_per_image(live: Live, fake_model: tuple[str, int],
                                              tmp_path: Path) -> None:
    token, tid = fake_model
    cli = make_cli(tmp_path, TRAINYARD_URL=live.url, TRAINYARD_TOKEN=token)
    blue = tmp_path / "blue.jpg"
    blue.write_bytes(image_bytes())
    yellow = tmp_path / "yellow.png"
    yellow.write_bytes(image_bytes((250, 250, 20), fmt="PNG"))
    r = cli("predict", str(tid), str(blue), str(yellow))
    assert r.returncode == 0, r.stderr
    blocks = r.stdout.split(str(yellow))
    assert str(blue) in blocks[0] and "checkpoint out/best.ckpt" in blocks[0]
    for block in blocks:
        rows = re.findall(r"^\s*(\d+)\s+(\w+)\s+(\d+\.\d\d)%", block, re.MULTILINE)
        assert [int(n) for n, _, _ in rows] == list(range(1, 11)), block
        assert sorted(label for _, label, _ in rows) == sorted(CLASSES)
        percents = [float(p) for _, _, p in rows]
        assert percents == sorted(percents, reverse=True)
        assert abs(sum(percents) - 100) < 0.1

    raw = cli("predict", str(tid), str(blue), "--json", "--checkpoint", "resnet-1_10.ckpt")
    assert raw.returncode == 0, raw.stderr
    [answer] = json.loads(raw.stdout)
    assert answer["file"] == str(blue) and len(answer["predictions"]) == 10
    assert answer["checkpoint"]["path"] == "out/ckpt/resnet-1_10.ckpt"
    top = cli("predict", str(tid), str(blue), "--top", "3")
    assert len(re.findall(r"\d+\.\d\d%", top.stdout)) == 3
    unknown = cli("predict", str(tid), str(blue), "--checkpoint", "nope.ckpt")
    assert unknown.returncode == 1 and "[422" in unknown.stderr, unknown.stderr
    absent = cli("predict", str(tid), str(tmp_path / "none.jpg"))
    assert absent.returncode == 1 and "none.jpg is not a file" in absent.stderr


def test_publish_makes_a_model_listed_by_models_list(live: Live, fake_model: tuple[str, int],
                                                     tmp_path: Path) -> None:
    token, tid = fake_model
    cli = make_cli(tmp_path, TRAINYARD_URL=live.url, TRAINYARD_TOKEN=token)
    name = unique("pub-")
    r = cli("publish", str(tid), name, "--checkpoint", "resnet-2_10.ckpt",
            "--description", "epoch two")
    assert r.returncode == 0, r.stderr
    assert re.search(rf"as model \S+/{name} \(10 B\)", r.stdout), r.stdout
    assert re.search(rf"inputs as: models/\S+/{name}/best\.ckpt", r.stdout), r.stdout
    assert re.search(rf"/{name}\s+epoch two\s+1\s+10 B", cli("models", "list").stdout)
    twice = cli("publish", str(tid), name)
    assert twice.returncode == 1 and "duplicate_model" in twice.stderr, twice.stderr


def test_tokens_create_list_and_revoke(live: Live, user_cli: tuple[Cli, httpx.Client],
                                       tmp_path: Path) -> None:
    cli, client = user_cli
    created = cli("tokens", "create", "laptop")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("ty_") and "not shown again" in created.stderr
    assert live.client(secret).get("/api/v1/me").status_code == 200

    listed = cli("tokens", "list")
    assert listed.returncode == 0, listed.stderr
    assert "laptop" in listed.stdout and "default" in listed.stdout
    assert "(this one)" in listed.stdout and secret not in listed.stdout
    assert secret[:10] in listed.stdout
    laptop_id = next(t["id"] for t in client.get("/api/v1/tokens").json()
                     if t["name"] == "laptop")

    revoked = cli("tokens", "revoke", str(laptop_id))
    assert revoked.returncode == 0 and f"token {laptop_id} revoked" in revoked.stdout
    assert live.client(secret).get("/api/v1/me").status_code == 401
    again = cli("tokens", "revoke", str(laptop_id))
    assert again.returncode != 0 and f"no token {laptop_id}" in again.stderr


def test_an_admin_manages_a_users_tokens_with_user_option(
        live: Live, user_cli: tuple[Cli, httpx.Client], tmp_path: Path) -> None:
    as_user, client = user_cli
    name = client.get("/api/v1/me").json()["username"]
    admin = make_cli(tmp_path / "admin", TRAINYARD_URL=live.url, TRAINYARD_TOKEN=ADMIN_TOKEN)
    created = admin("tokens", "create", "ci", "--user", name)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert f"created for {name}" in created.stderr
    assert live.client(secret).get("/api/v1/me").json()["username"] == name

    listed = admin("tokens", "list", "--user", name)
    assert listed.returncode == 0, listed.stderr
    assert "default" in listed.stdout and "ci" in listed.stdout and secret[:10] in listed.stdout
    assert secret not in listed.stdout and "(this one)" not in listed.stdout
    ci_id = next(t["id"] for t in client.get("/api/v1/tokens").json() if t["name"] == "ci")
    revoked = admin("tokens", "revoke", str(ci_id), "--user", name)
    assert revoked.returncode == 0 and f"token {ci_id} revoked (of {name})" in revoked.stdout
    assert live.client(secret).get("/api/v1/me").status_code == 401

    # Not an admin: refused, and an unknown user is named.
    refused = as_user("tokens", "list", "--user", "admin")
    assert refused.returncode == 1 and "403" in refused.stderr, refused.stderr
    unknown = admin("tokens", "list", "--user", "nobody-here")
    assert unknown.returncode == 1 and "no user 'nobody-here'" in unknown.stderr


def test_models_are_private_by_default_and_visibility_changes_it(
        user_cli: tuple[Cli, httpx.Client], tmp_path: Path) -> None:
    cli, client = user_cli
    owner = client.get("/api/v1/me").json()["username"]
    ckpt = tmp_path / "w.ckpt"
    ckpt.write_bytes(b"\0" * 16)
    assert cli("models", "upload", "weights", str(ckpt)).returncode == 0
    assert client.get(f"/api/v1/models/{owner}/weights").json()["is_public"] is False
    shared = cli("models", "upload", "shared", str(ckpt), "--public")
    assert shared.returncode == 0, shared.stderr
    assert client.get(f"/api/v1/models/{owner}/shared").json()["is_public"] is True
    made = cli("models", "visibility", f"{owner}/weights", "public")
    assert made.returncode == 0 and "is now public" in made.stdout, made.stderr
    assert client.get(f"/api/v1/models/{owner}/weights").json()["is_public"] is True
    bad = cli("models", "visibility", f"{owner}/weights", "everyone")
    assert bad.returncode != 0 and "'public' or 'private'" in bad.stderr


def test_login_warns_when_the_environment_outranks_it_and_whoami_tells(
        live: Live, tmp_path: Path) -> None:
    user, client = live.new_user("alice")
    token = str(client.headers["Authorization"]).split()[1]
    cli = make_cli(tmp_path, TRAINYARD_URL=live.url)
    shadowed = cli("login", "--token", token, TRAINYARD_TOKEN=ADMIN_TOKEN)
    assert shadowed.returncode == 0, shadowed.stderr
    assert f"as {user};" in shadowed.stdout
    assert "TRAINYARD_TOKEN is set in the environment and outranks the saved login: " \
           "commands will run as admin (admin)" in shadowed.stderr, shadowed.stderr
    env_who = cli("whoami", TRAINYARD_TOKEN=ADMIN_TOKEN)
    assert env_who.returncode == 0, env_who.stderr
    assert env_who.stdout.startswith(f"admin (admin) at {live.url} (token from the "
                                     "TRAINYARD_TOKEN environment variable)"), env_who.stdout
    saved_who = cli("whoami")
    assert saved_who.stdout.startswith(f"{user} at {live.url} (token from saved login ")
    refused = cli("login", "--token", token, TRAINYARD_TOKEN="ty_wrong")
    assert refused.returncode == 0, refused.stderr
    assert "commands will run with a token that" in refused.stderr
    assert "refuses (401)" in refused.stderr.replace("\n", " ")
    quiet = cli("login", "--token", token)
    assert quiet.returncode == 0 and "Warning" not in quiet.stderr, quiet.stderr
    nobody = make_cli(tmp_path / "other", TRAINYARD_URL=live.url)("whoami")
    assert nobody.returncode == 1 and "not logged in" in nobody.stderr


def test_submit_with_another_name_and_readable_headlines(
        user_cli: tuple[Cli, httpx.Client], tmp_path: Path) -> None:
    cli, client = user_cli
    repo = push(cli, tmp_path, config("cli-named"))
    first = cli("submit", "--repo", repo, "train/config.json")
    assert first.returncode == 0, first.stderr
    client.post(f"/api/v1/trainings/{training_id(first.stdout)}/terminate")
    again = cli("submit", "--repo", repo, "train/config.json")
    assert again.returncode == 1 and "trainyard submit --name" in again.stderr, again.stderr
    renamed = cli("submit", "--repo", repo, "train/config.json", "--name", "cli-named-2")
    assert renamed.returncode == 0, renamed.stderr
    assert "(cli-named-2)" in renamed.stdout
    client.post(f"/api/v1/trainings/{training_id(renamed.stdout)}/terminate")


def test_error_headlines_are_sentences() -> None:
    from app.cli.client_api import error_lines

    text_file = {"error": "invalid", "detail": "file: not an image this service reads",
                 "fields": [{"field": "file", "message": "not an image this service reads"}]}
    assert error_lines(text_file) == ("the request has 1 problem",
                                      ["file: not an image this service reads"])
    config = {"error": "invalid", "detail": "training config has 2 problems: a: x; b: y",
              "fields": [{"field": "a", "message": "x"}, {"field": "b", "message": "y"}]}
    assert error_lines(config) == ("training config has 2 problems", ["a: x", "b: y"])
    assert error_lines({"error": "not_found"}) == ("not found", [])


def test_models_delete(live: Live, user_cli: tuple[Cli, httpx.Client], tmp_path: Path) -> None:
    cli, client = user_cli
    ckpt = _write(tmp_path / "resnet.ckpt", "weights")
    name = unique("m")
    assert cli("models", "upload", name, str(ckpt)).returncode == 0
    twice = cli("models", "upload", name, str(ckpt))
    owner = client.get("/api/v1/me").json()["username"]
    assert f"`trainyard models delete {owner}/{name}`" in twice.stderr, twice.stderr
    unasked = cli("models", "delete", f"{owner}/{name}")
    assert unasked.returncode == 1 and "pass --yes" in unasked.stderr
    gone = cli("models", "delete", f"{owner}/{name}", "--yes")
    assert gone.returncode == 0 and f"deleted model {owner}/{name}" in gone.stdout, gone.stderr
    assert client.get(f"/api/v1/models/{owner}/{name}").status_code == 404


def test_list_keeps_long_repository_names_whole_at_80_columns(
        user_cli: tuple[Cli, httpx.Client]) -> None:
    cli, client = user_cli
    name = unique("a-rather-long-repository-name-for-the-list-")
    r = client.post("/api/v1/repos", data={"name": name},
                    files={"archive": ("r.tar.gz", tar_gz(BOOT_FILES))})
    assert r.status_code == 201, r.text
    repo = r.json()["full_name"]
    created = submit(client, repo, config("long-name-run"))
    assert created.status_code == 201, created.text
    listed = cli("list", "--repo", repo, COLUMNS="80")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.strip().startswith(
        str(created.json()["id"])))
    assert repo in row and "long-name-run" in row, listed.stdout
    assert "…" not in listed.stdout
    client.post(f"/api/v1/trainings/{created.json()['id']}/terminate")
