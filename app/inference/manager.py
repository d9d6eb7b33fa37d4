"""Predictor processes: started on demand, kept warm, stopped when idle or over the cap.

One predictor serves one (training, checkpoint) pair in the whole deployment: its row in the
`services` table (`app.launcher`) says which host runs it, its socket and its pid, so every API
process on that host reaches the same process, and only one of them starts it. It runs
`predictor.py` with the runtime's interpreter under the reaper shim (`app.procs.supervise`),
so nothing it starts outlives it and it dies with the API process that started it (the shim
asks for SIGHUP when its parent goes; it is started from the event loop's thread, which lives
as long as the process). The API talks to it over HTTP on a unix socket that the predictor
creates in its box, `run/predictors/<token>/box/` in the data dir's runtime area (0700: only
the platform's uid, and the predictor itself, can reach it; see `app.procs.services`). When
the sandbox is on (`app.procs.sandbox.state()`) the predictor runs in it, seeing only the
runtime, its code, its checkpoint and its box, with an environment made from scratch.

The hot path reads no row: each API process keeps the ready row of a predictor it used (its
socket) and reads the row again only when connecting fails (stopped or restarted elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from app.errors import AppError
from app.launcher.launcher import Launcher, Spawned
from app.launcher.records import ServiceRef
from app.models import ServiceKind, ServiceState
from app.procs import envs, services, supervise
from app.procs import sandbox as sandboxing
from app.procs.environ import build_env
from app.procs.logfiles import tail_lines

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
    def owner_key(self) -> str:
        """What identifies a predictor in the deployment: the training and the checkpoint."""
        try:
            checkpoint = self.checkpoint.relative_to(self.workspace).as_posix()
        except ValueError:
            checkpoint = str(self.checkpoint)
        return f"training:{self.training_id}:{checkpoint}"


def checkpoint_of(row: ServiceRef) -> str:
    """The checkpoint a predictor's row serves (as its owner key names it)."""
    return row.owner_key.split(":", 2)[-1]


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


def _client(socket: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=socket),
                             base_url="http://predictor",
                             timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=5.0))


class PredictorStarter:
    """Starts the predictor of one spec, for the launcher."""

    def __init__(self, spec: PredictorSpec) -> None:
        self.spec = spec

    async def spawn(self) -> Spawned:
        """Resolve its interpreter, make its box and start it (in the sandbox when on)."""
        spec = self.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        spec.log_path.write_bytes(b"")
        sandboxed = (await asyncio.to_thread(sandboxing.state)).enabled
        try:
            python = await asyncio.to_thread(resolve_python, spec, sandboxed=sandboxed)
        except envs.RequirementsError as exc:
            raise PredictorFailed(f"inference/{envs.REQUIREMENTS_FILE} of training "
                                  f"{spec.training_id}: {exc}") from exc
        try:
            box = services.new_box(spec.runtime_dir)
            try:
                proc = self._start(python, box, sandboxed=sandboxed)
            except BaseException:
                shutil.rmtree(box.root, ignore_errors=True)
                raise
        except OSError as exc:
            raise PredictorFailed(f"the predictor of training {spec.training_id} could not "
                                  f"start: {exc}") from exc
        log.info("spawned predictor pid %s for training %s (%s)%s", proc.pid, spec.training_id,
                 spec.checkpoint.name, "" if sandboxed else " WITHOUT the sandbox")
        return Spawned(proc=proc, socket=str(box.inner / SOCKET_NAME), box_root=box.root)

    def _start(self, python: str, box: services.Box, *,
               sandboxed: bool) -> supervise.Started:
        spec = self.spec
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

    async def wait_ready(self, spawned: Spawned) -> dict[str, Any]:
        """Wait for its socket and its first /health answer (what it loaded, how long)."""
        spec = self.spec
        deadline = time.monotonic() + START_TIMEOUT_S
        async with _client(spawned.socket) as client:
            while time.monotonic() < deadline:
                if spawned.proc.poll() is not None:
                    raise PredictorFailed(
                        f"inference/app.py of training {spec.training_id} did not start (exit "
                        f"code {spawned.proc.returncode}); its log ends with:\n"
                        f"{log_tail(spec)}")
                if os.path.exists(spawned.socket):
                    response = await client.get("/health")
                    info: dict[str, Any] = response.json()
                    return info
                await asyncio.sleep(0.05)
        raise PredictorFailed(f"inference/app.py of training {spec.training_id} was not ready "
                              f"after {START_TIMEOUT_S:g} s; its log ends with:\n"
                              f"{log_tail(spec)}")


