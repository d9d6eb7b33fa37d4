"""Predictor processes: started on demand, kept warm, stopped when idle or over the cap.

One predictor serves one (training, checkpoint) pair. It runs `predictor.py` with the
runtime's interpreter under the reaper shim (`app.procs.supervise`), so nothing it
starts outlives it and it dies with the API process (the shim asks for SIGHUP when its parent
goes; it is started from the event loop's thread, which lives as long as the process). The API
talks to it over HTTP on a unix socket that the predictor creates in its box,
`run/predictors/<token>/box/` in the data dir's runtime area (0700: only the platform's
uid, and the predictor itself, can reach it; see `app.procs.services`). When the sandbox is on
(`app.procs.sandbox.state()`) the predictor runs in it, seeing only the runtime, its code, its
checkpoint and its box, with an environment made from scratch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.errors import AppError
from app.procs import envs, services, supervise
from app.procs import sandbox as sandboxing
from app.procs.environ import build_env
from app.procs.logfiles import tail_lines
from app.procs.tree import kill_process_tree

log = logging.getLogger(__name__)

PREDICTOR_SCRIPT = Path(__file__).with_name("predictor.py")
START_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 120.0
STOP_GRACE_S = 3.0
LOG_TAIL_LINES = 25
SOCKET_NAME = "predictor.sock"


class PredictorFailed(AppError):
    """The training's inference code could not load or answer (its log tail says why)."""

    status = 502
    code = "predictor_failed"


class PredictorsBusy(AppError):
    status = 503
    code = "predictors_busy"


@dataclass(frozen=True)
class PredictorSpec:
    """How to start the predictor of one training and checkpoint."""

    training_id: int
    app_path: Path
    checkpoint: Path
    base_python: str
    home: Path
    log_path: Path
    envs_cache: Path
    runtime_dir: Path  # where its box (its socket's folder) is made; 0700, the platform's
    is_mindspore: bool = True
    max_batch: int = 8
    gather_ms: float = 25.0

    @property
    def requirements(self) -> Path:
        """The `pip-requirements.txt` beside `app.py` (used when present)."""
        return self.app_path.with_name(envs.REQUIREMENTS_FILE)

    @property
    def workspace(self) -> Path:
        """The training's workspace, which holds `inference/app.py` and the checkpoint."""
        return self.app_path.parent.parent

    @property
    def key(self) -> tuple[int, str]:
        """What identifies a predictor: the training and the checkpoint file."""
        return (self.training_id, str(self.checkpoint))


@dataclass
class Predictor:
    """A started predictor process and the client that talks to it."""

    spec: PredictorSpec
    proc: subprocess.Popen[bytes]
    folder: Path
    client: httpx.AsyncClient
    started_at: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    in_flight: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def socket(self) -> Path:
        """The unix socket it listens on."""
        return self.folder / services.BOX / SOCKET_NAME

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None


@dataclass(frozen=True)
class Prediction:
    """What a predictor answered for one image, plus whether this call had to start it."""

    scores: dict[str, float]
    batch_size: int
    forward_ms: float
    queue_ms: float
    cold_start_s: float | None


def resolve_python(spec: PredictorSpec, *, sandboxed: bool) -> str:
    """The interpreter for the predictor: the runtime's, or an env with app.py's requirements
    (installed in the sandbox when `sandboxed`: they are packages the user chose)."""
    if os.path.lexists(spec.requirements):
        # The platform reads this file: never through a link the training planted.
        try:
            services.check_plain_file(spec.requirements, inside=spec.workspace)
        except OSError as exc:
            raise envs.RequirementsError(f"refused: {exc}") from exc
    return envs.python_for_requirements(spec.requirements, base_python=spec.base_python,
                                        cache_dir=spec.envs_cache, log_path=spec.log_path,
                                        sandboxed=sandboxed)


def log_tail(spec: PredictorSpec) -> str:
    """The last lines the predictor printed."""
    return tail_lines(spec.log_path, LOG_TAIL_LINES)


