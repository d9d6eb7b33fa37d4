"""Convergence: detecting a lost worker, re-sending a lost message, terminate latency.

    .venv/bin/python bench/convergence.py [--profile default|fast] [--runs 20] [--pg URL]

Starts the production shape in a temporary folder (tests/cluster.py: its own redis-server,
the API under uvicorn, `trainyard worker` processes; SQLite unless --pg) and measures:
  * lost worker: SIGKILL of a worker's whole tree while it runs a training -> the training's
    `finished_at` (Abnormal, written by the reconciler);
  * lost message: Redis restarted empty with a training queued -> its message is back in the
    queue (the reconciler's re-send);
  * terminate: POST .../terminate -> the training's `finished_at` (Terminated), p50/p99, over
    Redis pub/sub and, for comparison, over the old path (status polled every 0.5 s).
`--profile default` keeps the shipped intervals (heartbeat 5 s, lost after 30 s, reconcile
every 5 s, re-send after 30 s); `fast` uses the test suite's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import FAST, Cluster
from tests.live import ADMIN_TOKEN
from tests.repo_files import BOOT_FILES, config, create_repo, submit

# Prints when SIGTERM reaches it: the moment terminate takes effect in the training.
TRAP = """
import signal, sys, time
def stop(signum, frame):
    print(f"SIGTERM {time.time():.6f}", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
while True:
    signal.pause()
"""


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def wait_for(client: httpx.Client, tid: int, statuses: set[str],
             timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/api/v1/trainings/{tid}").json()
        if body["status"] in statuses:
            return body
        time.sleep(0.05)
    raise RuntimeError(f"training {tid} never reached {statuses}")


def finished_after(body: dict[str, Any], t0: float) -> float:
    return datetime.fromisoformat(body["finished_at"]).timestamp() - t0


def user(cluster: Cluster) -> httpx.Client:
    r = cluster.client(ADMIN_TOKEN).post("/api/v1/users",
                                         json={"username": f"b{uuid.uuid4().hex[:8]}"})
    return cluster.client(r.json()["token"])


def lost_worker(cluster: Cluster, client: httpx.Client, runs: int) -> list[float]:
    """Seconds from SIGKILL of a worker's tree to its training ending Abnormal."""
    out = []
    for i in range(runs):
        name = f"lost{i}-{uuid.uuid4().hex[:4]}@bench"
        cluster.start_worker(name)
        tid = submit(client, create_repo(client), config(f"lost{i}x", boot_file="sleep.py")
                     ).json()["id"]
        wait_for(client, tid, {"Running"})
        t0 = time.time()
        cluster.kill_worker(name)
        out.append(finished_after(wait_for(client, tid, {"Abnormal"}), t0))
        print(f"  lost worker {i + 1}: {out[-1]:.1f} s", flush=True)
    return out


def lost_message(cluster: Cluster, client: httpx.Client, runs: int) -> list[float]:
    """Seconds from Redis restarting empty to the queued training's message being back."""
    out = []
    for i in range(runs):
        tid = submit(client, create_repo(client), config(f"queued{i}x")).json()["id"]
        while client.get(f"/api/v1/trainings/{tid}").json()["waiting"]["position"] is None:
            time.sleep(0.05)
        cluster.kill_redis()
        cluster.start_redis()
        t0 = time.monotonic()
        while client.get(f"/api/v1/trainings/{tid}").json()["waiting"]["position"] is None:
            time.sleep(0.05)
        out.append(time.monotonic() - t0)
        client.post(f"/api/v1/trainings/{tid}/terminate")
        print(f"  lost message {i + 1}: re-sent after {out[-1]:.1f} s", flush=True)
    return out


def _signalled_at(client: httpx.Client, tid: int) -> float:
    text = client.get(f"/api/v1/trainings/{tid}/log").text
    return float(text.split("SIGTERM ", 1)[1].split()[0])


def terminate_latency(cluster: Cluster, client: httpx.Client,
                      runs: int) -> tuple[list[float], list[float]]:
    """Seconds from POST terminate to SIGTERM in the training, and to its finished_at."""
    name = f"term-{uuid.uuid4().hex[:4]}@bench"
    cluster.start_worker(name)
    repo = create_repo(client, {**BOOT_FILES, "code/trap.py": TRAP})
    signalled, finished = [], []
    for i in range(runs):
        tid = submit(client, repo, config(f"term{i}x", boot_file="trap.py")).json()["id"]
        wait_for(client, tid, {"Running"})
        while "ready" not in client.get(f"/api/v1/trainings/{tid}/log").text:
            time.sleep(0.05)
        t0 = time.time()
        client.post(f"/api/v1/trainings/{tid}/terminate")
        finished.append(finished_after(wait_for(client, tid, {"Terminated"}), t0))
        signalled.append(_signalled_at(client, tid) - t0)
        client.delete(f"/api/v1/trainings/{tid}")  # the repo holds five trainings at most
    cluster.kill_worker(name)
    return signalled, finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=["default", "fast"], default="default")
    parser.add_argument("--runs", type=int, default=20, help="terminate samples per path")
    parser.add_argument("--lost-runs", type=int, default=3, help="lost worker/message samples")
    parser.add_argument("--pg", help="a PostgreSQL URL (empty database) instead of SQLite")
    args = parser.parse_args()
    settings = dict(FAST) if args.profile == "fast" else {}
    with tempfile.TemporaryDirectory(prefix="convergence-") as tmp:
        cluster = Cluster(Path(tmp) / "main", database_url=args.pg, settings=settings).start()
        try:
            client = user(cluster)
            print(f"profile {args.profile}: {settings or 'shipped defaults'}", flush=True)
            lost = lost_worker(cluster, client, args.lost_runs)
            resent = lost_message(cluster, client, args.lost_runs)
            pubsub, pubsub_done = terminate_latency(cluster, client, args.runs)
        finally:
            cluster.stop()
        # The old path: no pub/sub, the running job reads its status every 0.5 s.
        old = Cluster(Path(tmp) / "polling", database_url=None, settings={
            **settings, "TRAINYARD_CONTROL_PUBSUB": "false", "TRAINYARD_STOP_POLL_S": "0.5"})
        if args.pg:
            old.database_url = args.pg
        old.start()
        try:
            polling, polling_done = terminate_latency(old, user(old), args.runs)
        finally:
            old.stop()
    print(f"\nlost worker -> Abnormal:      max {max(lost):.1f} s, "
          f"mean {sum(lost) / len(lost):.1f} s (n={len(lost)})")
    print(f"lost message -> sent again:   max {max(resent):.1f} s, "
          f"mean {sum(resent) / len(resent):.1f} s (n={len(resent)})")
    for label, values in (("terminate -> SIGTERM, pub/sub", pubsub),
                          ("terminate -> SIGTERM, polling", polling),
                          ("terminate -> Terminated, pub/sub", pubsub_done),
                          ("terminate -> Terminated, polling", polling_done)):
        print(f"{label:<34} p50 {pct(values, 50) * 1000:6.0f} ms  "
              f"p99 {pct(values, 99) * 1000:6.0f} ms (n={len(values)})")
    print(f"SIGTERM, polling / pub/sub:         p50 x{pct(polling, 50) / pct(pubsub, 50):.1f}, "
          f"p99 x{pct(polling, 99) / pct(pubsub, 99):.1f}")


if __name__ == "__main__":
    main()
