"""Supervisor shim between the worker and a training: nothing the training starts outlives it.

`worker.runner.run` starts it, in the training's own session and process group, as
``python -I -S reaper.py PARENT_PID GRACE_S -- ARGV...``. It:

- makes itself a *child subreaper* (PR_SET_CHILD_SUBREAPER), so descendants that double-fork
  or call setsid() are re-parented to it instead of init and stay inside its tree;
- asks for SIGHUP when the worker that started it dies (PR_SET_PDEATHSIG), so a lost worker
  does not leave a training running;
- spawns ARGV, waits for it, then stops every remaining descendant (SIGTERM, GRACE_S, SIGKILL),
  reaps them all and exits with ARGV's status (the same exit code, or death by the same signal).

SIGTERM to the shim (sent to the whole group by the runner) or SIGHUP starts that shutdown at
once. On SIGTERM only descendants outside the group get a SIGTERM from the shim, because the
group already received one; a program is never sent SIGTERM twice.
Only the standard library is used: the shim runs before any site-packages are on the path.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from types import FrameType

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
EXIT_CANNOT_START = 127


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl failed")


def descendants(root: int) -> list[int]:
    """Pids of every live or zombie descendant of `root`, from a scan of /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _reap(program: int, status: int | None) -> int | None:
    """Reap every exited child without blocking; return the program's wait status once known."""
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == program:
            status = st


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _shutdown(program: int, status: int | None, grace_s: float, skip_group: bool) -> int | None:
    """SIGTERM all descendants, wait up to grace_s, SIGKILL the rest; reap everything."""
    me, group = os.getpid(), os.getpgrp()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    pids = descendants(me)
    if skip_group:
        pids = [p for p in pids if _pgid(p) != group]
    _signal(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while True:
        status = _reap(program, status)
        if not descendants(me) or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    while pids := descendants(me):
        # Killing a parent re-parents its children to us: repeat until nothing is left.
        _signal(pids, signal.SIGKILL)
        time.sleep(0.01)
        status = _reap(program, status)
    return _reap(program, status)


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return -1


def _exit_like(status: int | None) -> None:
    if status is not None and os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.kill(os.getpid(), signum)
    code = os.waitstatus_to_exitcode(status) if status is not None else 128 + signal.SIGTERM
    sys.exit(code)


def main(args: list[str]) -> None:
    """Run `PARENT_PID GRACE_S -- ARGV...` as described in the module docstring."""
    parent, grace_s, sep, argv = int(args[0]), float(args[1]), args[2], args[3:]
    if sep != "--" or not argv:
        sys.exit("usage: reaper.py PARENT_PID GRACE_S -- ARGV...")
    stop_signals = {signal.SIGTERM, signal.SIGHUP}
    for signum in stop_signals:
        signal.signal(signum, _raise_stop)
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGHUP)
    if os.getppid() != parent:
        sys.exit("[trainyard] the worker went away before the training started")
    try:
        program = os.posix_spawn(argv[0], argv, os.environ, setsigmask=(),
                                 setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    except OSError as exc:
        print(f"[trainyard] cannot start {argv[0]}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(EXIT_CANNOT_START)
    status: int | None = None
    stop: int | None = None
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
        while status is None:
            pid, st = os.waitpid(-1, 0)
            if pid == program:
                status = st
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    except _Stop as exc:
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        stop = exc.signum
    except ChildProcessError:
        pass
    status = _shutdown(program, status, grace_s, skip_group=stop == signal.SIGTERM)
    _exit_like(status)


if __name__ == "__main__":
    main(sys.argv[1:])
