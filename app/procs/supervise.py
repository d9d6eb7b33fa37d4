"""Start a supervised process tree: user code under the reaper shim, optionally sandboxed.

`start(argv, cwd=..., env=..., stdout=..., grace_s=..., sandbox=spec)` is the one way the
platform starts code it does not trust (trainings, pip installs, predictors, Aim UIs):

- the process runs under the reaper shim (`app/procs/reaper.py`) in a new session, so its
  pid is also its process-group id, and `app.procs.tree.kill_process_tree(pid, grace_s)` stops
  everything it started; the shim dies with the thread that called `start` (PR_SET_PDEATHSIG),
  taking the tree with it;
- `env` is the COMPLETE environment (build it with `app.procs.environ.build_env`); nothing
  of the caller's environment is inherited; stdin is /dev/null unless `stdin` gives a file
  descriptor (a socket the platform talks to the program on); `stdout` (a file opened for
  appending, or None) gets stdout and stderr merged;
- with `sandbox` (an `app.procs.sandbox.SandboxSpec`) the command runs inside bubblewrap
  (`app.procs.sandbox.wrap`) and `sandbox.limits` become rlimits; `cwd` is then the sandbox's
  working folder (`sandbox.cwd`) and Popen starts in "/". Without it, `limits` may still be
  given for rlimits on an unsandboxed run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import psutil

from app.procs import sandbox as sandboxing

REAPER = Path(__file__).with_name("reaper.py")

Started = subprocess.Popen[bytes]  # a tree started by `start`: its pid is the shim's


def wait_exit(proc: Started, timeout_s: float) -> int | None:
    """Wait up to `timeout_s` for a started tree's shim to exit: its exit code, or None."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None


def shim_command(grace_s: float, *, rlimits: Mapping[str, int] | None = None,
                 sandboxed: bool = False) -> list[str]:
    """The reaper shim's command line, up to and including the `--` before the program."""
    command = [sys.executable, "-I", "-S", str(REAPER), str(os.getpid()), str(grace_s)]
    for name, value in (rlimits or {}).items():
        command += ["--rlimit", f"{name}={value}"]
    if sandboxed:
        command.append("--sandboxed")
    return [*command, "--"]


def start(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], stdout: IO[Any] | None,
          grace_s: float, sandbox: sandboxing.SandboxSpec | None = None,
          limits: sandboxing.Limits | None = None,
          stdin: int = subprocess.DEVNULL) -> Started:
    """Start `argv` as a supervised tree (see the module docstring); raises OSError."""
    if sandbox is not None:
        command = [*shim_command(grace_s, rlimits=sandbox.limits.rlimits(), sandboxed=True),
                   *sandboxing.wrap(argv, sandbox)]
        workdir = Path("/")
    else:
        rlimits = limits.rlimits() if limits is not None else None
        command = [*shim_command(grace_s, rlimits=rlimits), *argv]
        workdir = cwd
    return subprocess.Popen(command, cwd=workdir, env=dict(env), stdin=stdin,
                            stdout=stdout, stderr=subprocess.STDOUT if stdout else None,
                            start_new_session=True)


def is_shim(proc: psutil.Process) -> bool:
    """Whether a process is a reaper shim (each leads one supervised tree's process group)."""
    try:
        return str(REAPER) in proc.cmdline()
    except psutil.Error:
        return False
