"""Evaluations: start, reuse, revive, expire and stop Aim UIs, one per subject in the
deployment.

The evaluation row (`evaluations`) is what users see: kind, source, status, error. Its Aim
process is a `services` row of the launcher (`app.launcher`, kind `aim`, owner
"training:<id>" or "repo:<id>"), which makes it one process for every API process, counts the
cap and the idle time over the deployment, and stops it from any API process on its host. An
active evaluation whose service is gone (idle, crashed, its API process restarted) reads as
expired and is started again on demand. The manager's database work is its own short
transactions (`app.launcher.records.transact`), never a request's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI

from app import storage
from app.config import get_settings
from app.errors import AppError, NotFound
from app.evaluations import service, staging
from app.evaluations.aim_process import AimProcesses, Stager
from app.evaluations.schemas import EvaluationPublic
from app.evaluations.sources import Subject
from app.launcher import records
from app.launcher.launcher import Launcher, ServiceElsewhere, Spawned
from app.launcher.records import STALE_CLAIM_S, ServiceRef, is_gone, transact
from app.models import EVALUATION_ACTIVE, Evaluation, EvaluationStatus, ServiceKind
from app.models import ServiceState as State
from app.models.base import utcnow
from app.procs import sandbox as sandboxing
from app.procs import services

log = logging.getLogger(__name__)
T = TypeVar("T")

READY_TIMEOUT_S = 300.0  # building a repository from a long log can take minutes
AIM_ORIGIN = "http://aim"  # the Host Aim sees behind the proxy (it listens on a unix socket)


class EvaluationFailed(AppError):
    status = 502
    code = "evaluation_failed"


async def _db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await transact(fn, *args, **kwargs)


def owner_key(subject: Subject) -> str:
    """The subject's Aim UI among the services: "training:<id>" or "repo:<id>"."""
    return f"{subject.kind}:{subject.id}"


class AimStarter:
    """Starts the Aim UI of one evaluation, for the launcher."""

    def __init__(self, manager: EvaluationManager, subject: Subject, stage: Stager) -> None:
        self.manager, self.subject, self.stage = manager, subject, stage

    async def spawn(self) -> Spawned:
        """Give the job to the spare Aim process (or a fresh one)."""
        try:
            child = await self.manager.procs.launch(self.stage, log=self.subject.log)
        except OSError as exc:
            raise EvaluationFailed(
                f"the Aim repository could not be copied for Aim's UI: {exc}") from exc
        return Spawned(proc=child.proc, socket=str(child.socket), box_root=child.box.root)

    async def wait_ready(self, spawned: Spawned) -> dict[str, Any]:
        """Wait until Aim's API answers; its log tail when it never does."""
        if await self.manager.wait_ready(self.subject, spawned.socket, spawned.proc.pid,
                                         timeout_s=READY_TIMEOUT_S):
            return {}
        tail = service.log_tail(self.subject)
        raise EvaluationFailed("Aim's UI did not start" + (
            f":\n{tail}" if tail else f" within {READY_TIMEOUT_S:.0f} s"))


