"""The predictor process: a training's `inference/app.py` served over a unix socket.

Run by the API (see `app.inference.manager`) with the runtime's interpreter as
``python predictor.py --app APP_PY --checkpoint CKPT --socket SOCK``. It imports `app.py`,
calls `load(checkpoint)`, warms the model up with one blank image, then answers HTTP/1.1 on
the unix socket:

- ``GET /health`` -> ``{"ready": true, "checkpoint": ..., "load_s": ...,
  "pending_batch_sizes": [batch shapes not compiled yet]}``
- ``POST /predict`` with headers ``X-Width``, ``X-Height`` and the raw RGB pixels as the body
  -> ``{"scores": {label: probability}, "batch_size": n, "forward_ms": ..., "queue_ms": ...}``

Concurrent requests are micro-batched: one thread runs the model; it takes every request
waiting and, when the previous batches showed concurrent clients, waits a little for more
(up to the padded size of the last batch; at most a fifth of the last model call and
`--gather-ms`) before calling `predict_batch`. Batches are padded (with copies of their last
image, whose results are dropped) to a power of two: a graph-mode network compiles once per
input shape, seconds each, so only log2(max_batch) + 1 shapes ever occur, and those are
compiled ahead while the predictor is idle. A failing batch is retried image by image so that
one bad input fails only its own request. The socket is created only once the
model answers, so its presence means ready. Only the standard library and Pillow are used here:
this file runs inside the user's environment.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import queue
import socketserver
import sys
import threading
import time
import traceback
from concurrent.futures import Future
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import ModuleType
from typing import Any

from PIL import Image

MAX_BODY = 64 * 1024 * 1024
TRACE_CHARS = 4000


@dataclass
class Job:
    """One image waiting for the model."""

    image: Image.Image
    future: Future[dict[str, Any]] = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


def batch_sizes(max_batch: int) -> list[int]:
    """The batch shapes the model is called with: powers of two up to `max_batch`, and it."""
    sizes = [1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch]
    return [*sizes, max_batch]


def load_user_app(path: Path) -> ModuleType:
    """Import `app.py` from its folder under a private name (its `__main__` block stays off)."""
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("trainyard_inference_app", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    for name in ("load", "predict"):
        if not callable(getattr(module, name, None)):
            raise RuntimeError(f"{path.name} must define a function {name}()")
    return module


def as_scores(raw: Any) -> dict[str, float]:
    """A prediction as {label: probability}, refusing anything else with a clear message."""
    if not isinstance(raw, dict) or not raw:
        raise TypeError(f"predict() must return a non-empty dict of label -> probability, "
                        f"got {type(raw).__name__}")
    scores: dict[str, float] = {}
    for label, value in raw.items():
        prob = float(value)
        if not math.isfinite(prob):
            raise ValueError(f"predict() returned a non-finite probability for {label!r}")
        scores[str(label)] = prob
    return scores


class Batcher:
    """Runs the user's model on one thread, batching the requests that wait together."""

    def __init__(self, module: ModuleType, *, max_batch: int, gather_s: float) -> None:
        self.module = module
        self.max_batch = max(1, max_batch)
        self.gather_s = gather_s
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.expected = 1  # the size of the last batch: how many clients seem to be waiting
        self.last_forward_s = 0.0
        self.batch_predict = getattr(module, "predict_batch", None)
        self.sizes = batch_sizes(self.max_batch) if callable(self.batch_predict) else [1]
        self.cold_sizes = [size for size in self.sizes if size > 1]

    def submit(self, image: Image.Image) -> Future[dict[str, Any]]:
        """Queue an image; the future resolves to its result or exception."""
        job = Job(image)
        self.jobs.put(job)
        return job.future

    def serve_forever(self) -> None:
        """Take batches off the queue until the process ends; compile batch shapes when idle."""
        while True:
            if self.cold_sizes and self.jobs.empty():
                self._compile(self.cold_sizes.pop(0))
                continue
            batch = self._gather()
            self.expected = len(batch)
            self._run(batch)

    def _compile(self, size: int) -> None:
        try:
            self.predict_many([Image.new("RGB", (32, 32))] * size)
        except Exception:  # a real batch of this size reports the error to its requests
            traceback.print_exc()

    def bucket(self, n: int) -> int:
        """The batch shape `n` images are padded to."""
        return next((size for size in self.sizes if size >= n), n)

    def _gather(self) -> list[Job]:
        batch = [self.jobs.get()]
        window = min(self.gather_s, self.last_forward_s / 5) if self.expected > 1 else 0.0
        deadline = time.perf_counter() + window
        # The padded shape costs the same whether full or not: worth waiting a little to fill.
        wanted = self.bucket(self.expected)
        while len(batch) < self.max_batch:
            try:
                batch.append(self.jobs.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.perf_counter()
            if len(batch) >= wanted or left <= 0:
                break
            try:
                batch.append(self.jobs.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def predict_many(self, images: list[Image.Image]) -> list[dict[str, float]]:
        """The model's answers for several images, in order."""
        if len(images) == 1 or not callable(self.batch_predict):
            return [as_scores(self.module.predict(img)) for img in images]
        results = list(self.batch_predict(images))
        if len(results) != len(images):
            raise ValueError(f"predict_batch() returned {len(results)} results for "
                             f"{len(images)} images")
        return [as_scores(r) for r in results]

    def _run(self, batch: list[Job]) -> None:
        start = time.perf_counter()
        images = [job.image for job in batch]
        size = self.bucket(len(images))
        if size in self.cold_sizes:
            self.cold_sizes.remove(size)
        try:
            results = self.predict_many(images + [images[-1]] * (size - len(images)))
        except Exception:
            if len(batch) > 1:
                for job in batch:
                    self._run([job])
                return
            batch[0].future.set_exception(RuntimeError(traceback.format_exc()[-TRACE_CHARS:]))
            return
        self.last_forward_s = time.perf_counter() - start
        forward_ms = self.last_forward_s * 1000
        for job, scores in zip(batch, results[:len(batch)], strict=True):
            job.future.set_result({"scores": scores, "batch_size": len(batch),
                                   "forward_ms": round(forward_ms, 3),
                                   "queue_ms": round((start - job.queued_at) * 1000, 3)})


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive over the unix socket."""

    protocol_version = "HTTP/1.1"
    server: PredictorServer

    def log_message(self, format: str, *args: Any) -> None:
        return None  # a line per request would only fill the log

    def address_string(self) -> str:
        return "local"

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            pending = list(self.server.batcher.cold_sizes)
            self._reply(200, {"ready": True, **self.server.info, "pending_batch_sizes": pending})
        else:
            self._reply(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        if self.path != "/predict":
            self._reply(404, {"error": f"no route {self.path}"})
            return
        try:
            width, height = int(self.headers["X-Width"]), int(self.headers["X-Height"])
            length = int(self.headers["Content-Length"])
            if not 0 < length <= MAX_BODY or length != width * height * 3:
                raise ValueError("the body must hold width * height RGB pixels")
            image = Image.frombytes("RGB", (width, height), self.rfile.read(length))
        except (TypeError, ValueError) as exc:
            self._reply(400, {"error": str(exc)})
            return
        try:
            result = self.server.batcher.submit(image).result()
        except Exception as exc:
            self._reply(500, {"error": str(exc)})
            return
        self._reply(200, result)


class PredictorServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A threaded HTTP server on a unix socket, holding the batcher."""

    daemon_threads = True

    def __init__(self, path: str, batcher: Batcher, info: dict[str, Any]) -> None:
        self.batcher = batcher
        self.info = info
        super().__init__(path, Handler)


def main(argv: list[str] | None = None) -> None:
    """Load the app and serve predictions until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--gather-ms", type=float, default=25.0)
    args = parser.parse_args(argv)
    # The script's own folder holds Trainyard modules that must not shadow the user's.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]
    started = time.perf_counter()
    print(f"[predictor] loading {args.app} with {args.checkpoint}", flush=True)
    module = load_user_app(args.app.resolve())
    module.load(str(args.checkpoint))
    batcher = Batcher(module, max_batch=args.max_batch, gather_s=args.gather_ms / 1000)
    as_scores(module.predict(Image.new("RGB", (32, 32))))  # compiles the graph before serving
    load_s = round(time.perf_counter() - started, 3)
    info = {"checkpoint": str(args.checkpoint), "app": str(args.app), "load_s": load_s,
            "pid": os.getpid(), "batch_sizes": batcher.sizes}
    print(f"[predictor] ready in {load_s} s: {json.dumps(info)}", flush=True)
    threading.Thread(target=batcher.serve_forever, name="model", daemon=True).start()
    tmp = f"{args.socket}.tmp"
    server = PredictorServer(tmp, batcher, info)
    os.replace(tmp, args.socket)  # appears only when it already accepts connections
    server.serve_forever()


if __name__ == "__main__":
    main()
