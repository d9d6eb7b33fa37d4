"""One launcher per kind of service and API process; the `services` rows make them one.

Starting is idempotent across API processes: the first to insert the owner's row (unique on
kind and owner) starts the process, every other one waits for that row to turn `ready` or
`failed`; a row whose starter died (its pid is gone on this host, or it was claimed long ago
and never got a pid) is taken over. The process that started a service reaps it and removes
its box; any process on the same host stops it by signalling its reaper shim's pid. Idle
expiry and the cap count the rows of the whole deployment; the least recently used idle one
is evicted. The starter's shim dies with it (parent-death signal), so no service outlives the
API process that started it: its row then reads as gone and is taken over on the next use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from app.errors import AppError
from app.launcher import records
from app.launcher.records import ServiceRef, is_gone, transact
from app.models import ServiceState
from app.models.base import utcnow
from app.procs import supervise
from app.procs.tree import kill_process_tree

log = logging.getLogger(__name__)

WAIT_POLL_S = 0.1
FAILED_KEPT_S = 60.0  # a failed row stays this long, for the waiters to read its error


class ServiceFailed(AppError):
    """A service process could not start or answer."""

    status = 502
    code = "service_failed"


class ServicesBusy(AppError):
    status = 503
    code = "services_busy"


class ServiceElsewhere(AppError):
    """The owner's service runs on another host: its unix socket is not reachable from here."""

    status = 503
    code = "service_elsewhere"


@dataclass
class Spawned:
    """A process a starter spawned: its reaper shim, the socket it will serve and its box."""

    proc: supervise.Started
    socket: str
    box_root: Path


class Starter(Protocol):
    """How one service is started (kind-specific: a predictor, an Aim UI)."""

    async def spawn(self) -> Spawned:
        """Start the process (raises an AppError it cannot)."""

    async def wait_ready(self, spawned: Spawned) -> dict[str, Any]:
        """Wait until it answers; what it says about itself (raises an AppError if it never
        does)."""


@dataclass
class Child:
    """A service process this API process started (and must reap)."""

    row_id: int
    owner_key: str
    spawned: Spawned
    ready: bool = False  # until then, a failed start is reported by `_start`, not the reaper

    @property
    def pid(self) -> int:
        """The reaper shim's pid (what the row records)."""
        return self.spawned.proc.pid


