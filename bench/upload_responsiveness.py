"""Is the API responsive while a large archive uploads and unpacks?

    .venv/bin/python bench/upload_responsiveness.py [--mb 190] [--files 4900] [--runs 2]

Starts its own `trainyard up` (SQLite, embedded Redis, a worker) in a temporary folder, builds a
.tar.gz of `--files` files of random (incompressible) bytes totalling `--mb` MB, and uploads it
as a new repository (POST /api/v1/repos, multipart) while another client polls
GET /api/v1/health every 20 ms. Prints the health latencies seen during the upload (from the
first byte sent to the 201) and, for comparison, on the idle server.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.live import start_live, unique

POLL_EVERY_S = 0.02


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def build_archive(path: Path, *, total_mb: int, files: int) -> int:
    """A .tar.gz of `files` random files under one folder; returns its size in bytes."""
    each = total_mb * 1024 * 1024 // files
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for i in range(files):
            data = os.urandom(each)
            info = tarfile.TarInfo(f"project/data/{i // 100:03d}/file{i:05d}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.stat().st_size


def poll_health(url: str, stop: threading.Event, out: list[float]) -> None:
    """GET /api/v1/health in a loop, recording each latency in seconds."""
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            began = time.perf_counter()
            assert client.get("/api/v1/health").status_code == 200
            out.append(time.perf_counter() - began)
            time.sleep(POLL_EVERY_S)


def measure(url: str, token: str, archive: Path) -> tuple[list[float], float, int]:
    """Health latencies during one upload; also the upload's duration and status."""
    latencies: list[float] = []
    stop = threading.Event()
    poller = threading.Thread(target=poll_health, args=(url, stop, latencies))
    poller.start()
    began = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600,
                      headers={"Authorization": f"Bearer {token}"}) as client, \
            archive.open("rb") as blob:
        r = client.post("/api/v1/repos", data={"name": unique("big")},
                        files={"archive": ("repo.tar.gz", blob)})
    took = time.perf_counter() - began
    stop.set()
    poller.join()
    return latencies, took, r.status_code


def report(name: str, values: list[float]) -> None:
    """Print p50/p99/max in milliseconds."""
    print(f"  {name:<28} n={len(values):<5} p50={pct(values, 50) * 1000:7.1f} ms  "
          f"p99={pct(values, 99) * 1000:7.1f} ms  max={max(values) * 1000:7.1f} ms  "
          f"mean={statistics.fmean(values) * 1000:6.1f} ms")


def main() -> None:
    """Build the archive, start Trainyard, measure idle and during uploads."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=190)
    parser.add_argument("--files", type=int, default=4900)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trainyard-upload-bench-") as tmp:
        archive = Path(tmp) / "repo.tar.gz"
        size = build_archive(archive, total_mb=args.mb, files=args.files)
        print(f"archive: {size / 1e6:.1f} MB, {args.files} files")
        live = start_live(Path(tmp) / "data", workers=1)
        try:
            token = live.admin.post("/api/v1/users", json={"username": unique("bench")}
                                    ).json()["token"]
            idle: list[float] = []
            stop = threading.Event()
            timer = threading.Timer(5.0, stop.set)
            timer.start()
            poll_health(live.url, stop, idle)
            report("idle", idle)
            during: list[float] = []
            for run in range(args.runs):
                latencies, took, status = measure(live.url, token, archive)
                print(f"  upload {run + 1}: {status} in {took:.1f} s")
                during += latencies
            report("during upload + unpack", during)
        finally:
            live.stop()


if __name__ == "__main__":
    main()
