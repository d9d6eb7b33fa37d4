"""The evaluations of this API process: start, reuse, revive, expire and stop Aim UIs.

Rows in the database say what runs where (shared by every worker); each worker stops the
processes it started when it shuts down. A row whose process is gone (a restart, a crash)
reads as expired and is started again on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import storage
from app.config import get_settings
from app.db import get_sessionmaker
from app.errors import AppError, NotFound
from app.evaluations import service, staging
from app.evaluations.aim_process import AimProcesses
from app.evaluations.schemas import EvaluationPublic
from app.evaluations.sources import Subject, repo_subject, training_subject
from app.models import EVALUATION_ACTIVE, Evaluation, EvaluationStatus, Repository
from app.models.base import utcnow
from app.procs import sandbox as sandboxing
from app.procs import services

log = logging.getLogger(__name__)
T = TypeVar("T")

READY_TIMEOUT_S = 300.0  # building a repository from a long log can take minutes
STALE_CLAIM_S = 30.0     # a row claimed this long ago without a pid lost its starter
AIM_ORIGIN = "http://aim"  # the Host Aim sees behind the proxy (it listens on a unix socket)


class EvaluationFailed(AppError):
    status = 502
    code = "evaluation_failed"


async def _db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    def call() -> T:
        with get_sessionmaker()() as db:
            return fn(db, *args, **kwargs)
    return await run_in_threadpool(call)


class EvaluationManager:
    """Starts Aim UIs on request, keeps them while used, stops them when idle or unneeded."""

    def __init__(self) -> None:
        self.procs = AimProcesses()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._http: dict[str, httpx.AsyncClient] = {}
        self._unrecorded: set[int] = set()  # launched, pid not yet in the database

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

    async def _close_clients(self, keep: set[str]) -> None:
        for socket in [s for s in self._http if s not in keep]:
            await self._http.pop(socket).aclose()

    async def start(self) -> None:
        """Start the idle sweeper (and find out, off the event loop, whether to sandbox Aim)."""
        await asyncio.to_thread(sandboxing.state)
        await asyncio.to_thread(services.remove_orphan_boxes, storage.runtime_dir("aim"))
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def shutdown(self) -> None:
        """Stop the sweeper and every Aim process this API process started."""
        for task in [self._sweeper, *self._tasks]:
            if task is not None:
                task.cancel()
        await self.procs.shutdown()
        await self._close_clients(set())

    # -- state ---------------------------------------------------------------------------

    def gone(self, row: Evaluation) -> bool:
        """True when an active row's process is not running (or never got started)."""
        if row.pid is None:
            stale = (utcnow() - row.last_used_at).total_seconds() > STALE_CLAIM_S
            return row.status == EvaluationStatus.RUNNING or stale
        return not self.procs.alive(row.pid)

    async def describe(self, subject: Subject) -> EvaluationPublic:
        """The evaluation's status; a row whose process vanished reads as expired."""
        # Whoever looks at an evaluation may start one soon: have Aim imported by then.
        self.procs.prewarm()
        row = await _db(service.get_row, subject)
        if row is None:
            raise NotFound(f"no evaluation of {subject.kind} {subject.id} yet: start one",
                           code="no_evaluation")
        if row.status in EVALUATION_ACTIVE and self.gone(row) \
                and await _db(service.mark, row.id, pid=row.pid, status=EvaluationStatus.EXPIRED):
            row = await _db(service.get_row, subject) or row
        return service.to_public(subject, row, idle_s=self.idle_s)

    # -- starting ------------------------------------------------------------------------

    async def request(self, subject: Subject, *, kind: str,
                      aim_path: str | None) -> EvaluationPublic:
        """Start the evaluation, or reuse it when it runs with the same settings and data."""
        self.procs.prewarm()
        plan = await _db(service.plan_for, subject, kind=kind, aim_path=aim_path)
        row = await _db(service.get_row, subject)
        reusable = (row is not None and row.status in EVALUATION_ACTIVE and row.type == kind
                    and row.aim_path == plan.aim_path and not self.gone(row)
                    and (row.status == EvaluationStatus.STARTING
                         or service.is_built(row, plan.build)))
        if reusable:
            assert row is not None
            await _db(service.touch, row.id)
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
                await _db(service.mark, seen.id, pid=seen.pid, status=EvaluationStatus.FAILED,
                          error=exc.detail)
                raise
        row = await _db(service.claim, subject, kind=kind, aim_path=plan.aim_path, seen=seen)
        if row is None:
            return  # another request is starting it
        if seen is not None and seen.pid is not None:
            await self.procs.stop(seen.pid)
        await self._make_room(keep=row.id)
        try:
            pid, socket = await self.procs.launch(staging.stager(subject, plan), log=subject.log)
        except OSError as exc:
            await _db(service.mark, row.id, pid=None, status=EvaluationStatus.FAILED,
                      error=f"the Aim repository could not be copied for Aim's UI: {exc}")
            raise EvaluationFailed(f"the Aim repository could not be prepared: {exc}") from exc
        self._unrecorded.add(pid)
        try:
            recorded = await _db(service.record_pid, row.id, pid, socket)
        finally:
            self._unrecorded.discard(pid)
        if not recorded:
            await self.procs.stop(pid)
            return
        task = asyncio.create_task(self._watch(subject, row.id, pid, socket))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, subject: Subject, row_id: int, pid: int, socket: str) -> None:
        if await self.wait_ready(subject, socket, pid, timeout_s=READY_TIMEOUT_S):
            await _db(service.mark, row_id, pid=pid, status=EvaluationStatus.RUNNING)
            return
        tail = service.log_tail(subject)
        error = ("Aim's UI did not start" + (f":\n{tail}" if tail else f" within "
                                             f"{READY_TIMEOUT_S:.0f} s"))
        await _db(service.mark, row_id, pid=pid, status=EvaluationStatus.FAILED, error=error)
        await self.procs.stop(pid)

    async def wait_ready(self, subject: Subject, socket: str, pid: int, *,
                         timeout_s: float) -> bool:
        """Poll Aim's API until it answers (False if the process dies or time runs out)."""
        url = f"{subject.base_path}/api/projects/"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline and self.procs.alive(pid):
            try:
                if (await self.http(socket).get(url, timeout=2.0)).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
        return False

    async def _make_room(self, *, keep: int) -> None:
        """Stop the least recently used Aim UIs beyond the configured cap."""
        others = [r for r in await _db(service.active_rows)
                  if r.id != keep and not self.gone(r)]
        excess = len(others) - (get_settings().max_evaluations - 1)
        for row in others[:max(excess, 0)]:
            if await _db(service.mark, row.id, pid=row.pid, status=EvaluationStatus.EXPIRED):
                await self.procs.stop(row.pid)

    # -- serving -------------------------------------------------------------------------

    async def serving_socket(self, subject: Subject, row: Evaluation) -> str:
        """The socket of the subject's running Aim UI, reviving or awaiting it as needed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        revived = False
        while loop.time() < deadline:
            if row.status == EvaluationStatus.FAILED:
                raise EvaluationFailed(row.error or "the evaluation failed: start it again")
            if row.status in EVALUATION_ACTIVE and not self.gone(row):
                if row.pid is None or row.socket is None:  # another request is starting it
                    await asyncio.sleep(0.1)
                elif row.status == EvaluationStatus.RUNNING or await self.wait_ready(
                        subject, row.socket, row.pid, timeout_s=deadline - loop.time()):
                    return row.socket
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

    async def touch(self, row: Evaluation) -> None:
        """Postpone the expiry of a used report (written at most every few seconds)."""
        if self.touch_due(row):
            await _db(service.touch, row.id)

    # -- stopping ------------------------------------------------------------------------

    async def stop_subject(self, subject: Subject) -> None:
        """Stop the subject's Aim UI (before the training or repository is deleted)."""
        row = await _db(service.get_row, subject)
        if row is not None and row.status in EVALUATION_ACTIVE:
            await _db(service.mark, row.id, pid=row.pid, status=EvaluationStatus.EXPIRED)
            await self.procs.stop(row.pid)

    async def expire_idle(self) -> int:
        """Stop the Aim UIs unused for the idle time; returns how many were stopped."""
        stopped = 0
        for row in await _db(service.idle_rows, idle_s=self.idle_s):
            if await _db(service.mark, row.id, pid=row.pid, status=EvaluationStatus.EXPIRED):
                await self.procs.stop(row.pid)
                stopped += 1
        return stopped

    async def _reap(self) -> None:
        gone = self.procs.reap()
        rows = await _db(service.rows_by_pid, list(gone))
        for pid, row in rows.items():
            subject = await _db(service.subject_of, row)
            tail = service.log_tail(subject)
            await _db(service.mark, row.id, pid=pid, status=EvaluationStatus.FAILED,
                      error=f"Aim's UI stopped (exit code {gone[pid]})"
                      + (f":\n{tail}" if tail else ""))
        # Processes whose row was deleted with its training or repository.
        running = [pid for pid in self.procs.children() if pid not in self._unrecorded]
        owned = await _db(_rows_with_pids, running)
        for pid in running:
            if pid not in owned and pid not in self._unrecorded:
                await self.procs.stop(pid)

    async def sweep(self) -> None:
        """One round of upkeep: reap exited processes, stop orphans and idle ones."""
        await self._reap()
        await self.expire_idle()
        self.procs.retire_spare(idle_s=self.idle_s)
        await self._close_clients({row.socket for row in await _db(service.active_rows)
                                   if row.socket is not None})

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, max(0.5, self.idle_s / 4)))
            try:
                await self.sweep()
            except Exception:  # upkeep must outlive a database hiccup
                log.exception("evaluation upkeep failed")


def _rows_with_pids(db: Session, pids: list[int]) -> set[int]:
    if not pids:
        return set()
    return {pid for pid in db.scalars(select(Evaluation.pid).where(Evaluation.pid.in_(pids)))
            if pid is not None}


@lru_cache
def get_manager() -> EvaluationManager:
    """This API process's evaluation manager."""
    return EvaluationManager()


@asynccontextmanager
async def evaluations_lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """Application lifespan: the upkeep task runs, and every Aim process stops on shutdown."""
    manager = get_manager()
    await manager.start()
    try:
        yield
    finally:
        await manager.shutdown()


async def stop_repo_evaluation(repo: Repository) -> None:
    """Stop a repository's comparison and drop its files (called before the repo is deleted)."""
    subject = repo_subject(repo)
    with contextlib.suppress(NotFound):
        await get_manager().stop_subject(subject)
    shutil.rmtree(subject.workdir, ignore_errors=True)


async def stop_training_evaluation(training_id: int) -> None:
    """Stop a training's Aim UI (called before the training is deleted)."""
    with contextlib.suppress(NotFound):
        await get_manager().stop_subject(training_subject(training_id))