class PredictorManager:
    """Starts, reuses and stops predictor processes (one manager per API process)."""

    def __init__(self, *, max_predictors: int, idle_s: float) -> None:
        self.max_predictors = max(1, max_predictors)
        self.idle_s = idle_s
        self.predictors: dict[tuple[int, str], Predictor] = {}
        self._locks: dict[tuple[int, str], asyncio.Lock] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._warming: dict[tuple[int, str], asyncio.Task[None]] = {}

    async def predict(self, spec: PredictorSpec, *, width: int, height: int,
                      rgb: bytes) -> Prediction:
        """Run one image through the spec's predictor, starting it when needed."""
        cold_start: float | None = None
        predictor = self.predictors.get(spec.key)
        if predictor is None or not predictor.alive() or not predictor.info:
            began = time.perf_counter()
            predictor = await self.ensure_started(spec)
            cold_start = round(time.perf_counter() - began, 3)
        predictor.in_flight += 1
        try:
            response = await predictor.client.post(
                "/predict", content=rgb, headers={"X-Width": str(width), "X-Height": str(height),
                                                  "Content-Type": "application/octet-stream"})
        except httpx.TransportError as exc:
            await self._forget(predictor)
            raise PredictorFailed(f"the predictor of training {spec.training_id} stopped while "
                                  f"predicting ({exc!r}); its log ends with:\n"
                                  f"{log_tail(spec)}") from exc
        finally:
            predictor.in_flight -= 1
            predictor.last_used = time.monotonic()
        body = response.json()
        if response.status_code != 200:
            raise PredictorFailed(f"inference/app.py of training {spec.training_id} failed on "
                                  f"this image:\n{body.get('error', response.text)}",
                                  code="prediction_failed")
        return Prediction(scores=body["scores"], batch_size=body["batch_size"],
                          forward_ms=body["forward_ms"], queue_ms=body["queue_ms"],
                          cold_start_s=cold_start)

    def warm_up(self, spec: PredictorSpec) -> str:
        """Start the predictor in the background unless it runs: `ready` or `starting`."""
        current = self.predictors.get(spec.key)
        if current is not None and current.alive() and current.info:
            current.last_used = time.monotonic()
            return "ready"
        if spec.key not in self._warming:
            task = asyncio.get_running_loop().create_task(self._warm(spec))
            self._warming[spec.key] = task
            task.add_done_callback(lambda _t: self._warming.pop(spec.key, None))
        return "starting"

    async def _warm(self, spec: PredictorSpec) -> None:
        try:
            await self.ensure_started(spec)
        except AppError as exc:  # the next prediction retries and reports it
            log.warning("warming up the predictor of training %s failed: %s",
                        spec.training_id, exc.detail)

    async def ensure_started(self, spec: PredictorSpec) -> Predictor:
        """The running predictor for `spec`, started (and waited for) if there is none."""
        lock = self._locks.setdefault(spec.key, asyncio.Lock())
        async with lock:
            current = self.predictors.get(spec.key)
            if current is not None and current.alive():
                return current
            if current is not None:
                await self._forget(current)
            await self._make_room()
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            spec.log_path.write_bytes(b"")
            sandboxed = (await asyncio.to_thread(sandboxing.state)).enabled
            try:
                python = await asyncio.to_thread(resolve_python, spec, sandboxed=sandboxed)
            except envs.RequirementsError as exc:
                raise PredictorFailed(f"inference/{envs.REQUIREMENTS_FILE} of training "
                                      f"{spec.training_id}: {exc}") from exc
            try:
                predictor = self._spawn(spec, python, sandboxed=sandboxed)
            except OSError as exc:
                raise PredictorFailed(f"the predictor of training {spec.training_id} could not "
                                      f"start: {exc}") from exc
            self.predictors[spec.key] = predictor
            try:
                predictor.info = await self._wait_ready(predictor)
            except BaseException:
                await self._forget(predictor)
                raise
            self._ensure_reaper()
            return predictor

    def _spawn(self, spec: PredictorSpec, python: str, *, sandboxed: bool) -> Predictor:
        """Start the predictor: in the sandbox, it sees only its code, checkpoint and box."""
        box = services.new_box(spec.runtime_dir)
        try:
            proc = self._start(spec, python, box, sandboxed=sandboxed)
        except BaseException:
            shutil.rmtree(box.root, ignore_errors=True)
            raise
        transport = httpx.AsyncHTTPTransport(uds=str(box.inner / SOCKET_NAME))
        client = httpx.AsyncClient(transport=transport, base_url="http://predictor",
                                   timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=5.0))
        log.info("started predictor pid %s for training %s (%s)%s", proc.pid, spec.training_id,
                 spec.checkpoint.name, "" if sandboxed else " WITHOUT the sandbox")
        return Predictor(spec=spec, proc=proc, folder=box.root, client=client)

    def _start(self, spec: PredictorSpec, python: str, box: services.Box, *,
               sandboxed: bool) -> subprocess.Popen[bytes]:
        app_dir = spec.app_path.parent
        argv = [python, str(PREDICTOR_SCRIPT), "--app", str(spec.app_path),
                "--checkpoint", str(spec.checkpoint), "--socket", str(box.inner / SOCKET_NAME),
                "--max-batch", str(spec.max_batch), "--gather-ms", str(spec.gather_ms)]
        sandbox = None
        if sandboxed:
            # bwrap follows links when it mounts: refuse any the training could have planted.
            # The whole workspace is mounted (read-only): `app.py` may import the training's
            # code, as the sample's does; links inside it resolve within the sandbox's view.
            services.check_plain_folder(spec.workspace, inside=spec.workspace.parent)
            services.check_plain_folder(app_dir, inside=spec.workspace)
            services.check_plain_file(spec.checkpoint, inside=spec.workspace)
            env = build_env({}, home=box.home, tmpdir=Path("/tmp"), python=python,
                            runtime_is_mindspore=spec.is_mindspore)
            sandbox = services.service_sandbox(box, cwd=app_dir, pythons=[python],
                                               read_only=[PREDICTOR_SCRIPT, spec.workspace])
            services.hand_over(box)
        else:
            env = build_env({}, home=spec.home, runtime_is_mindspore=spec.is_mindspore,
                            python=python)
            for name in ("HOME", "TMPDIR"):
                Path(env[name]).mkdir(parents=True, exist_ok=True)
        with open(spec.log_path, "ab") as out:
            # Called on the event loop's thread: the shim's parent-death signal follows it.
            return supervise.start(argv, cwd=app_dir, env=env, stdout=out, grace_s=STOP_GRACE_S,
                                   sandbox=sandbox)

    async def _wait_ready(self, predictor: Predictor) -> dict[str, Any]:
        spec = predictor.spec
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not predictor.alive():
                raise PredictorFailed(
                    f"inference/app.py of training {spec.training_id} did not start (exit "
                    f"code {predictor.proc.returncode}); its log ends with:\n{log_tail(spec)}")
            if predictor.socket.exists():
                response = await predictor.client.get("/health")
                info: dict[str, Any] = response.json()
                return info
            await asyncio.sleep(0.05)
        raise PredictorFailed(f"inference/app.py of training {spec.training_id} was not ready "
                              f"after {START_TIMEOUT_S:g} s; its log ends with:\n"
                              f"{log_tail(spec)}")

    async def _make_room(self) -> None:
        live = [p for p in self.predictors.values() if p.alive()]
        for dead in [p for p in self.predictors.values() if not p.alive()]:
            await self._forget(dead)
        if len(live) < self.max_predictors:
            return
        idle = sorted((p for p in live if p.in_flight == 0), key=lambda p: p.last_used)
        if not idle:
            raise PredictorsBusy(f"all {self.max_predictors} predictors are answering requests; "
                                 "try again in a moment")
        await self._forget(idle[0])

    async def _forget(self, predictor: Predictor) -> None:
        """Stop a predictor (if running) and drop it."""
        if self.predictors.get(predictor.spec.key) is predictor:
            del self.predictors[predictor.spec.key]
        await asyncio.to_thread(_stop_process, predictor.proc)
        await predictor.client.aclose()
        shutil.rmtree(predictor.folder, ignore_errors=True)
        log.info("stopped predictor of training %s", predictor.spec.training_id)

    async def stop_training(self, training_id: int) -> int:
        """Stop every predictor of a training; how many were running."""
        mine = [p for p in self.predictors.values() if p.spec.training_id == training_id]
        for predictor in mine:
            await self._forget(predictor)
        return len(mine)

    async def stop_idle(self, *, now: float | None = None) -> int:
        """Stop predictors idle for `idle_s`, dead ones and those of deleted trainings."""
        moment = time.monotonic() if now is None else now
        stale = [p for p in self.predictors.values()
                 if not p.alive() or (p.in_flight == 0 and (moment - p.last_used >= self.idle_s
                                                            or not p.spec.checkpoint.exists()))]
        for predictor in stale:
            await self._forget(predictor)
        return len(stale)

    async def shutdown(self) -> None:
        """Stop every predictor (the API is going away)."""
        for task in list(self._warming.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for predictor in list(self.predictors.values()):
            await self._forget(predictor)

    def running(self, training_id: int) -> list[Predictor]:
        """The live predictors of a training."""
        return [p for p in self.predictors.values()
                if p.spec.training_id == training_id and p.alive()]

    async def health(self, predictor: Predictor) -> dict[str, Any]:
        """What a ready predictor says about itself now (its start-time answer if it is busy)."""
        if not predictor.info or not predictor.alive():
            return predictor.info
        try:
            response = await predictor.client.get("/health", timeout=1.0)
            info: dict[str, Any] = response.json()
            return info
        except (httpx.HTTPError, ValueError):
            return predictor.info

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        period = min(max(self.idle_s / 4, 0.5), 60.0)
        while self.predictors:
            await asyncio.sleep(period)
            try:
                await self.stop_idle()
            except Exception:  # keep sweeping: one failed stop must not leave the rest running
                log.exception("stopping idle predictors failed")


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        kill_process_tree(proc.pid, STOP_GRACE_S)
    proc.wait()
