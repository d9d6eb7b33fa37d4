"""Small repositories for tests: boot files that print, fail, spawn children, sleep."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from typing import Any

import httpx
import psutil

from tests.live import unique


def tar_gz(files: dict[str, str | bytes], *, root: str | None = None) -> bytes:
    """A .tar.gz holding `files` (optionally under one top-level folder)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(f"{root}/{path}" if root else path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(files: dict[str, str | bytes]) -> bytes:
    """A .zip holding `files`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, content in files.items():
            zf.writestr(path, content)
    return buf.getvalue()


def config(job_name: str, *, boot_file: str = "main.py", **extra: Any) -> dict[str, Any]:
    """A minimal valid config for the test repos' code folder `code/`."""
    cfg: dict[str, Any] = {
        "code_dir": "code/", "boot_file": boot_file, "job_name": job_name,
        "outputs": [{"output_dir": "out/", "name": "output_url"}],
        "hypeparameters": [{"name": "epochs", "value": "2"}],
    }
    cfg.update(extra)
    return cfg


BOOT_FILES = {
    "README.md": "Small boot files for tests.\n",
    "code/main.py": """
import argparse, os, pathlib, time
p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=1)
p.add_argument("--output_url")
p.add_argument("--sleep", type=float, default=0)
a, _ = p.parse_known_args()
for e in range(a.epochs):
    print(f"epoch {e + 1}/{a.epochs}", flush=True)
    time.sleep(a.sleep)
out = pathlib.Path(a.output_url)
(out / "model.ckpt").write_bytes(b"weights" * 100)
(out / "sub").mkdir(exist_ok=True)
(out / "sub" / "notes.txt").write_text("done")
print("finished", flush=True)
""",
    "code/fail.py": """
import sys
for i in range(50):
    print(f"line {i}")
print("Traceback: something broke", file=sys.stderr)
sys.exit(3)
""",
    "code/env.py": """
import json, os
print("ENV " + json.dumps(dict(os.environ)), flush=True)
""",
    "code/sleep.py": """
import time
print("sleeping", flush=True)
time.sleep(600)
""",
    "code/ticker.py": """
import argparse, time
p = argparse.ArgumentParser()
p.add_argument("--ticks", type=int, default=20)
p.add_argument("--every", type=float, default=0.2)
a, _ = p.parse_known_args()
for i in range(a.ticks):
    print(f"tick {i} {time.time():.6f}", flush=True)
    time.sleep(a.every)
""",
    "code/spin.py": """
import time
start = time.perf_counter()
n = 0
while time.perf_counter() - start < 8:
    for _ in range(10000):
        n += 1
    if n % 1000000 == 0:
        print(f"spun {n}", flush=True)
print(f"RATE {n / (time.perf_counter() - start):.0f}", flush=True)
""",
    "code/family.py": """
import argparse, os, subprocess, sys, time
p = argparse.ArgumentParser()
p.add_argument("--output_url")
out = p.parse_known_args()[0].output_url
# Every process of the family names the output folder on its command line.
child = subprocess.Popen([sys.executable, "-c", '''
import os, subprocess, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        open(os.path.join(sys.argv[1], "grandchild.started"), "w").write("1")
        time.sleep(600)
    os._exit(0)
time.sleep(600)
''', out])
open(os.path.join(out, "child.started"), "w").write("1")
print("family started", flush=True)
time.sleep(600)
""",
}


def processes_naming(text: str) -> list[psutil.Process]:
    """Live processes whose command line contains `text` (e.g. a training's output folder)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if text in " ".join(proc.info["cmdline"] or ()) and \
                    proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def create_repo(client: httpx.Client, files: dict[str, str | bytes] | None = None) -> str:
    """Upload a repository made of `files` (the boot files by default); returns owner/name."""
    name = unique("r")
    r = client.post("/api/v1/repos", data={"name": name},
                    files={"archive": ("repo.tar.gz", tar_gz(files or BOOT_FILES))})
    assert r.status_code == 201, r.text
    return f"{r.json()['owner']}/{name}"


def submit(client: httpx.Client, repo: str, cfg: dict[str, Any]) -> httpx.Response:
    """POST a config to the repo's trainings."""
    return client.post(f"/api/v1/repos/{repo}/trainings", content=json.dumps(cfg),
                       headers={"Content-Type": "application/json"})
