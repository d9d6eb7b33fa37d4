"""Click -> report: how long from "Start evaluation" to Aim's UI answering through Trainyard.

    .venv/bin/python bench/evaluation.py [--runs 5] [--epochs 30] [--sandbox auto|on|off]

Starts its own `trainyard up` in a temporary folder, runs one training that tracks loss and
accuracy into an Aim repository and prints MindSpore LossMonitor-style lines (`--epochs` x 39
steps, like a CIFAR-10 epoch of 390 steps logged every 10), then measures, `--runs` times each:
  * custom, standard: POST .../evaluation -> the report page (Aim's index, rewritten for offline
    use) answering through the proxy at /trainings/{id}/aim/, and -> Aim's API answering there
    with the runs; a standard report is rebuilt from the log every time (first-click cost);
  * warm: the training page was opened a few seconds before the click (it warms a spare Aim
    process); cold: no spare process exists when the POST arrives;
  * baseline: plain `aim up --repo DIR --base-path ...` started directly on the same Aim
    repository, until its index and its API answer.
Prints medians (and min/max) in seconds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.live import Live, free_port, start_live  # noqa: E402
from tests.repo_files import config, create_repo, submit  # noqa: E402

AIM = str(ROOT / ".venv" / "bin" / "aim")
TRAIN = """
import argparse, math
from aim import Run
p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=30)
a, _ = p.parse_known_args()
run = Run(repo="db", experiment="bench", system_tracking_interval=None,
          capture_terminal_logs=False)
run["hparams"] = {"batch_size": 128, "learning_rate": 0.001, "epochs": a.epochs}
for e in range(1, a.epochs + 1):
    for s in range(10, 391, 10):
        step = (e - 1) * 390 + s
        loss = 2.3 * math.exp(-step / 4000) + 0.1
        lr = 0.001 * (1 + math.cos(math.pi * step / (a.epochs * 390))) / 2
        run.track(loss, name="loss", step=step, epoch=e, context={"subset": "train"})
        print(f"Epoch:[{e:3d}/{a.epochs:3d}], step:[{s:5d}/  390], loss:[{loss:.3f}/"
              f"{loss:.3f}], time: 812.345 ms, lr: {lr:.5f}", flush=True)
    acc = 1 - math.exp(-e / 10)
    run.track(acc, name="accuracy", step=e, epoch=e, context={"subset": "test"})
    print(f"Epoch: [{e}/{a.epochs}], Train Loss: [{loss:.3f}], Accuracy: {acc:.4f}", flush=True)
run.close()
"""
SPARE_MARK = "app.evaluations.aim_server"


def kill_spares(live: Live) -> None:
    """Stop warm spare Aim processes (those not listening yet) so the next start is cold."""
    for proc in psutil.Process(live.proc.pid).children(recursive=True):
        try:
            if SPARE_MARK in " ".join(proc.cmdline()) and not proc.net_connections("inet"):
                proc.kill()
                proc.wait(5)
        except psutil.Error:
            continue


def wait_ok(client: httpx.Client, url: str, *, html: bool = False, timeout: float = 120) -> None:
    """GET `url` until it answers 200."""
    headers = {"Accept": "text/html"} if html else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get(url, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def click_to_report(live: Live, client: httpx.Client, tid: int, body: dict[str, str], *,
                    warm: bool) -> tuple[float, float]:
    """Seconds from the POST to the proxied index, and to the proxied Aim API, answering."""
    api = f"/api/v1/trainings/{tid}/evaluation"
    client.delete(api)
    if warm:
        client.get(api)  # what opening the training page does
        time.sleep(6)
    else:
        kill_spares(live)
    started = time.monotonic()
    r = client.post(api, json=body)
    assert r.status_code == 202, r.text
    wait_ok(client, f"/trainings/{tid}/aim/", html=True)
    page = time.monotonic() - started
    wait_ok(client, f"/trainings/{tid}/aim/api/runs/search/run/?q=")
    return page, time.monotonic() - started


def plain_aim_up(folder: Path) -> tuple[float, float]:
    """Seconds until a directly started `aim up` answers its index, and its API."""
    port = free_port()
    base = f"http://127.0.0.1:{port}/bench/aim"
    client = httpx.Client(timeout=30)
    started = time.monotonic()
    proc = subprocess.Popen([AIM, "up", "--repo", str(folder), "--host", "127.0.0.1",
                             "--port", str(port), "--base-path", "/bench/aim", "-y"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_ok(client, f"{base}/", html=True)
        page = time.monotonic() - started
        wait_ok(client, f"{base}/api/runs/search/run/?q=")
        return page, time.monotonic() - started
    finally:
        leader = psutil.Process(proc.pid)
        for member in [*leader.children(recursive=True), leader]:
            try:
                member.kill()
            except psutil.Error:
                pass
        proc.wait()


def report(name: str, values: list[tuple[float, float]]) -> None:
    """Print the medians of (page, api) times."""
    pages, apis = [v[0] for v in values], [v[1] for v in values]
    print(f"  {name:<30} page {statistics.median(pages):5.2f} s "
          f"({min(pages):.2f}-{max(pages):.2f})   api {statistics.median(apis):5.2f} s "
          f"({min(apis):.2f}-{max(apis):.2f})   n={len(values)}")


def main() -> None:
    """Run the benchmark and print the results."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--sandbox", choices=("auto", "on", "off"), default="auto",
                        help="TRAINYARD_SANDBOX of the platform measured")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trainyard-bench-") as tmp:
        live = start_live(Path(tmp) / "data", workers=1,
                          extra_env={"TRAINYARD_SANDBOX": args.sandbox})
        try:
            _, client = live.new_user("bench")
            client.timeout = httpx.Timeout(120)
            repo = create_repo(client, {"README.md": "bench", "code/train.py": TRAIN})
            r = submit(client, repo, config("bench-run", boot_file="train.py", hypeparameters=[
                {"name": "epochs", "value": str(args.epochs)}]))
            tid = r.json()["id"]
            done = live.wait_status(client, tid, {"Completed", "Failed"}, timeout=600)
            assert done["status"] == "Completed", done
            lines = client.get(f"/api/v1/trainings/{tid}/log").text.count("\n")
            print(f"training {tid}: {args.epochs} epochs, {lines} log lines")
            custom = {"type": "custom", "aim_path": "./db/"}
            standard = {"type": "standard"}
            results: dict[str, list[tuple[float, float]]] = {}
            for _ in range(args.runs):
                for name, body, warm in (("custom, warm", custom, True),
                                         ("custom, cold", custom, False),
                                         ("standard, warm", standard, True),
                                         ("standard, cold", standard, False)):
                    results.setdefault(name, []).append(
                        click_to_report(live, client, tid, body, warm=warm))
                client.delete(f"/api/v1/trainings/{tid}/evaluation")
                folder = live.data_dir / "trainings" / str(tid) / "workspace" / "code" / "db"
                results.setdefault("baseline: plain aim up", []).append(plain_aim_up(folder))
            print("POST -> proxied report page / proxied Aim API answering (median, min-max):")
            for name, values in results.items():
                report(name, values)
        finally:
            live.stop()


if __name__ == "__main__":
    main()
