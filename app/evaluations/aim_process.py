"""Aim UI processes of this API process: a pre-warmed spare, and launching a job in it.

Each Aim UI runs `python -m app.evaluations.aim_server` under the reaper shim
(`app.procs.supervise`), in the sandbox when `app.procs.sandbox.state()` allows, so it dies
with the API process and takes everything it started along. Spawn only from the event loop's
thread: the death signal follows the *thread* that forked, and thread-pool threads come and go.
Once it has a job, a process is handed over to the launcher (`app.launcher`), which records,
reaps and stops it like every long-lived service.

Every process gets a box (`app.procs.services`): `run/aim/<token>/` in the data dir's
runtime area (0700, the platform's), holding `warm.log` (what it printed before it got a job),
`build.json` (the build it was given) and `box/`, its only writable folder: the socket
`aim.sock`, the copies of what it reads, the repository it serves, its HOME. In the sandbox it
sees the runtime and Trainyard's `app/` package read-only, the repository template read-only,
its box, a private /tmp, no network and no platform process. The spare is started before
anyone knows what it will serve, so whatever it reads is copied into its box before the spec
is sent: a private copy, which Aim may write to (it indexes the repository and keeps its UI
tables there). The spec arrives on stdin, a unix socket, with the log's file descriptor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import storage
from app.procs import sandbox as sandboxing
from app.procs import services, supervise
from app.procs.tree import kill_process_tree, pid_runs

logger = logging.getLogger(__name__)

SERVER_MODULE = "app.evaluations.aim_server"
ROOT = Path(__file__).resolve().parents[2]
APP_PACKAGE = ROOT / "app"
SOCKET_NAME = "aim.sock"

# Builds the box's inputs and returns the spec (without `socket`); runs in a thread.
Stager = Callable[[Path], dict[str, Any]]


def evaluations_root() -> Path:
    """Trainyard's own evaluation files that belong to no training (template, comparisons)."""
    return storage.data_root() / "evaluations"


def template_dir() -> Path:
    """The empty Aim repository copied for each repository Trainyard builds."""
    return evaluations_root() / "aim-template"


def box_of(socket_path: str | Path) -> Path:
    """The platform's folder of the Aim process listening on `socket_path`."""
    return Path(socket_path).parent.parent


