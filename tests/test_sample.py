"""The ResNet50 sample repository: training, Aim tracking and inference, on tiny datasets."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cifar_data import CLASSES, write_cifar_binary

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "resnet50"
TRAIN_DIR = SAMPLE / "train" / "train_dir"
SHARED_DATA = ROOT.parent / "shared" / "data"

# The two line formats the platform's standard evaluation parses (docs/sample.md).
FLOAT = r"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf)"
LOSS_LINE = re.compile(
    rf"^Epoch:\[\s*(\d+)/\s*(\d+)\], step:\[\s*(\d+)/\s*(\d+)\], "
    rf"loss:\[({FLOAT})/({FLOAT})\], time: ({FLOAT}) ms, lr: ({FLOAT})$")
ACCURACY_LINE = re.compile(
    rf"^Epoch: \[(\d+)/(\d+)\], Train Loss: \[({FLOAT})\], Accuracy: ({FLOAT})$")

pytestmark = pytest.mark.slow


def run_boot_file(boot_file: str, *args: str, timeout: float = 180) -> str:
    """Run a boot file as the platform does (cwd = code dir, --name=value); its stdout."""
    # No __pycache__ in the sample folder, which the platform copies into new repositories.
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, boot_file, *args], cwd=TRAIN_DIR, env=env,
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def release_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Full-size record files (as Cifar10Dataset requires), one folder below the input."""
    root = tmp_path_factory.mktemp("cifar")
    write_cifar_binary(root / "cifar-10-batches-bin", 10_000, 10_000, seed=1)
    return root


