"""The README's walkthrough, pasted into bash as written, against a fresh `trainyard up`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from tests.live import ROOT, start_live

MARKER = "<!-- walkthrough: tests/test_walkthrough.py runs the next bash block -->"
README_URL = "http://127.0.0.1:8000"
# The walkthrough's knob for the quick run's size: ten steps of 64 images.
LIMIT = "640"

# About 3 minutes alone on two cores (a real ResNet50 epoch, evaluation and predictor).
pytestmark = [pytest.mark.shared_data, pytest.mark.slow, pytest.mark.timeout(900)]


def walkthrough_block() -> str:
    """The first ```bash block after the walkthrough marker of README.md."""
    text = (ROOT / "README.md").read_text()
    assert MARKER in text, "README.md lost its walkthrough marker"
    match = re.search(r"```bash\n(.*?)```", text[text.index(MARKER):], re.S)
    assert match, "no bash block after the walkthrough marker"
    return match.group(1)


def cifar_binary_archive(downloads: Path) -> Path:
    """`cifar-10-binary.tar.gz` as the official release lays it out, from the real images."""
    work = downloads / "build"
    subprocess.run([sys.executable, str(SHARED_DATA / "cifar10" / "to_cifar_bin.py"),
                    str(work / "cifar-10-batches-bin")], check=True, capture_output=True,
                   timeout=300)
    archive = downloads / "cifar-10-binary.tar.gz"
    # Level 1: the 180 MB of records would take long at the default level.
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(work / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    shutil.rmtree(work)
    return archive


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    if not (SHARED_DATA / "cifar10" / "cifar-10-images.tar.gz").is_file():
        pytest.skip(f"{SHARED_DATA} has no CIFAR-10 archive")
    home = tmp_path / "home"
    (home / "Downloads").mkdir(parents=True)
    cifar_binary_archive(home / "Downloads")
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(SHARED_DATA / "inference-examples" / "deer.jpg", checkout / "deer.jpg")
    live = start_live(checkout / ".data", workers=1, admin_token=None)
    try:
        block = walkthrough_block()
        # The admin's token in the environment would outrank alice's login.
        assert "TRAINYARD_TOKEN=" not in block
        # The one change: the server's address (a free port instead of 8000).
        script = block.replace(README_URL, live.url)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("TRAINYARD_") and k != "XDG_CONFIG_HOME"}
        env.update(HOME=str(home), COLUMNS="100", LIMIT=LIMIT, PYTHONPATH=str(ROOT),
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
        run = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=checkout,
                             env=env, capture_output=True, text=True, timeout=900)
        out = run.stdout
        assert run.returncode == 0, f"{out[-4000:]}\n{run.stderr[-4000:]}"
    finally:
        live.stop()
    assert re.search(r"^alice at http://127\.0\.0\.1:\d+ \(token from saved login", out, re.M)
    assert "Warning" not in run.stderr, run.stderr
    assert "dataset alice/cifar10 is ready" in out
    assert "training 1 (resnet50-quick) in alice/ResNet50" in out
    assert "640 train images/epoch" in out
    assert re.search(r"training finished, best test accuracy 0\.\d{4}", out), out[-3000:]
    assert (checkout / "run1" / "train" / "output" / "best.ckpt").is_file()
    assert re.search(r"report: http://127\.0\.0\.1:\d+/trainings/1/aim/\S*\?select=", out), out
    assert "deer.jpg  (checkpoint train/output/best.ckpt)" in out
    assert '"predictions":[' in out.replace(" ", "")
    assert "checkpoint as model alice/resnet50-v1" in out
