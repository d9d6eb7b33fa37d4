"""Inference benchmark: REST latency and throughput against the raw MindSpore forward pass.

    .venv/bin/python bench/inference.py [--requests 60] [--clients 8] [--sandbox auto|on|off]

It starts `trainyard up` on a scratch data dir (tests/live.py), forks the ResNet50 sample,
writes a checkpoint of the sample's network through a short training on the platform (a boot
file that saves the freshly initialised ResNet50: the same computation as a trained one, no
dataset needed), then measures, with one photo from ../shared/data/inference-examples (or
frontend/static/examples):

1. raw: in one process, the sample's `inference/app.py` loaded with that checkpoint, timing
   `predict(image)` and the bare network call `net(x)` on a 1x3x32x32 tensor (before and
   after the REST runs; the faster is the baseline);
2. REST single-image latency, one client after another (p50/p99, keep-alive connection),
   once the predictor has compiled all its batch shapes;
3. REST throughput with N concurrent clients against the sequential throughput.

It prints the numbers and the ratios the goals are stated in; `--json` prints them as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARED_EXAMPLE = ROOT.parent / "shared" / "data" / "inference-examples" / "cat.jpg"
BUNDLED_EXAMPLE = ROOT / "frontend" / "static" / "examples" / "cat.jpg"

SAVE_CHECKPOINT = '''
"""Save the sample's freshly initialised ResNet50 as best.ckpt (benchmark input)."""
import argparse, pathlib
import mindspore as ms
from resnet import resnet50
parser = argparse.ArgumentParser()
parser.add_argument("--output_url", required=True)
args, _ = parser.parse_known_args()
ms.save_checkpoint(resnet50(10), str(pathlib.Path(args.output_url) / "best.ckpt"))
print("saved best.ckpt", flush=True)
'''


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """p50, p99 and mean of durations, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {"p50_ms": round(percentile(ms, 50), 2), "p99_ms": round(percentile(ms, 99), 2),
            "mean_ms": round(statistics.fmean(ms), 2)}


# --- raw: runs in a child process with the runtime's interpreter and environment -----------

def raw_main(app_path: Path, checkpoint: Path, image_path: Path, repeats: int) -> None:
    """Time app.predict(image) and the bare network forward in this process; print JSON."""
    import numpy as np
    from PIL import Image

    from app.inference.predictor import load_user_app

    module = load_user_app(app_path)
    started = time.perf_counter()
    module.load(str(checkpoint))
    image = Image.open(image_path).convert("RGB")
    module.predict(image)
    load_s = time.perf_counter() - started
    predict_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        module.predict(image)
        predict_times.append(time.perf_counter() - t0)
    out: dict[str, Any] = {"load_s": round(load_s, 2), "predict": summary_ms(predict_times)}
    net = _find_network(module)
    if net is not None:
        import mindspore as ms

        x = ms.Tensor(np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32))
        net(x).asnumpy()
        forward_times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(x).asnumpy()
            forward_times.append(time.perf_counter() - t0)
        out["forward"] = summary_ms(forward_times)
        out["network"] = type(net).__name__
    print("RAW " + json.dumps(out), flush=True)


def _find_network(module: Any) -> Any:
    """The loaded network: the largest mindspore Cell reachable from the app's globals."""
    import mindspore.nn as nn

    found = []
    for value in vars(module).values():
        candidates = [value] + (list(vars(value).values()) if hasattr(value, "__dict__")
                                and not isinstance(value, type) else [])
        found += [c for c in candidates if isinstance(c, nn.Cell)]
    if not found:
        return None
    return max(found, key=lambda c: sum(p.size for p in c.get_parameters()))


def measure_raw(app_path: Path, checkpoint: Path, image: Path, repeats: int) -> dict[str, Any]:
    """Run `raw_main` in a child with the same interpreter and environment as a predictor."""
    from app.procs.environ import build_env
    from app.trainings.runtimes import MINDSPORE_CPU

    with tempfile.TemporaryDirectory() as home:
        env = build_env({}, home=Path(home), runtime_is_mindspore=True,
                        python=MINDSPORE_CPU.python)
        env["PYTHONPATH"] = str(ROOT)
        Path(env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        done = subprocess.run([MINDSPORE_CPU.python, __file__, "--raw", str(app_path),
                               str(checkpoint), str(image), str(repeats)],
                              cwd=app_path.parent, env=env, capture_output=True, text=True,
                              timeout=900)
    for line in done.stdout.splitlines():
        if line.startswith("RAW "):
            result: dict[str, Any] = json.loads(line[4:])
            return result
    raise RuntimeError(f"the raw measurement failed:\n{done.stdout[-3000:]}\n"
                       f"{done.stderr[-3000:]}")


# --- through the platform ----------------------------------------------------------------

def prepare_training(live: Any, app: Path | None) -> tuple[Any, int, str]:
    """A user, a fork of the sample with a checkpoint-saving boot file, its Completed training."""
    _, client = live.new_user("bench")
    r = client.post("/api/v1/repos", json={"name": "resnet50-bench", "template": "resnet50"})
    r.raise_for_status()
    repo = f"{r.json()['owner']}/resnet50-bench"
    if app is not None:
        client.put(f"/api/v1/repos/{repo}/files/inference/app.py",
                   content=app.read_bytes()).raise_for_status()
    client.put(f"/api/v1/repos/{repo}/files/train/train_dir/bench_checkpoint.py",
               content=SAVE_CHECKPOINT.encode()).raise_for_status()
    cfg = {"job_name": "bench-inference", "code_dir": "train/train_dir/",
           "boot_file": "bench_checkpoint.py",
           "outputs": [{"output_dir": "train/output/", "name": "output_url"}]}
    r = client.post(f"/api/v1/repos/{repo}/trainings", json=cfg)
    r.raise_for_status()
    done = live.wait_status(client, r.json()["id"], {"Completed", "Failed", "Abnormal"},
                            timeout=600)
    if done["status"] != "Completed":
        log = client.get(f"/api/v1/trainings/{done['id']}/log").text
        raise RuntimeError(f"the checkpoint training ended {done['status']}:\n{log[-3000:]}")
    return client, int(done["id"]), repo


def post_image(client: Any, training_id: int, data: bytes) -> dict[str, Any]:
    """One prediction through the REST API."""
    r = client.post(f"/api/v1/trainings/{training_id}/predict",
                    files={"file": ("cat.jpg", data, "image/jpeg")})
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


def measure_api(live: Any, token_client: Any, training_id: int, data: bytes, *,
                requests: int, clients: int) -> dict[str, Any]:
    """Cold start, sequential latency and throughput, then N concurrent clients."""
    t0 = time.perf_counter()
    first = post_image(token_client, training_id, data)
    cold_s = time.perf_counter() - t0
    # The predictor compiles its other batch shapes while idle: measure once that is done.
    while not all(p["warm"] for p in token_client.get(
            f"/api/v1/trainings/{training_id}/inference").json()["predictors"]):
        if time.perf_counter() - t0 > 300:
            raise RuntimeError("the predictor did not finish compiling its batch shapes")
        time.sleep(0.2)
    warm_s = time.perf_counter() - t0
    for _ in range(5):
        post_image(token_client, training_id, data)
    seq_times = []
    server_ms = []
    forward_ms = []
    began = time.perf_counter()
    for _ in range(requests):
        t0 = time.perf_counter()
        body = post_image(token_client, training_id, data)
        seq_times.append(time.perf_counter() - t0)
        server_ms.append(body["timing"]["total_ms"])
        forward_ms.append(body["timing"]["forward_ms"])
    seq_rps = requests / (time.perf_counter() - began)

    per_client = max(1, requests // clients)
    batches: list[int] = []
    lock = threading.Lock()
    headers = dict(token_client.headers)

    def run_client() -> None:
        with live.client(None) as c:
            c.headers.update(headers)
            post_image(c, training_id, data)  # open the connection before the clock starts
            barrier.wait()
            for _ in range(per_client):
                body = post_image(c, training_id, data)
                with lock:
                    batches.append(body["timing"]["batch_size"])

    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=run_client) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    conc_rps = clients * per_client / (time.perf_counter() - began)
    return {"cold_start_s": round(cold_s, 2), "all_batch_shapes_compiled_s": round(warm_s, 2),
            "first_request_timing": first["timing"],
            "sequential": {**summary_ms(seq_times), "rps": round(seq_rps, 2),
                           "server_p50_ms": round(percentile(server_ms, 50), 2),
                           "predictor_forward_p50_ms": round(percentile(forward_ms, 50), 2)},
            "concurrent": {"clients": clients, "rps": round(conc_rps, 2),
                           "mean_batch": round(statistics.fmean(batches), 2),
                           "max_batch": max(batches)}}


def main() -> None:
    """Run the whole benchmark and print the results."""
    parser = argparse.ArgumentParser(description="Trainyard inference benchmark")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--app", type=Path, help="benchmark this inference/app.py instead of "
                        "the sample's")
    parser.add_argument("--sandbox", choices=("auto", "on", "off"), default="auto",
                        help="TRAINYARD_SANDBOX of the platform measured")
    if len(sys.argv) > 1 and sys.argv[1] == "--raw":
        raw_main(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
        return
    args = parser.parse_args()
    from tests.live import start_live

    image = SHARED_EXAMPLE if SHARED_EXAMPLE.is_file() else BUNDLED_EXAMPLE
    data = image.read_bytes()
    with tempfile.TemporaryDirectory(prefix="trainyard-bench-") as scratch:
        live = start_live(Path(scratch) / "data", workers=1,
                          extra_env={"TRAINYARD_SANDBOX": args.sandbox})
        try:
            client, tid, _repo = prepare_training(live, args.app)
            workspace = live.data_dir / "trainings" / str(tid) / "workspace"
            app_py = workspace / "inference" / "app.py"
            checkpoint = workspace / "train" / "output" / "best.ckpt"
            # Raw before and after the API runs, the faster one kept: other load on the
            # machine then inflates the baseline less.
            raws = [measure_raw(app_py, checkpoint, image, args.requests)]
            api = measure_api(live, client, tid, data, requests=args.requests,
                              clients=args.clients)
            raws.append(measure_raw(app_py, checkpoint, image, args.requests))
        finally:
            live.stop()
    raw = min(raws, key=lambda r: r.get("forward", r["predict"])["p50_ms"])
    base = raw.get("forward", raw["predict"])["p50_ms"]
    seq = api["sequential"]
    ratios = {
        "api_p50_over_raw_forward_p50": round(seq["p50_ms"] / base, 2),
        "api_p50_limit_ms (1.5x raw forward + 10 ms)": round(1.5 * base + 10, 2),
        "concurrent_over_sequential_throughput": round(api["concurrent"]["rps"] / seq["rps"], 2),
    }
    results = {"image": f"{image.name} ({len(data)} bytes)", "raw": raws, "api": api,
               "ratios": ratios}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"image: {results['image']}")
    print(f"raw (one process): app.predict p50 {raw['predict']['p50_ms']} ms, "
          f"p99 {raw['predict']['p99_ms']} ms"
          + (f"; bare forward p50 {raw['forward']['p50_ms']} ms, p99 "
             f"{raw['forward']['p99_ms']} ms" if "forward" in raw else ""))
    print(f"REST cold start (first request, model load + compile): {api['cold_start_s']} s; "
          f"every batch shape compiled after {api['all_batch_shapes_compiled_s']} s")
    print(f"REST sequential: p50 {seq['p50_ms']} ms, p99 {seq['p99_ms']} ms, "
          f"{seq['rps']} img/s (in the API p50 {seq['server_p50_ms']} ms, of which the "
          f"predictor's model call p50 {seq['predictor_forward_p50_ms']} ms)")
    conc = api["concurrent"]
    print(f"REST {conc['clients']} clients: {conc['rps']} img/s, mean batch "
          f"{conc['mean_batch']}, max batch {conc['max_batch']}")
    for name, value in ratios.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