class PredictorManager:
    """This API process's side of the deployment's predictors: reach, start, list and stop
    them through the launcher, with one HTTP client per predictor socket."""

    def __init__(self, *, max_predictors: int, idle_s: float,
                 sessions: sessionmaker[Session] | None = None) -> None:
        self.launcher = Launcher(kind=ServiceKind.PREDICTOR, max_count=max(1, max_predictors),
                                 idle_s=idle_s, start_timeout_s=START_TIMEOUT_S,
                                 grace_s=STOP_GRACE_S, failure=PredictorFailed,
                                 sessions=sessions, on_gone=self._forget)
        self._known: dict[str, ServiceRef] = {}  # ready rows by owner: the hot path's cache
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._warming: dict[str, asyncio.Task[None]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def idle_s(self) -> float:
        """Seconds without use after which a predictor stops."""
        return self.launcher.idle_s

    def start(self) -> None:
        """Start the upkeep (idle expiry, stop requests, rows of dead predictors)."""
        self.launcher.start_upkeep()

    def client(self, row: ServiceRef) -> httpx.AsyncClient:
        """The client talking to the predictor of `row`."""
        assert row.socket is not None
        client = self._clients.get(row.socket)
        if client is None:
            client = self._clients[row.socket] = _client(row.socket)
        return client

    async def _ready(self, spec: PredictorSpec) -> tuple[ServiceRef, float | None]:
        key = spec.owner_key
        row = self._known.get(key)
        if row is not None:
            return row, None
        began = time.perf_counter()
        row, waited = await self.launcher.acquire(key, PredictorStarter(spec),
                                                  training_id=spec.training_id)
        self._known[key] = row
        return row, round(time.perf_counter() - began, 3) if waited else None

    async def predict(self, spec: PredictorSpec, *, width: int, height: int,
                      rgb: bytes) -> Prediction:
        """Run one image through the spec's predictor, starting it when needed."""
        headers = {"X-Width": str(width), "X-Height": str(height),
                   "Content-Type": "application/octet-stream"}
        row, cold_start = await self._ready(spec)
        for attempt in (1, 2):
            try:
                async with self.launcher.using(row):
                    response = await self.client(row).post("/predict", content=rgb,
                                                            headers=headers)
                break
            except httpx.ConnectError as exc:  # stopped or restarted elsewhere: read the row
                self._known.pop(spec.owner_key, None)
                if attempt == 2:
                    raise PredictorFailed(f"the predictor of training {spec.training_id} does "
                                          f"not answer ({exc!r})") from exc
                row, started = await self._ready(spec)
                cold_start = cold_start or started
            except httpx.TransportError as exc:
                self._known.pop(spec.owner_key, None)
                await self.launcher.stop(row)
                raise PredictorFailed(f"the predictor of training {spec.training_id} stopped "
                                      f"while predicting ({exc!r}); its log ends with:\n"
                                      f"{log_tail(spec)}") from exc
        body = response.json()
        if response.status_code != 200:
            raise PredictorFailed(f"inference/app.py of training {spec.training_id} failed on "
                                  f"this image:\n{body.get('error', response.text)}",
                                  code="prediction_failed")
        return Prediction(scores=body["scores"], batch_size=body["batch_size"],
                          forward_ms=body["forward_ms"], queue_ms=body["queue_ms"],
                          cold_start_s=cold_start)

    async def warm_up(self, spec: PredictorSpec) -> str:
        """Start the predictor in the background unless it runs: `ready` or `starting`."""
        key = spec.owner_key
        row = await self.launcher.find(key)
        if row is not None:
            self._known[key] = row
            self.launcher.touch(row)
            return ServiceState.READY
        if key not in self._warming:
            task = asyncio.get_running_loop().create_task(self._warm(spec))
            self._warming[key] = task
            task.add_done_callback(lambda _t: self._warming.pop(key, None))
        return ServiceState.STARTING

    async def _warm(self, spec: PredictorSpec) -> None:
        try:
            await self._ready(spec)
        except AppError as exc:  # the next prediction retries and reports it
            log.warning("warming up the predictor of training %s failed: %s",
                        spec.training_id, exc.detail)

    async def running(self, training_id: int) -> list[ServiceRef]:
        """The deployment's starting and ready predictors of a training."""
        return await self.launcher.running(training_id=training_id)

    async def health(self, row: ServiceRef) -> dict[str, Any]:
        """What a ready predictor says about itself now (its start-time answer if it is busy
        or on another host)."""
        if row.state != ServiceState.READY or not row.here:
            return row.info
        try:
            response = await self.client(row).get("/health", timeout=1.0)
            info: dict[str, Any] = response.json()
            return info
        except (httpx.HTTPError, ValueError):
            return row.info

    async def stop_training(self, training_id: int) -> int:
        """Stop every predictor of a training in the deployment; how many there were."""
        return await self.launcher.stop_training(training_id)

    async def stop_idle(self) -> int:
        """One upkeep round: stop idle predictors, those asked to stop and of deleted
        trainings; drop the rows of dead ones."""
        return await self.launcher.sweep()

    def _forget(self, owner_key: str, socket: str | None) -> None:
        known = self._known.get(owner_key)
        if known is not None and known.socket == socket:
            del self._known[owner_key]
        client = self._clients.pop(socket, None) if socket is not None else None
        if client is not None:
            task = asyncio.get_running_loop().create_task(client.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def shutdown(self) -> None:
        """Stop every predictor this API process started (the API is going away)."""
        for task in list(self._warming.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.launcher.shutdown()
        for client in list(self._clients.values()):
            await client.aclose()
        self._clients.clear()
        self._known.clear()