@pytest.fixture(scope="module")
def trained(release_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Output folder and log of a two-epoch run on 48 images (batch 8)."""
    out = tmp_path_factory.mktemp("output")
    log = run_boot_file("train.py", f"--data_url={release_data}", f"--output_url={out}",
                        "--epochs=2", "--batch_size=8", "--lr=0.01", "--train_limit=48",
                        "--test_limit=20", "--log_every=4",
                        f"--pretrain_url={release_data / 'absent.ckpt'}",
                        "--platform_extra=ignored")
    return out, log


def test_train_writes_checkpoints(trained: tuple[Path, str]) -> None:
    out, log = trained
    assert sorted(p.name for p in out.iterdir()) == [
        "best.ckpt", "resnet50-1.ckpt", "resnet50-2.ckpt"]
    assert (out / "best.ckpt").stat().st_size > 50_000_000
    assert "training from scratch" in log
    assert "ignoring unknown arguments: --platform_extra=ignored" in log


def test_train_log_lines_match_the_documented_patterns(trained: tuple[Path, str]) -> None:
    _, log = trained
    losses = [m.groups() for line in log.splitlines() if (m := LOSS_LINE.match(line))]
    accuracies = [m.groups() for line in log.splitlines() if (m := ACCURACY_LINE.match(line))]
    assert [(g[0], g[1], g[2], g[3]) for g in losses] == [
        ("1", "2", "4", "6"), ("1", "2", "6", "6"), ("2", "2", "4", "6"), ("2", "2", "6", "6")]
    assert all(float(g[6]) > 0 and 0 < float(g[7]) <= 0.01 for g in losses)
    assert [(g[0], g[1]) for g in accuracies] == [("1", "2"), ("2", "2")]
    assert all(0.0 <= float(g[3]) <= 1.0 for g in accuracies)


def test_pretrained_checkpoint_is_loaded(release_data: Path, trained: tuple[Path, str],
                                         tmp_path: Path) -> None:
    out, _ = trained
    log = run_boot_file("train.py", f"--data_url={release_data}", f"--output_url={tmp_path}",
                        "--epochs=1", "--batch_size=8", "--train_limit=8", "--test_limit=8",
                        f"--pretrain_url={out / 'best.ckpt'}")
    assert f"loaded pretrained checkpoint {out / 'best.ckpt'}" in log
    assert "training from scratch" not in log


def test_train_aim_tracks_metrics(tmp_path: Path) -> None:
    from aim import Repo
    from aim.sdk.index_manager import RepoIndexManager

    # Short files (a subset) take the sample's direct reader instead of Cifar10Dataset.
    data = write_cifar_binary(tmp_path / "data", 24, 16, seed=2)
    aim_dir = tmp_path / "db"
    log = run_boot_file("train_aim.py", f"--data_url={data}", f"--output_url={tmp_path / 'out'}",
                        f"--aim_repo={aim_dir}", "--epochs=1", "--batch_size=8", "--lr=0.01")
    assert "tracking into the Aim repo" in log
    assert (aim_dir / ".aim").is_dir()
    repo = Repo.from_path(str(aim_dir))
    hashes = repo.list_all_runs()
    assert len(hashes) == 1
    RepoIndexManager.get_index_manager(repo).index(hashes[0])  # what `aim up` does first
    run = repo.get_run(hashes[0])
    assert run is not None
    assert run["hparams"]["batch_size"] == 8
    series = {(m.name, json.dumps(m.context.to_dict(), sort_keys=True)): m
              for m in run.metrics()}
    step_losses = series[("loss", "{}")].values.values_list()
    assert len(step_losses) == 3 and all(v > 0 for v in step_losses)
    for subset in ("train", "test"):
        context = json.dumps({"subset": subset})
        assert len(series[("loss", context)].values.values_list()) == 1
        assert 0.0 <= series[("accuracy", context)].values.values_list()[0] <= 1.0


@pytest.fixture(scope="module")
def app(trained: tuple[Path, str]):  # type: ignore[no-untyped-def]
    """The sample's inference module with the trained checkpoint loaded."""
    # Loaded by path: the name `app` is Trainyard's own package in this process.
    spec = importlib.util.spec_from_file_location("sample_inference_app",
                                                  SAMPLE / "inference" / "app.py")
    assert spec is not None and spec.loader is not None
    inference_app = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = inference_app  # MindSpore's graph compiler looks modules up by name
    sys.dont_write_bytecode, keep = True, sys.dont_write_bytecode
    try:
        spec.loader.exec_module(inference_app)
    finally:
        sys.dont_write_bytecode = keep
    inference_app.load(trained[0] / "best.ckpt")
    return inference_app


def test_predict_returns_a_distribution_for_any_image(app) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    images = [Image.new("RGBA", (97, 41), (200, 30, 30, 128)), Image.new("L", (5, 300), 77),
              Image.new("RGB", (32, 32), (0, 90, 200)), Image.new("P", (64, 64))]
    for image in images:
        scores = app.predict(image)
        assert list(scores) == list(CLASSES)
        assert all(0.0 <= p <= 1.0 for p in scores.values())
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-4)
    batch = app.predict_batch(images)
    assert len(batch) == 4
    assert batch[2] == pytest.approx(app.predict(images[2]), abs=1e-5)


@pytest.mark.shared_data
def test_predict_real_photos(app) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    examples = SHARED_DATA / "inference-examples"
    if not examples.is_dir():
        pytest.skip(f"{examples} is absent (real photos live in ../shared/data)")
    for path in sorted(examples.glob("*.jpg")):
        with Image.open(path) as image:
            scores = app.predict(image)
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-4), path.name


def test_configs_point_at_the_boot_files() -> None:
    for name, boot in (("config.json", "train.py"), ("config_aim.json", "train_aim.py"),
                       ("config_quick.json", "train.py")):
        config = json.loads((SAMPLE / "train" / name).read_text())
        assert config["boot_file"] == boot
        assert (SAMPLE / config["code_dir"] / boot).is_file()
    aim_outputs = json.loads((SAMPLE / "train" / "config_aim.json").read_text())["outputs"]
    assert {"output_dir": "db/", "name": "aim_repo"} in aim_outputs