@dataclass
class Launcher:
    """Starts, finds, stops and sweeps the services of one kind for this API process."""

    kind: str
    max_count: int
    idle_s: float
    start_timeout_s: float = 300.0
    grace_s: float = 3.0
    failure: type[AppError] = ServiceFailed
    sessions: sessionmaker[Session] | None = None
    on_gone: Callable[[str, str | None], None] | None = None  # (owner, socket): drop caches
    children: dict[int, Child] = field(default_factory=dict)  # by pid
    in_use: dict[str, int] = field(default_factory=dict)  # requests in flight, by owner
    _touched: dict[str, float] = field(default_factory=dict)  # by owner
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _sweeper: asyncio.Task[None] | None = None
    _reaper: asyncio.Task[None] | None = None

    async def db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(db, ...)` in a short transaction of its own."""
        return await transact(fn, *args, sessions=self.sessions, **kwargs)

    # -- finding and starting ----------------------------------------------------------------

    async def find(self, owner_key: str) -> ServiceRef | None:
        """The owner's row when its process is ready to answer from here (one DB read)."""
        row: ServiceRef | None = await self.db(records.get, self.kind, owner_key)
        if row is None or row.state != ServiceState.READY or not row.here or is_gone(row):
            return None
        return row

    async def acquire(self, owner_key: str, starter: Starter, *, training_id: int | None,
                      repo_id: int | None = None) -> tuple[ServiceRef, bool]:
        """The owner's ready service, started (once in the deployment) if needed; also whether
        this call had to wait for a start."""
        lock = self._locks.setdefault(owner_key, asyncio.Lock())
        waited = lock.locked()  # a request of this process is starting it
        async with lock:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.start_timeout_s
            while loop.time() < deadline:
                row: ServiceRef | None = await self.db(records.get, self.kind, owner_key)
                claimed: ServiceRef | None = None
                if row is None:
                    claimed = await self.db(records.claim, self.kind, owner_key,
                                            training_id=training_id, repo_id=repo_id, seen=None)
                elif row.detached or row.state == ServiceState.STOPPING:
                    # A deleted owner's, or one asked to stop: it goes first (on another host,
                    # that host's sweeper stops it).
                    await self.stop(row)
                    if not row.here:
                        await asyncio.sleep(WAIT_POLL_S)
                    continue
                elif row.state == ServiceState.FAILED and waited:
                    raise self.failure(row.error or "the service failed to start")
                elif row.state in (ServiceState.READY, ServiceState.STARTING) \
                        and not is_gone(row):
                    if not row.here:
                        raise ServiceElsewhere(
                            f"the {self.kind} of {owner_key} runs on host {row.host}, whose "
                            "socket this API process cannot reach: route the request there, "
                            "or stop it (DELETE) to have it started here")
                    if row.state == ServiceState.READY:
                        return row, waited
                    waited = True  # another request (maybe another process) starts it
                    await asyncio.sleep(WAIT_POLL_S)
                    continue
                else:  # failed before, or its starter is gone: take it over
                    claimed = await self.db(records.claim, self.kind, owner_key,
                                            training_id=training_id, repo_id=repo_id, seen=row)
                if claimed is not None:
                    return await self._start(claimed, starter), True
                waited = True
            raise self.failure(f"the {self.kind} of {owner_key} was not ready after "
                               f"{self.start_timeout_s:g} s")

    async def _start(self, row: ServiceRef, starter: Starter) -> ServiceRef:
        heartbeat = asyncio.get_running_loop().create_task(self._renew_claim(row.id))
        try:
            await self.make_room(keep=row.id)
            spawned = await starter.spawn()
        except BaseException as exc:
            await self.db(records.mark_failed, row.id, pid=None, error=_detail(exc))
            raise
        finally:
            heartbeat.cancel()
        child = Child(row_id=row.id, owner_key=row.owner_key, spawned=spawned)
        self.children[child.pid] = child
        self._ensure_reaper()
        try:
            if not await self.db(records.record_pid, row.id, pid=child.pid,
                                 socket_path=spawned.socket):
                raise self.failure(f"the {self.kind} of {row.owner_key} was stopped while it "
                                   "started")
            info = await starter.wait_ready(spawned)
            if not await self.db(records.mark_ready, row.id, pid=child.pid, info=info):
                raise self.failure(f"the {self.kind} of {row.owner_key} was stopped while it "
                                   "started")
        except BaseException as exc:
            await self.db(records.mark_failed, row.id, pid=child.pid, error=_detail(exc))
            await self._kill_child(child, drop_row=False)  # waiters read the error in it
            raise
        child.ready = True
        log.info("started %s pid %s for %s", self.kind, child.pid, row.owner_key)
        ready: ServiceRef | None = await self.db(records.get, self.kind, row.owner_key)
        assert ready is not None
        return ready

    async def _renew_claim(self, row_id: int) -> None:
        while True:
            await asyncio.sleep(records.STALE_CLAIM_S / 3)
            try:
                await self.db(records.renew_claim, row_id)
            except Exception:  # the next beat tries again
                log.exception("renewing the claim of %s row %s failed", self.kind, row_id)

    async def make_room(self, *, keep: int | None = None) -> None:
        """Evict the least recently used idle services beyond the deployment's cap, counting
        one more (`keep`, or one about to be claimed)."""
        rows: list[ServiceRef] = await self.db(records.rows, self.kind)
        live = [r for r in rows if r.id != keep and r.state in (ServiceState.READY,
                                                                 ServiceState.STARTING)
                and not r.detached and not is_gone(r)]
        excess = len(live) - (self.max_count - 1)
        if excess <= 0:
            return
        idle = [r for r in live if r.state == ServiceState.READY and not self.in_use.get(
            r.owner_key)]
        if len(idle) < excess:
            raise ServicesBusy(f"all {self.max_count} {self.kind}s of the deployment are "
                               "starting or answering requests; try again in a moment",
                               code=f"{self.kind}s_busy")
        for row in idle[:excess]:
            await self.stop(row)

    # -- using --------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def using(self, row: ServiceRef) -> Any:
        """Count a request in flight (an idle sweep skips it) and record the use, throttled."""
        self.in_use[row.owner_key] = self.in_use.get(row.owner_key, 0) + 1
        try:
            yield
        finally:
            self.in_use[row.owner_key] -= 1
            if not self.in_use[row.owner_key]:
                del self.in_use[row.owner_key]
            self.touch(row)

    def touch(self, row: ServiceRef) -> None:
        """Record a use in the row, at most every `touch_every_s` per row and process."""
        now = time.monotonic()
        if now - self._touched.get(row.owner_key, -1e9) < self.touch_every_s:
            return
        self._touched[row.owner_key] = now
        self._background(self.db(records.touch, row.id))

    @property
    def touch_every_s(self) -> float:
        """How stale a row's `last_used_at` may be: a small part of the idle time."""
        return min(30.0, self.idle_s / 4)

    async def running(self, *, training_id: int | None = None) -> list[ServiceRef]:
        """The starting and ready services of the deployment (of one training if given)."""
        rows: list[ServiceRef] = await self.db(records.rows, self.kind, training_id=training_id)
        return [r for r in rows if r.state in (ServiceState.READY, ServiceState.STARTING)
                and not r.detached and not is_gone(r)]

    # -- stopping -----------------------------------------------------------------------------

    async def stop(self, row: ServiceRef) -> None:
        """Stop a service from this process: mark it `stopping`, signal its shim (on this host)
        and wait until it is gone, then drop its row. On another host its sweeper does it."""
        if row.state != ServiceState.STOPPING:
            await self.db(records.mark_stopping, row)
        if not row.here:
            return
        if row.pid is not None and records.process_alive(row.pid, since=row.started_at):
            await asyncio.to_thread(kill_process_tree, row.pid, self.grace_s)
        child = self.children.get(row.pid) if row.pid is not None else None
        if child is not None:
            await self._reap(child)
        await self.db(records.remove, row.id, pid=row.pid)
        self._gone(row.owner_key, row.socket)
        log.info("stopped %s pid %s of %s", self.kind, row.pid, row.owner_key)

    async def stop_training(self, training_id: int) -> int:
        """Stop every service of a training in the deployment; how many there were."""
        rows: list[ServiceRef] = await self.db(records.rows, self.kind, training_id=training_id)
        for row in rows:
            await self.stop(row)
        return len(rows)

    async def stop_detached(self) -> int:
        """Stop the services whose training or repository was deleted (after its commit)."""
        found: list[ServiceRef] = await self.db(records.detached_rows)
        mine = [r for r in found if r.kind == self.kind]
        for row in mine:
            await self.stop(row)
        return len(mine)

    async def _kill_child(self, child: Child, *, drop_row: bool = True) -> None:
        await asyncio.to_thread(kill_process_tree, child.pid, self.grace_s)
        await self._reap(child)
        if drop_row:
            await self.db(records.remove, child.row_id, pid=child.pid)

    async def _reap(self, child: Child) -> None:
        """Wait for a child that was signalled or exited, forget it and remove its box."""
        await asyncio.to_thread(supervise.wait_exit, child.spawned.proc, 5.0)
        if child.spawned.proc.poll() is None:
            return
        if self.children.pop(child.pid, None) is not None:
            shutil.rmtree(child.spawned.box_root, ignore_errors=True)
            self._gone(child.owner_key, child.spawned.socket)

    def _gone(self, owner_key: str, socket: str | None) -> None:
        self._touched.pop(owner_key, None)
        if self.on_gone is not None:
            self.on_gone(owner_key, socket)

    # -- upkeep -------------------------------------------------------------------------------

    def start_upkeep(self) -> None:
        """Start the sweeper (idle expiry, stop requests, rows of dead processes)."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def sweep(self) -> int:
        """One round over this kind's rows: stop this host's idle ones, drop what is gone, and
        drop the rows other hosts abandoned; how many services of this host it stopped."""
        stopped = 0
        cutoff = records.idle_cutoff(self.idle_s)
        rows: list[ServiceRef] = await self.db(records.rows, self.kind)
        for row in rows:
            if not row.here:
                # Its host's sweeper would have stopped it long ago: that host is gone.
                if records.abandoned(row, idle_s=self.idle_s) \
                        and await self.db(records.drop_abandoned, row):
                    log.warning("dropped the %s row of %s on host %s, unused since %s: no "
                                "process of that host looks after it any more", self.kind,
                                row.owner_key, row.host, f"{row.last_used_at:%Y-%m-%d %H:%M:%S}")
                continue
            if self.in_use.get(row.owner_key):  # a long request: its row must not look unused
                self.touch(row)
            if row.detached or row.state == ServiceState.STOPPING or (
                    row.state == ServiceState.READY and row.last_used_at < cutoff
                    and not self.in_use.get(row.owner_key) and not is_gone(row)) or (
                    records.abandoned(row, idle_s=self.idle_s) and not is_gone(row)):
                await self.stop(row)
                stopped += 1
            elif row.state == ServiceState.FAILED:
                if (utcnow() - row.last_used_at).total_seconds() > FAILED_KEPT_S:
                    await self.db(records.remove, row.id, pid=row.pid)
            elif is_gone(row):
                await self.db(records.remove, row.id, pid=row.pid)
                self._gone(row.owner_key, row.socket)
        return stopped

    async def _sweep_forever(self) -> None:
        period = min(max(self.idle_s / 4, 0.5), 30.0)
        while True:
            await asyncio.sleep(period)
            try:
                await self.sweep()
            except Exception:  # upkeep must outlive a database hiccup or one failed stop
                log.exception("%s upkeep failed", self.kind)

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        """Notice at once when a child exits (crashed, or signalled by another process)."""
        while self.children:
            await asyncio.sleep(0.2)
            for child in [c for c in self.children.values()
                          if c.ready and c.spawned.proc.poll() is not None]:
                code = child.spawned.proc.returncode
                try:
                    await self.db(records.remove, child.row_id, pid=child.pid)
                except Exception:  # the sweeper removes the row later
                    log.exception("dropping the row of %s pid %s failed", self.kind, child.pid)
                await self._reap(child)
                log.info("%s pid %s of %s exited (%s)", self.kind, child.pid, child.owner_key,
                         code)

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        """Stop every service this API process started, and the upkeep."""
        for task in [self._sweeper, self._reaper, *self._tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._sweeper = self._reaper = None
        for child in list(self.children.values()):
            try:
                await self._kill_child(child)
            except Exception:  # the database may be gone already: the process is what matters
                log.exception("stopping %s pid %s failed", self.kind, child.pid)
                await self._reap(child)


def _detail(exc: BaseException) -> str:
    if isinstance(exc, AppError):
        return exc.detail
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
