"""Latency of the job path: submit -> Running, and a printed log line -> SSE client.

    .venv/bin/python bench/latency.py [--runs 20] [--load 20]

Starts its own `trainyard up` (SQLite, embedded Redis, a worker) in a temporary folder and
measures, on an idle instance and with `--load` trainings queued on as many repos:
  * submit -> Running: from sending POST .../trainings to the training's `started_at`;
  * line -> SSE: from the boot file's `print` (it prints its own clock) to the SSE client
    reading the line.
In the same run it measures the baseline the original service uses for logs: a client that
polls the log every 5 s and downloads it whole (Xihe's detail page), and prints the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.live import Live, start_live
from tests.repo_files import config, create_repo, submit

FINISHED = {"Completed", "Failed", "Terminated", "Timeout", "Abnormal"}
TICKER = [{"name": "ticks", "value": "15"}, {"name": "every", "value": "0.1"}]


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def summary(name: str, values: list[float]) -> dict[str, float]:
    """Print and return p50/p99 in milliseconds."""
    p50, p99 = pct(values, 50) * 1000, pct(values, 99) * 1000
    print(f"  {name:<34} n={len(values):<4} p50={p50:8.1f} ms  p99={p99:8.1f} ms  "
          f"mean={statistics.fmean(values) * 1000:8.1f} ms")
    return {"p50": p50, "p99": p99}


def follow_sse(client: httpx.Client, tid: int, out: list[float]) -> None:
    """Read the training's SSE stream; record now - printed time for every tick line."""
    with client.stream("GET", f"/api/v1/trainings/{tid}/log/stream") as resp:
        event = ""
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "log":
                now = time.time()
                for text in line[5:].strip().splitlines():
                    if text.startswith("tick "):
                        out.append(now - float(text.split()[2]))
            elif line.startswith("data:") and event == "end":
                return


def poll_like_xihe(client: httpx.Client, tid: int, out: list[float], every: float) -> None:
    """Xihe's detail page: every `every` s fetch the status and download the whole log."""
    seen = 0
    while True:
        status = client.get(f"/api/v1/trainings/{tid}").json()["status"]
        text = client.get(f"/api/v1/trainings/{tid}/log").text
        now = time.time()
        lines = [ln for ln in text.splitlines() if ln.startswith("tick ")]
        out.extend(now - float(ln.split()[2]) for ln in lines[seen:])
        seen = len(lines)
        if status in FINISHED:
            return
        time.sleep(every)


def submit_to_running(live: Live, client: httpx.Client, repo: str, name: str,
                      sse: list[float], stream: bool = True) -> tuple[int, float, threading.Thread]:
    """Submit a ticker training; returns its id, the POST's send time and the SSE thread."""
    sent = time.time()
    r = submit(client, repo, config(name, boot_file="ticker.py", hypeparameters=TICKER))
    r.raise_for_status()
    tid = int(r.json()["id"])
    thread = threading.Thread(target=follow_sse, args=(client, tid, sse), daemon=True)
    if stream:
        thread.start()
    return tid, sent, thread


def started_after(client: httpx.Client, tid: int, sent: float) -> float:
    body = client.get(f"/api/v1/trainings/{tid}").json()
    return datetime.fromisoformat(body["started_at"]).timestamp() - sent


def spin_rate(client: httpx.Client, repo: str, name: str, viewers: int) -> float:
    """Loop iterations per second of a CPU-bound boot file while `viewers` follow its log."""
    r = submit(client, repo, config(name, boot_file="spin.py"))
    r.raise_for_status()
    tid = int(r.json()["id"])
    threads = [threading.Thread(target=follow_sse, args=(client, tid, []), daemon=True)
               for _ in range(viewers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    body = client.get(f"/api/v1/trainings/{tid}").json()
    while body["status"] not in FINISHED:
        time.sleep(0.2)
        body = client.get(f"/api/v1/trainings/{tid}").json()
    log = client.get(f"/api/v1/trainings/{tid}/log").text
    client.delete(f"/api/v1/trainings/{tid}")
    return float(log.split("RATE ", 1)[1].split()[0])


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="trainyard-bench-") as tmp:
        live = start_live(Path(tmp) / "data", workers=args.workers)
        try:
            return measure(live, args)
        finally:
            live.stop()


def measure(live: Live, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    _, client = live.new_user("bench")
    repos = [create_repo(client) for _ in range(max(args.load, 1))]

    print(f"idle instance: {args.runs} trainings one after another")
    running, sse = [], []
    for i in range(args.runs):
        tid, sent, thread = submit_to_running(live, client, repos[0], f"idle-{i}", sse)
        thread.join(60)
        running.append(started_after(client, tid, sent))
        client.delete(f"/api/v1/trainings/{tid}")
    results["idle_submit_running"] = summary("submit -> Running", running)
    results["idle_line_sse"] = summary("printed line -> SSE client", sse)

    print(f"loaded instance: {args.load} trainings queued at once on {args.load} repos "
          f"({args.workers} worker slots)")
    running, sse, threads = [], [], []
    submitted = []
    for i, repo in enumerate(repos[:args.load]):
        tid, sent, thread = submit_to_running(live, client, repo, f"load-{i}", sse)
        submitted.append((tid, sent))
        threads.append(thread)
    for thread in threads:
        thread.join(300)
    running = [started_after(client, tid, sent) for tid, sent in submitted]
    results["load_submit_running"] = summary("submit -> Running (incl. queue wait)", running)
    results["load_line_sse"] = summary(f"printed line -> SSE ({args.load} streams)", sse)
    for tid, _ in submitted:
        client.delete(f"/api/v1/trainings/{tid}")

    print(f"viewers: a CPU-bound training with 0 and {args.viewers} SSE viewers")
    rates = {}
    for viewers in (0, args.viewers):
        rates[viewers] = spin_rate(client, repos[0], f"spin-{viewers}", viewers)
        print(f"  {viewers:>3} viewers: {rates[viewers]:,.0f} loop iterations/s in the training")
    results["viewers_slowdown"] = rates[args.viewers] / rates[0]
    print(f"  ratio with {args.viewers} viewers: {results['viewers_slowdown']:.3f}x "
          "the unwatched rate")

    print("baseline: Xihe's detail page (poll every 5 s, download the whole log)")
    polled: list[float] = []
    tid, _sent, _thread = submit_to_running(live, client, repos[0], "xihe-poll", [],
                                            stream=False)
    poll_like_xihe(client, tid, polled, every=5.0)
    results["xihe_line_poll"] = summary("printed line -> polling client", polled)
    base = results["xihe_line_poll"]["p50"]
    print("ratios (lower is better):")
    for key in ("idle_line_sse", "load_line_sse"):
        print(f"  {key:<22} p50 {results[key]['p50'] / base:6.3f}x the polling baseline")
    goals = [("idle_submit_running", "p50", 1000.0), ("idle_line_sse", "p50", 250.0),
             ("idle_line_sse", "p99", 1000.0)]
    for key, stat, goal in goals:
        value = results[key][stat]
        print(f"  goal {key} {stat} < {goal:.0f} ms: {value:.1f} ms "
              f"({'met' if value < goal else 'MISSED'})")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--load", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--viewers", type=int, default=50)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
