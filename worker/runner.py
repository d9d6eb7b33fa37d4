"""The job runner: run a training's boot file as a supervised process tree.

Contract
--------
- `build_argv` makes ``[python, boot_file, "--name=value", ...]`` and
  `app.procs.environ.build_env` the COMPLETE environment of the training: a minimal base (PATH,
  HOME, TMPDIR, LANG/LC_ALL, PYTHONUNBUFFERED=1), the user's `env_variables` on top, then the
  platform's `extra`. Nothing of the worker's own environment reaches the training (no
  TRAINYARD_*, URLs or tokens).
- `run(spec, should_stop=...)` appends one ``[trainyard] $ command`` line to `spec.log_path`,
  then starts the command in a new session (stdin from /dev/null, stdout and stderr appended,
  merged, to the log as they are written) under the reaper shim (`app/procs/reaper.py`), which
  keeps every descendant in its tree, even those that call setsid() or double-fork. Every
  `poll_s` seconds it checks, in order: did the program exit? does `should_stop()` say the user
  asked to terminate? is the wall clock past `spec.timeout_s`? On stop or timeout the process
  group and every descendant seen get SIGTERM, then SIGKILL after `spec.grace_s`; nothing
  survives, everything is reaped. It returns a `RunResult` and does not raise for anything the
  program does; the outcome line is appended to the log as ``[trainyard] ...``.
  With `spec.sandbox` the command runs inside bubblewrap (`app.procs.sandbox`), its limits as
  rlimits; paths in argv and env must then be the paths as seen inside the sandbox.
  `should_stop` runs on every poll, so it should be cheap (throttle database reads in it).
  `on_started` gets the pid of the shim, which is also the process-group id.
- Worker shutdown: if `run` is interrupted by an exception (SystemExit or KeyboardInterrupt
  raised by a signal handler, Celery's time-limit exceptions, an error in `should_stop`) it
  kills the tree (with the grace period) before re-raising. If the worker dies outright
  (SIGKILL, OOM), the kernel sends SIGHUP to the shim (PR_SET_PDEATHSIG), which stops the
  training the same way; the shim is tied to the thread that called `run`, which lives at least
  as long as `run` does. `app.procs.tree.kill_process_tree(pid, grace_s)` works from a signal
  handler or a `finally`, given the pid that `on_started` reported.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from app.procs import supervise
from app.procs.environ import BASE_PATH
from app.procs.logfiles import log_note, tail_lines
from app.procs.sandbox import SandboxSpec
from app.procs.tree import TreeWatch, has_exited, signal_name

_ARG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class Outcome(StrEnum):
    """How a run ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    TERMINATED = "terminated"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class RunSpec:
    """What to run and under which limits."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    log_path: Path
    timeout_s: float
    grace_s: float = 5.0
    error_tail_lines: int = 40
    sandbox: SandboxSpec | None = None


@dataclass(frozen=True)
class RunResult:
    """The end of a run: `exit_code` is negative for a signal, None if it never started."""

    outcome: Outcome
    exit_code: int | None
    duration_s: float
    reason: str
    error_tail: str = ""


def build_argv(python: str, boot_file: Path, args: Sequence[tuple[str, str]]) -> list[str]:
    """The command line: the interpreter, the boot file, then one `--name=value` per argument."""
    argv = [python, str(boot_file)]
    for name, value in args:
        if not _ARG_NAME.fullmatch(name):
            raise ValueError(f"invalid argument name {name!r}")
        argv.append(f"--{name}={value}")
    return argv


def run(
    spec: RunSpec,
    *,
    should_stop: Callable[[], bool],
    on_started: Callable[[int], None] | None = None,
    poll_s: float = 0.25,
) -> RunResult:
    """Run `spec` to its end under supervision (see the module docstring)."""
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    for name in ("HOME", "TMPDIR"):
        if spec.env.get(name, "").startswith("/"):
            Path(spec.env[name]).mkdir(parents=True, exist_ok=True)
    log_note(spec.log_path, f"$ {shlex.join(spec.argv)}")
    started = time.monotonic()
    program = spec.argv[0]
    if "/" not in program:
        program = shutil.which(program, path=spec.env.get("PATH", BASE_PATH)) or program
    if not os.access(program, os.X_OK) or os.path.isdir(program):
        return _cannot_start(spec, f"{spec.argv[0]} is not an executable file")
    try:
        with open(spec.log_path, "ab", buffering=0) as log:
            proc = supervise.start([program, *spec.argv[1:]], cwd=spec.cwd, env=spec.env,
                                   stdout=log, grace_s=spec.grace_s, sandbox=spec.sandbox)
    except OSError as exc:
        return _cannot_start(spec, f"{exc.strerror or exc}: {exc.filename or spec.argv[0]}")
    watch = TreeWatch(proc.pid)
    stop: Outcome | None = None
    try:
        if on_started is not None:
            on_started(proc.pid)
        while not has_exited(proc.pid):
            watch.refresh()
            if should_stop():
                stop = Outcome.TERMINATED
            elif time.monotonic() - started >= spec.timeout_s:
                stop = Outcome.TIMEOUT
            if stop is not None:
                break
            time.sleep(poll_s)
        # The shim is not reaped yet, so its pid (the group id) cannot be reused meanwhile.
        watch.kill(spec.grace_s)
    except BaseException:
        watch.kill(spec.grace_s)
        proc.wait()
        log_note(spec.log_path, "stopped: the worker was interrupted")
        raise
    code = proc.wait()
    return _result(spec, stop, code, time.monotonic() - started)


def _result(spec: RunSpec, stop: Outcome | None, code: int, duration_s: float) -> RunResult:
    outcome: Outcome
    if stop is Outcome.TERMINATED:
        outcome, reason = stop, "terminated on request"
    elif stop is Outcome.TIMEOUT:
        outcome, reason = stop, f"ran past the time limit of {spec.timeout_s:g} s"
    elif code == 0:
        outcome, reason = Outcome.COMPLETED, "exited with code 0"
    elif code < 0:
        name = signal_name(-code)
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        outcome, reason = Outcome.FAILED, f"killed by signal {name}{hint}"
    else:
        outcome, reason = Outcome.FAILED, f"exited with code {code}"
    tail = ""
    if outcome in (Outcome.FAILED, Outcome.TIMEOUT):
        tail = tail_lines(spec.log_path, spec.error_tail_lines)
    log_note(spec.log_path, f"{reason} after {duration_s:.1f} s")
    return RunResult(outcome, code, round(duration_s, 3), reason, tail)


def _cannot_start(spec: RunSpec, why: str) -> RunResult:
    reason = f"cannot start the training: {why}"
    log_note(spec.log_path, reason)
    return RunResult(Outcome.FAILED, None, 0.0, reason, reason)