def child_env(home: Path, tmp: Path) -> dict[str, str]:
    """Aim's whole environment, made from scratch: nothing of Trainyard's settings or secrets."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": str(home), "TMPDIR": str(tmp),
            "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def is_aim_process(pid: int) -> bool:
    """True when `pid` is a running (not zombie) Aim UI process of Trainyard."""
    return pid_runs(pid, argument=SERVER_MODULE)


@dataclass
class AimChild:
    """A started Aim process, its box and the channel its spec goes through."""

    proc: supervise.Started
    box: services.Box
    channel: socket.socket | None

    @property
    def socket(self) -> Path:
        """Where it will serve."""
        return self.box.inner / SOCKET_NAME


class AimProcesses:
    """The Aim UI processes this API process started, plus one spare warmed up ahead of need."""

    def __init__(self) -> None:
        self._spare: AimChild | None = None
        self._spare_since = 0.0
        self._children: dict[int, AimChild] = {}
        self._template_maker: supervise.Started | None = None

    def _ensure_template(self) -> Path | None:
        """The template if it exists; otherwise start making it (once) and return None."""
        template = template_dir()
        if (template / ".aim").is_dir():
            return template
        if self._template_maker is None or self._template_maker.poll() is not None:
            # Only Trainyard's code and no user data run here: no sandbox is needed.
            evaluations_root().mkdir(parents=True, exist_ok=True)
            home = storage.runtime_dir("aim", "template-home")
            with (evaluations_root() / "template.log").open("ab") as log:
                self._template_maker = supervise.start(
                    [sys.executable, "-m", SERVER_MODULE, "--make-template", str(template)],
                    cwd=ROOT, env=child_env(home, home), stdout=log, grace_s=1.0)
        return None

    def _spawn(self) -> AimChild:
        box = services.new_box(storage.runtime_dir("aim"))
        template = self._ensure_template()
        argv = [sys.executable, "-m", SERVER_MODULE]
        if template is not None:
            argv += ["--template", str(template)]
        sandbox = None
        if sandboxing.state().enabled:
            # Not the box: bwrap changes into it before it drops root, without the capability
            # to enter a folder of the sandbox uid's.
            sandbox = services.service_sandbox(
                box, cwd=Path("/tmp"), pythons=[sys.executable],
                read_only=[APP_PACKAGE, *([template] if template is not None else [])])
            env = child_env(box.home, Path("/tmp"))
            services.hand_over(box)
        else:
            env = child_env(box.home, box.home)
        ours, theirs = socket.socketpair()
        try:
            with (box.root / "warm.log").open("ab") as log:
                proc = supervise.start(argv, cwd=box.inner, env=env, stdout=log, grace_s=1.0,
                                       sandbox=sandbox, stdin=theirs.fileno())
        except BaseException:
            ours.close()
            storage.remove_tree(box.root)
            raise
        finally:
            theirs.close()
        return AimChild(proc, box, ours)

    def prewarm(self) -> None:
        """Have a spare process importing Aim in the background (a no-op if one is ready)."""
        if self._spare is None or self._spare.proc.poll() is not None:
            if self._spare is not None:
                self._discard(self._spare)
                self._spare = None
            try:
                self._spare = self._spawn()
            except OSError:  # the spare only saves time: a launch reports the same error
                logger.exception("the spare Aim process could not start")
        self._spare_since = time.monotonic()

    def retire_spare(self, *, idle_s: float) -> None:
        """Stop the spare when nobody looked at an evaluation for `idle_s` seconds."""
        if self._spare is not None and time.monotonic() - self._spare_since > idle_s:
            spare, self._spare = self._spare, None
            self._children[spare.proc.pid] = spare  # stopped and reaped like the others
            if spare.channel is not None:  # end of input: it exits without serving
                spare.channel.close()
                spare.channel = None

    async def launch(self, stage: Stager, *, log: Path) -> AimChild:
        """Hand a job to the spare (or a fresh process) and hand the process over to the
        caller (the launcher reaps it and removes its box from then on)."""
        child = self._spare if self._spare is not None and self._spare.proc.poll() is None \
            else None
        self._spare = None
        for attempt in range(2):
            if child is None:
                child = self._spawn()
            self._children[child.proc.pid] = child
            try:
                spec = await asyncio.to_thread(self._stage, stage, child.box)
                self._send(child, {**spec, "socket": str(child.socket)}, log=log)
                break
            except (BrokenPipeError, ConnectionError):  # it died just now: use a fresh one
                await self.stop(child.proc.pid, grace_s=0.5)
                child = None
                if attempt:
                    raise
            except BaseException:
                await self.stop(child.proc.pid, grace_s=0.5)
                raise
        assert child is not None
        del self._children[child.proc.pid]
        self.prewarm()
        return child

    @staticmethod
    def _stage(stage: Stager, box: services.Box) -> dict[str, Any]:
        spec = stage(box.inner)
        services.hand_over(box)  # the copies become the sandboxed process's to write
        return spec

    def _send(self, child: AimChild, spec: dict[str, Any], *, log: Path) -> None:
        assert child.channel is not None
        if spec.get("build"):
            (child.box.root / "build.json").write_text(
                json.dumps(spec["build"]["fingerprint"]))
        log.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        try:
            socket.send_fds(child.channel, [(json.dumps(spec) + "\n").encode()], [fd])
        finally:
            os.close(fd)
            child.channel.close()
            child.channel = None

    def reap(self) -> dict[int, int]:
        """Forget exited processes not handed over (retired spares, failed launches) and drop
        their boxes; returns their pids with exit codes."""
        gone = {pid: code for pid, child in self._children.items()
                if (code := child.proc.poll()) is not None}
        for pid in gone:
            self._discard(self._children.pop(pid))
        return gone

    async def stop(self, pid: int | None, *, grace_s: float = 5.0) -> None:
        """Stop the tree of `pid` (its reaper shim): SIGTERM, then SIGKILL after `grace_s`."""
        if pid is None or not (pid in self._children or is_aim_process(pid)):
            return
        await asyncio.to_thread(kill_process_tree, pid, grace_s)
        own = self._children.pop(pid, None)
        if own is not None:
            supervise.wait_exit(own.proc, 2)
            self._discard(own)

    def _discard(self, child: AimChild) -> None:
        if child.channel is not None:
            child.channel.close()
            child.channel = None
        storage.remove_tree(child.box.root)

    async def shutdown(self) -> None:
        """Stop every process this API process started, the spare included."""
        if self._spare is not None:
            self._children[self._spare.proc.pid] = self._spare
            self._spare = None
        await asyncio.gather(*(self.stop(pid, grace_s=3.0) for pid in list(self._children)))
        if self._template_maker is not None and self._template_maker.poll() is None:
            await asyncio.to_thread(kill_process_tree, self._template_maker.pid, 1.0)
            self._template_maker.wait()
