"""Supervisor shim between the platform and user code: nothing the code starts outlives it.

`app.procs.supervise.start` starts it, in its own session and process group, as
``python -I -S reaper.py PARENT_PID GRACE_S [--rlimit NAME=VALUE]... [--sandboxed] -- ARGV...``.
It:

- makes itself a *child subreaper* (PR_SET_CHILD_SUBREAPER), so descendants that double-fork
  or call setsid() are re-parented to it instead of init and stay inside its tree;
- asks for SIGHUP when the worker that started it dies (PR_SET_PDEATHSIG), so a lost worker
  does not leave a training running;
- sets each `--rlimit` (e.g. RLIMIT_NPROC=512) on itself, so ARGV and all it starts inherit them;
- spawns ARGV, waits for it, then stops every remaining descendant (SIGTERM, GRACE_S, SIGKILL),
  reaps them all and exits with ARGV's status (the same exit code, or death by the same signal).

With `--sandboxed`, ARGV is a bubblewrap command line: it is spawned in a process group of its
own (a SIGTERM to the shim's group must not reach bwrap, which would SIGKILL the sandbox at
once), bwrap's own processes get only SIGKILL, and bwrap's exit codes 129-192 (its way of
saying "killed by signal N-128") are turned back into death by that signal.

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
from collections.abc import Callable
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


def _shutdown(program: int, status: int | None, grace_s: float, skip_group: bool,
              spare: Callable[[int], bool] | None = None) -> int | None:
    """SIGTERM all descendants, wait up to grace_s, SIGKILL the rest; reap everything.

    `spare(pid)` true: that process gets no SIGTERM (only the final SIGKILL).
    """
    me, group = os.getpid(), os.getpgrp()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    pids = descendants(me)
    if skip_group:
        pids = [p for p in pids if _pgid(p) != group]
    if spare is not None:
        pids = [p for p in pids if not spare(p)]
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


def _parse(args: list[str]) -> tuple[int, float, dict[str, int], bool, list[str]]:
    usage = "usage: reaper.py PARENT_PID GRACE_S [--rlimit NAME=VALUE]... [--sandboxed] -- ARGV"
    if len(args) < 4 or "--" not in args[2:]:
        sys.exit(usage)
    parent, grace_s = int(args[0]), float(args[1])
    sep = args.index("--", 2)
    options, argv = args[2:sep], args[sep + 1 :]
    limits: dict[str, int] = {}
    sandboxed = False
    while options:
        option = options.pop(0)
        if option == "--sandboxed":
            sandboxed = True
        elif option == "--rlimit" and options:
            name, _, value = options.pop(0).partition("=")
            limits[name] = int(value)
        else:
            sys.exit(usage)
    if not argv:
        sys.exit(usage)
    return parent, grace_s, limits, sandboxed, argv


def _set_limits(limits: dict[str, int]) -> None:
    import resource

    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


def _is_sandbox_shell(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().strip() == b"bwrap"
    except OSError:
        return False


def _spawn(argv: list[str], *, own_group: bool) -> int:
    defaults = (signal.SIGPIPE, signal.SIGXFSZ)
    if own_group:
        return os.posix_spawn(argv[0], argv, os.environ, setsigmask=(), setsigdef=defaults,
                              setpgroup=0)
    return os.posix_spawn(argv[0], argv, os.environ, setsigmask=(), setsigdef=defaults)


def main(args: list[str]) -> None:
    """Run `PARENT_PID GRACE_S [options] -- ARGV...` as described in the module docstring."""
    parent, grace_s, limits, sandboxed, argv = _parse(args)
    stop_signals = {signal.SIGTERM, signal.SIGHUP}
    for signum in stop_signals:
        signal.signal(signum, _raise_stop)
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGHUP)
    if os.getppid() != parent:
        sys.exit("[trainyard] the worker went away before the training started")
    try:
        _set_limits(limits)
    except (OSError, ValueError) as exc:
        print(f"[trainyard] cannot set the limits {limits}: {exc}", file=sys.stderr)
        sys.exit(EXIT_CANNOT_START)
    try:
        program = _spawn(argv, own_group=sandboxed)
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
    status = _shutdown(program, status, grace_s, skip_group=stop == signal.SIGTERM,
                       spare=_is_sandbox_shell if sandboxed else None)
    if sandboxed and status is not None and os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        if 128 < code <= 128 + 64:
            status = code - 128  # a wait status meaning "killed by signal code-128"
    _exit_like(status)


if __name__ == "__main__":
    main(sys.argv[1:])