class EvaluationManager:
    """Starts Aim UIs on request, keeps them while used, stops them when idle or unneeded."""

    def __init__(self) -> None:
        settings = get_settings()
        self.procs = AimProcesses()
        self.launcher = Launcher(kind=ServiceKind.AIM, max_count=max(1, settings.max_evaluations),
                                 idle_s=settings.evaluation_idle_s,
                                 start_timeout_s=READY_TIMEOUT_S + 60, grace_s=5.0,
                                 failure=EvaluationFailed, on_gone=self._forget)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._http: dict[str, httpx.AsyncClient] = {}
        self._ready: dict[str, ServiceRef] = {}  # the proxy's cache: ready Aim UIs by owner

    @property
    def idle_s(self) -> int:
        """Seconds without use after which an Aim UI stops."""
        return get_settings().evaluation_idle_s

    def http(self, socket: str) -> httpx.AsyncClient:
        """The client talking to the Aim process on `socket` (shared by the reverse proxy)."""
        client = self._http.get(socket)
        if client is None:
            client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=socket),
                                       base_url=AIM_ORIGIN,
                                       timeout=httpx.Timeout(None, connect=5.0),
                                       limits=httpx.Limits(max_connections=200))
            self._http[socket] = client
        return client

    def _forget(self, owner: str, socket: str | None) -> None:
        known = self._ready.get(owner)
        if known is not None and known.socket == socket:
            del self._ready[owner]
        client = self._http.pop(socket, None) if socket is not None else None
        if client is not None:
            self._background(client.aclose())

    def forget(self, subject: Subject) -> None:
        """Read the subject's service row again next time (its socket did not answer)."""
        self._ready.pop(owner_key(subject), None)

    async def start(self) -> None:
        """Start the upkeep (and find out, off the event loop, whether to sandbox Aim)."""
        await asyncio.to_thread(sandboxing.state)
        await asyncio.to_thread(services.remove_orphan_boxes, storage.runtime_dir("aim"))
        self.launcher.start_upkeep()
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def shutdown(self) -> None:
        """Stop the upkeep and every Aim process this API process started."""
        for task in [self._sweeper, *self._tasks]:
            if task is not None:
                task.cancel()
        await self.launcher.shutdown()
        await self.procs.shutdown()
        for client in list(self._http.values()):
            await client.aclose()
        self._http.clear()

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- state ---------------------------------------------------------------------------

    async def _service(self, subject: Subject) -> ServiceRef | None:
        row: ServiceRef | None = await _db(records.get, ServiceKind.AIM, owner_key(subject))
        return row

    @staticmethod
    def gone(row: Evaluation, svc: ServiceRef | None) -> bool:
        """True when an active evaluation's Aim process is not running (or never started)."""
        if svc is None:
            stale = (utcnow() - row.last_used_at).total_seconds() > STALE_CLAIM_S
            return row.status == EvaluationStatus.RUNNING or stale
        return svc.state in (State.FAILED, State.STOPPING) or svc.detached or is_gone(svc)

    async def describe(self, subject: Subject) -> EvaluationPublic:
        """The evaluation's status; a row whose process vanished reads as expired."""
        # Whoever looks at an evaluation may start one soon: have Aim imported by then.
        self.procs.prewarm()
        row = await _db(service.get_row, subject)
        if row is None:
            raise NotFound(f"no evaluation of {subject.kind} {subject.id} yet: start one",
                           code="no_evaluation")
        if row.status in EVALUATION_ACTIVE and self.gone(row, await self._service(subject)) \
                and await _db(service.mark, row.id, generation=row.created_at,
                              status=EvaluationStatus.EXPIRED):
            row = await _db(service.get_row, subject) or row
        return service.to_public(subject, row, idle_s=self.idle_s)

    # -- starting ------------------------------------------------------------------------

    async def request(self, subject: Subject, *, kind: str,
                      aim_path: str | None) -> EvaluationPublic:
        """Start the evaluation, or reuse it when it runs with the same settings and data."""
        self.procs.prewarm()
        plan = await _db(service.plan_for, subject, kind=kind, aim_path=aim_path)
        row = await _db(service.get_row, subject)
        svc = await self._service(subject)
        reusable = (row is not None and row.status in EVALUATION_ACTIVE and row.type == kind
                    and row.aim_path == plan.aim_path and not self.gone(row, svc)
                    and (row.status == EvaluationStatus.STARTING
                         or service.is_built(svc.socket if svc else None, plan.build)))
        if reusable:
            assert row is not None
            await _db(service.touch, row.id)
            if svc is not None:
                self.launcher.touch(svc)
        else:
            await self._launch(subject, kind=kind, seen=row, plan=plan)
        return await self.describe(subject)

    async def _launch(self, subject: Subject, *, kind: str, seen: Evaluation | None,
                      plan: service.Plan | None = None) -> None:
        if plan is None:
            assert seen is not None
            try:
                plan = await _db(service.plan_for, subject, kind=kind, aim_path=seen.aim_path)
            except AppError as exc:
                await _db(service.mark, seen.id, generation=seen.created_at,
                          status=EvaluationStatus.FAILED, error=exc.detail)
                raise
        row = await _db(service.claim, subject, kind=kind, aim_path=plan.aim_path, seen=seen)
        if row is None:
            return  # another request is starting it
        self.forget(subject)
        old = await self._service(subject)
        if old is not None:  # the previous generation's process (other settings or data)
            await self.launcher.stop(old)
        try:
            await self.launcher.make_room()  # before answering: the evicted one reads expired
        except AppError as exc:
            await _db(service.mark, row.id, generation=row.created_at,
                      status=EvaluationStatus.FAILED, error=exc.detail)
            raise
        self._background(self._start(subject, row, plan))

    async def _start(self, subject: Subject, row: Evaluation, plan: service.Plan) -> None:
        starter = AimStarter(self, subject, staging.stager(subject, plan))
        try:
            await self.launcher.acquire(
                owner_key(subject), starter,
                training_id=subject.id if subject.kind == "training" else None,
                repo_id=subject.id if subject.kind == "repo" else None)
        except AppError as exc:
            await _db(service.mark, row.id, generation=row.created_at,
                      status=EvaluationStatus.FAILED, error=exc.detail)
            return
        await _db(service.mark, row.id, generation=row.created_at,
                  status=EvaluationStatus.RUNNING)

    async def wait_ready(self, subject: Subject, socket: str, pid: int, *,
                         timeout_s: float) -> bool:
        """Poll Aim's API until it answers (False if the process dies or time runs out)."""
        url = f"{subject.base_path}/api/projects/"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline and records.process_alive(pid):
            try:
                if (await self.http(socket).get(url, timeout=2.0)).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
        return False

    # -- serving -------------------------------------------------------------------------

    async def serving_socket(self, subject: Subject, row: Evaluation) -> str:
        """The socket of the subject's running Aim UI, reviving or awaiting it as needed (no
        database read while a known Aim UI serves)."""
        key = owner_key(subject)
        known = self._ready.get(key)
        if known is not None and known.socket is not None \
                and row.status == EvaluationStatus.RUNNING:
            return known.socket
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        revived = False
        while loop.time() < deadline:
            if row.status == EvaluationStatus.FAILED:
                raise EvaluationFailed(row.error or "the evaluation failed: start it again")
            svc = await self._service(subject) if row.status in EVALUATION_ACTIVE else None
            if row.status in EVALUATION_ACTIVE and not self.gone(row, svc):
                if svc is not None and svc.state == State.READY:
                    if not svc.here:
                        raise ServiceElsewhere(f"the Aim UI of {key} runs on host {svc.host}, "
                                               "whose socket this API process cannot reach")
                    assert svc.socket is not None
                    self._ready[key] = svc
                    return svc.socket
                await asyncio.sleep(0.1)  # another request is starting it
            elif not revived:  # expired, or its process is gone: start it again, once
                await self._launch(subject, kind=row.type, seen=row)
                revived = True
            else:
                break
            fresh = await _db(service.get_row, subject)
            if fresh is None:
                raise NotFound("this report is not started", code="no_evaluation")
            row = fresh
        raise EvaluationFailed("Aim's UI could not be started: start the evaluation again")

    def touch_due(self, row: Evaluation) -> bool:
        """True when the row's last use is old enough to be worth recording again."""
        every = min(30.0, self.idle_s / 4)
        return (utcnow() - row.last_used_at).total_seconds() >= every

    async def touch(self, subject: Subject, row: Evaluation) -> None:
        """Postpone the expiry of a used report (written at most every few seconds)."""
        if self.touch_due(row):
            await _db(service.touch, row.id)
        svc = self._ready.get(owner_key(subject))
        if svc is not None:
            self.launcher.touch(svc)

    # -- stopping ------------------------------------------------------------------------

    async def stop_subject(self, subject: Subject) -> None:
        """Stop the subject's Aim UI, from any API process on its host."""
        row = await _db(service.get_row, subject)
        if row is not None and row.status in EVALUATION_ACTIVE:
            await _db(service.mark, row.id, generation=row.created_at,
                      status=EvaluationStatus.EXPIRED)
        svc = await self._service(subject)
        if svc is not None:
            await self.launcher.stop(svc)

    async def stop_detached(self) -> int:
        """Stop the Aim UIs whose training or repository was deleted (after the commit)."""
        return await self.launcher.stop_detached()

    async def sweep(self) -> None:
        """One round of upkeep: retired spares reaped, the spare retired when unused."""
        self.procs.reap()
        self.procs.retire_spare(idle_s=self.idle_s)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, max(0.5, self.idle_s / 4)))
            try:
                await self.sweep()
            except Exception:  # upkeep must go on
                log.exception("evaluation upkeep failed")


@lru_cache
def get_manager() -> EvaluationManager:
    """This API process's evaluation manager."""
    return EvaluationManager()


@asynccontextmanager
async def evaluations_lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """Application lifespan: the upkeep runs, and every Aim process this API process started
    stops on shutdown."""
    manager = get_manager()
    await manager.start()
    try:
        yield
    finally:
        await manager.shutdown()


async def stop_detached_evaluations() -> int:
    """Stop the Aim UIs of deleted trainings and repositories (call after the commit)."""
    return await get_manager().stop_detached()
