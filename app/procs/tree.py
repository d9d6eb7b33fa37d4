"""Process trees: find every descendant of a process and stop them all.

`kill_process_tree(pid, grace_s)` is the one way the platform stops something it started: it
works from a signal handler or a `finally`, and takes `pid` also as a process-group id (the
supervised processes of `app.procs.supervise` lead their own session and group).
`TreeWatch` remembers a running tree's processes so that one that left it is stopped with it,
`kill_descendants` stops everything below a process (`trainyard up` on its way out),
`terminate_grandchildren` asks what a process's children started to stop (a worker shutting
down), and `pid_runs` tells whether a recorded pid is still the program it was.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable

import psutil

KILL_WAIT_S = 5.0
# bubblewrap's own processes: SIGTERM would make them kill the sandbox at once (SIGKILL to its
# pid 1), so the polite signal goes to the processes inside it and bwrap only gets SIGKILL.
SANDBOX_SHELL_NAMES = frozenset({"bwrap"})


def kill_process_tree(pid: int, grace_s: float, *, known: Iterable[psutil.Process] = ()) -> None:
    """Stop a process, its process group and all its descendants: SIGTERM, grace_s, SIGKILL.

    `pid` is also taken as a process-group id. `known` adds processes seen earlier that may
    have left the tree. Returns once every one is gone or a zombie; the caller reaps its own
    child.
    """
    procs = set(known)
    try:
        procs.add(psutil.Process(pid))
    except psutil.NoSuchProcess:
        pass
    _stop(procs, grace_s, pgid=pid)


def kill_descendants(grace_s: float, *, pid: int | None = None) -> None:
    """Stop every descendant of `pid` (this process by default), not `pid` itself: SIGTERM,
    grace_s, then SIGKILL to what remains or appeared meanwhile."""
    root = os.getpid() if pid is None else pid
    _stop(descendants((), roots={root}), grace_s, pgid=None, roots={root})


def _stop(procs: set[psutil.Process], grace_s: float, *, pgid: int | None,
          roots: Iterable[int] = ()) -> None:
    """SIGTERM `procs`, their descendants and the group `pgid`; SIGKILL after grace_s."""
    roots = set(roots)
    procs |= descendants(filter(is_live, procs), roots=roots)
    send_signal(pgid, procs, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any_alive(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
        procs |= descendants(filter(is_live, procs), roots=roots)
    procs |= descendants(filter(is_live, procs), roots=roots)
    send_signal(pgid, procs, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while any_alive(procs) and time.monotonic() < deadline:
        time.sleep(0.02)


class TreeWatch:
    """The processes of a running supervised tree seen so far: `refresh()` while it runs,
    `kill(grace_s)` stops the tree and every process seen in it, even one that left it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: set[psutil.Process] = set()

    def refresh(self) -> None:
        """Add the tree's current processes; forget the seen ones that are gone."""
        self.seen = refresh(self.pid, self.seen)

    def kill(self, grace_s: float) -> None:
        """`kill_process_tree` of the tree's root and every process seen."""
        kill_process_tree(self.pid, grace_s, known=self.seen)


def terminate_grandchildren(pid: int | None = None) -> int:
    """SIGTERM what the children of `pid` (this process by default) started, without waiting.

    A grandchild that leads its own process group (a supervised tree's shim, a pip install)
    gets the signal for its whole group, any other one alone. Returns how many were signalled.
    """
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return 0
    count = 0
    for child in children:
        try:
            grandchildren = child.children()
        except psutil.Error:
            continue
        for proc in grandchildren:
            try:
                if os.getpgid(proc.pid) == proc.pid:
                    os.killpg(proc.pid, signal.SIGTERM)
                else:
                    proc.terminate()
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
            count += 1
    return count


def pid_runs(pid: int, *, argument: str | None = None, started_by: float | None = None) -> bool:
    """Whether `pid` runs (exists, is not a zombie, may be inspected) and, with `argument`, has
    it as one of its command-line arguments, and with `started_by` (a POSIX time) was started
    no later than that (a recorded pid may have been reused since)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if started_by is not None and proc.create_time() > started_by:
            return False
        return argument is None or argument in proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def refresh(pid: int, seen: set[psutil.Process]) -> set[psutil.Process]:
    """The live descendants of `pid` and of those seen before, plus the seen ones still live."""
    live = {p for p in seen if is_live(p)}
    return live | descendants(live, roots={pid})


def descendants(
    procs: Iterable[psutil.Process], *, roots: Iterable[int] = ()
) -> set[psutil.Process]:
    """Every descendant of the given processes (and root pids), from one scan of the table."""
    children: dict[int, list[psutil.Process]] = {}
    for proc in psutil.process_iter(["ppid"]):
        children.setdefault(proc.info["ppid"], []).append(proc)
    found: set[psutil.Process] = set()
    todo = [*roots, *(p.pid for p in procs)]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child.pid)
    return found


def send_signal(pgid: int | None, procs: Iterable[psutil.Process], signum: int) -> None:
    """Signal a process group (unless None) and each of `procs`, ignoring the ones gone.

    SIGTERM skips bubblewrap's own processes (see SANDBOX_SHELL_NAMES); they die with SIGKILL.
    """
    if pgid is not None:
        try:
            os.killpg(pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass
    for proc in procs:
        try:
            if signum == signal.SIGTERM and proc.name() in SANDBOX_SHELL_NAMES:
                continue
            proc.send_signal(signum)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def is_live(proc: psutil.Process) -> bool:
    """Whether the process runs (exists and is not a zombie)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def any_alive(procs: Iterable[psutil.Process]) -> bool:
    """Whether any of the processes still runs."""
    return any(is_live(p) for p in procs)


def has_exited(pid: int) -> bool:
    """Whether our child has exited, without reaping it."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def signal_name(signum: int) -> str:
    """`SIGKILL` for 9; the number itself for a signal without a name (real-time ones)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
