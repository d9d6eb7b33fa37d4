"""Process trees: find every descendant of a process and stop them all.

`kill_process_tree(pid, grace_s)` is the one way the platform stops something it started: it
works from a signal handler or a `finally`, and takes `pid` also as a process-group id (the
supervised processes of `app.procs.supervise` lead their own session and group).
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
    procs |= descendants(filter(is_live, procs))
    send_signal(pid, procs, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any_alive(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
        procs |= descendants(filter(is_live, procs))
    procs |= descendants(filter(is_live, procs))
    send_signal(pid, procs, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while any_alive(procs) and time.monotonic() < deadline:
        time.sleep(0.02)


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


def send_signal(pgid: int, procs: Iterable[psutil.Process], signum: int) -> None:
    """Signal a process group and each of `procs`, ignoring the ones already gone.

    SIGTERM skips bubblewrap's own processes (see SANDBOX_SHELL_NAMES); they die with SIGKILL.
    """
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
