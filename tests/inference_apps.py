"""Small repositories whose `inference/app.py` stands in for a model (no MindSpore needed)."""

from __future__ import annotations

import io
from typing import Any

import httpx
from PIL import Image

from tests.live import Live
from tests.repo_files import config, create_repo, submit

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")

# A deterministic "model": the distribution depends on the image's mean colour and on the
# checkpoint's bytes. An all-red image kills the process, to test recovery; `predict_batch`
# sleeps like a forward pass so that concurrent requests have time to batch.
FAKE_APP = '''
import math, os, time
LABELS = __LABELS__
STATE = {}

def load(checkpoint_path):
    with open(checkpoint_path, "rb") as f:
        STATE["bias"] = sum(f.read()) % 7

def _scores(image):
    small = image.convert("RGB").resize((4, 4))
    pixels = list(small.getdata())
    if all(p == (255, 0, 0) for p in pixels):
        os._exit(9)
    r, g, b = (sum(p[i] for p in pixels) / len(pixels) / 255 for i in range(3))
    logits = [math.sin(3 * r + k) + math.cos(5 * g - k) + b * k / 3 + (STATE["bias"] == k)
              for k in range(len(LABELS))]
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return {label: e / total for label, e in zip(LABELS, exps)}

def predict(image):
    time.sleep(0.02)
    return _scores(image)

def predict_batch(images):
    time.sleep(0.02)
    return [_scores(image) for image in images]
'''.replace("__LABELS__", repr(CLASSES))

BROKEN_APP = '''
raise RuntimeError("this model cannot load: missing weights")
'''

TRAIN_WITH_CHECKPOINTS = """
import argparse, pathlib, time
p = argparse.ArgumentParser()
p.add_argument("--output_url")
a, _ = p.parse_known_args()
out = pathlib.Path(a.output_url)
(out / "ckpt").mkdir(exist_ok=True)
(out / "ckpt" / "resnet-1_10.ckpt").write_bytes(b"epoch one")
time.sleep(0.02)
(out / "best.ckpt").write_bytes(b"the best weights")
time.sleep(0.02)
(out / "ckpt" / "resnet-2_10.ckpt").write_bytes(b"epoch two!")
print("trained", flush=True)
"""

TRAIN_WITHOUT_CHECKPOINT = """
print("no checkpoint written", flush=True)
"""


def image_bytes(color: tuple[int, ...] = (30, 120, 200), size: tuple[int, int] = (64, 48),
                fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    """An encoded image of one colour."""
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format=fmt)
    return buf.getvalue()


def fake_repo(client: httpx.Client, *, app: str | None = FAKE_APP,
              train: str = TRAIN_WITH_CHECKPOINTS) -> str:
    """A repository with a boot file writing checkpoints and (optionally) an inference app."""
    # Two top-level entries: an archive with a single folder is unpacked as its contents.
    files: dict[str, str | bytes] = {"code/main.py": train, "README.md": "# test model\n"}
    if app is not None:
        files["inference/app.py"] = app
    return create_repo(client, files)


def completed_training(live: Live, client: httpx.Client, repo: str,
                       job_name: str = "infer-run") -> int:
    """Run the repo's `code/main.py` as a training and wait until it is Completed."""
    r = submit(client, repo, config(job_name, hypeparameters=[]))
    assert r.status_code == 201, r.text
    done = live.wait_status(client, r.json()["id"], {"Completed", "Failed", "Abnormal"})
    assert done["status"] == "Completed", done
    return int(done["id"])


def predict(client: httpx.Client, training_id: int, data: bytes, *,
            filename: str = "image.jpg", checkpoint: str | None = None) -> httpx.Response:
    """POST an image to the training's predict endpoint."""
    form: dict[str, Any] = {"checkpoint": checkpoint} if checkpoint else {}
    return client.post(f"/api/v1/trainings/{training_id}/predict", data=form,
                       files={"file": (filename, data, "application/octet-stream")})

# A predictor that tries to get out of its sandbox and answers with what it found: one label,
# the JSON report. __TARGETS__ is filled in by the test: the data dir, the loopback ports of
# the API, Redis and PostgreSQL, and the unix sockets of other predictors and Aim UIs.
PROBE_APP = '''
import glob, json, os, socket

TARGETS = __TARGETS__
REPORT = {}

def _try(fn):
    try:
        return fn()
    except Exception as exc:
        return "refused: " + type(exc).__name__

def _read(path):
    with open(path, "rb") as f:
        return "read %d bytes" % len(f.read(64))

def _connect_tcp(port):
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return "connected"

def _connect_unix(path):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        sock.connect(path)
        return "connected"

def _write(path):
    with open(path, "w") as f:
        f.write("probe was here")
    return "written"

def _processes():
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        cmd = _try(lambda: open("/proc/%s/cmdline" % pid, "rb").read().replace(b"\\0", b" ")
                   .decode(errors="replace"))
        env = _try(lambda: open("/proc/%s/environ" % pid, "rb").read().decode(errors="replace"))
        found[pid] = {"cmdline": cmd[:200], "secret_in_environ": "TRAINYARD_" in env}
    return found

def load(checkpoint_path):
    data = TARGETS["data_dir"]
    import resource
    REPORT["limits"] = {name: resource.getrlimit(getattr(resource, name))[0]
                        for name in ("RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_NOFILE")}
    REPORT["uid"] = os.getuid()
    REPORT["euid"] = os.geteuid()
    REPORT["env"] = {k: v for k, v in os.environ.items()
                     if k.startswith("TRAINYARD_") or any(w in k.upper() for w in
                                                          ("TOKEN", "SECRET", "REDIS", "DATABASE"))}
    REPORT["processes"] = _processes()
    REPORT["data_dir_list"] = _try(lambda: sorted(os.listdir(data)))
    REPORT["reads"] = {name: _try(lambda: _read(os.path.join(data, name)))
                       for name in ("trainyard.db", "session-secret")}
    REPORT["other_repos"] = _try(lambda: sorted(os.listdir(os.path.join(data, "repos"))))
    REPORT["runtime_area"] = _try(lambda: sorted(os.listdir(os.path.join(data, "run"))))
    REPORT["globbed_sockets"] = glob.glob(os.path.join(data, "run", "**", "*.sock"),
                                          recursive=True)
    REPORT["writes"] = {"data_dir": _try(lambda: _write(os.path.join(data, "probe.txt"))),
                        "checkpoint": _try(lambda: _write(checkpoint_path)),
                        "own_code": _try(lambda: _write(os.path.join(os.path.dirname(
                            os.path.abspath(__file__)), "probe.txt"))),
                        "tmp": _try(lambda: _write("/tmp/probe.txt")),
                        "home": _try(lambda: _write(os.path.join(os.path.expanduser("~"),
                                                                 "probe.txt")))}
    REPORT["tcp"] = {str(port): _try(lambda: _connect_tcp(port)) for port in TARGETS["ports"]}
    REPORT["unix"] = {path: _try(lambda: _connect_unix(path)) for path in TARGETS["sockets"]}
    REPORT["checkpoint"] = _try(lambda: _read(checkpoint_path))

def predict(image):
    return {json.dumps(REPORT): 1.0}
'''
