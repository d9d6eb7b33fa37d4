"""The job runner: run a training's boot file as a supervised process tree.

Contract
--------
- `build_argv` makes ``[python, boot_file, "--name=value", ...]`` and `build_env` the COMPLETE
  environment of the training: a minimal base (PATH, HOME, TMPDIR, LANG/LC_ALL,
  PYTHONUNBUFFERED=1), the user's `env_variables` on top, then the platform's `extra`. Nothing
  of the worker's own environment reaches the training (no TRAINYARD_*, URLs or tokens).
- `run(spec, should_stop=...)` appends one ``[trainyard] $ command`` line to `spec.log_path`,
  then starts the command in a new session (stdin from /dev/null, stdout and stderr appended,
  merged, to the log as they are written) under the reaper shim (`worker/reaper.py`), which
  keeps every descendant in its tree, even those that call setsid() or double-fork. Every
  `poll_s` seconds it checks, in order: did the program exit? does `should_stop()` say the user
  asked to terminate? is the wall clock past `spec.timeout_s`? On stop or timeout the process
  group and every descendant seen get SIGTERM, then SIGKILL after `spec.grace_s`; nothing
  survives, everything is reaped. It returns a `RunResult` and does not raise for anything the
  program does; the outcome line is appended to the log as ``[trainyard] ...``.
  `should_stop` runs on every poll, so it should be cheap (throttle database reads in it).
  `on_started` gets the pid of the shim, which is also the process-group id.
- Worker shutdown: if `run` is interrupted by an exception (SystemExit or KeyboardInterrupt
  raised by a signal handler, Celery's time-limit exceptions, an error in `should_stop`) it
  kills the tree (with the grace period) before re-raising. If the worker dies outright
  (SIGKILL, OOM), the kernel sends SIGHUP to the shim (PR_SET_PDEATHSIG), which stops the
  training the same way; the shim is tied to the thread that called `run`, which lives at least
  as long as `run` does. `kill_process_tree(pid, grace_s)` works from a signal handler or a
  `finally`, given the pid that `on_started` reported.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import psutil

from app.trainings.config_rules import RESERVED_ENV_NAMES, RESERVED_ENV_PREFIXES
from worker.cpu import has_avx512

REAPER = Path(__file__).with_name("reaper.py")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ARG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_KILL_WAIT_S = 5.0
_TAIL_BLOCK = 64 * 1024


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


@dataclass(frozen=True)
class RunResult:
    """The end of a run: `exit_code` is negative for a signal, None if it never started."""

    outcome: Outcome
    exit_code: int | None
    duration_s: float
    reason: str
    error_tail: str = ""


def is_reserved_env_name(name: str) -> bool:
    """Whether a user may not set this environment variable (the platform sets it)."""
    return name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIXES)


def build_argv(python: str, boot_file: Path, args: Sequence[tuple[str, str]]) -> list[str]:
    """The command line: the interpreter, the boot file, then one `--name=value` per argument."""
    argv = [python, str(boot_file)]
    for name, value in args:
        if not _ARG_NAME.fullmatch(name):
            raise ValueError(f"invalid argument name {name!r}")
        argv.append(f"--{name}={value}")
    return argv


def build_env(
    user_env: Mapping[str, str],
    *,
    home: Path,
    runtime_is_mindspore: bool,
    extra: Mapping[str, str] | None = None,
    python: str | None = None,
    tmpdir: Path | None = None,
    cpu_has_avx512: bool | None = None,
) -> dict[str, str]:
    """The complete environment of a training: minimal base, then `user_env`, then `extra`.

    The base locale is C.UTF-8 (LC_ALL too, unless the user sets LANG or an LC_* variable).

    `python`'s folder goes first on PATH so that `python` in a subprocess is the same
    interpreter. On an AVX-512 CPU (detected unless `cpu_has_avx512` says) a MindSpore runtime
    gets ONEDNN_MAX_CPU_ISA=AVX2 unless the user chose an ISA: oneDNN's AVX-512 path in
    MindSpore falls back to reference convolutions, 25-30x slower (measured).
    """
    bad = sorted(n for n in user_env if is_reserved_env_name(n) or not _ENV_NAME.fullmatch(n))
    if bad:
        raise ValueError(f"environment variables that cannot be set: {', '.join(bad)}")
    path = BASE_PATH if python is None else f"{Path(python).parent}:{BASE_PATH}"
    env = {
        "PATH": path,
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "TMPDIR": str(tmpdir if tmpdir is not None else home / "tmp"),
        "PYTHONUNBUFFERED": "1",
    }
    chosen = {**user_env, **(extra or {})}
    if not any(name == "LANG" or name.startswith("LC_") for name in chosen):
        env["LC_ALL"] = "C.UTF-8"
    avx512 = has_avx512() if cpu_has_avx512 is None else cpu_has_avx512
    if runtime_is_mindspore and avx512 and not {"ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"} & set(
        chosen
    ):
        env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    env.update(user_env)
    env.update(extra or {})
    if any("\0" in k or "\0" in v for k, v in env.items()):
        raise ValueError("environment variables cannot contain NUL characters")
    return env


def log_note(log_path: Path, message: str) -> None:
    """Append one `[trainyard] message` line to a training log."""
    with open(log_path, "ab") as log:
        log.write(f"[trainyard] {message}\n".encode())


def tail_lines(path: Path, n: int, *, max_bytes: int = 256 * 1024) -> str:
    """The last `n` lines of a file, reading at most `max_bytes` backwards from its end.

    Each line shows what a terminal would: only the text after its last carriage return.
    """
    if n <= 0:
        return ""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return ""
    with f:
        end = pos = f.seek(0, os.SEEK_END)
        chunks: list[bytes] = []
        newlines = 0
        while pos > 0 and newlines <= n and end - pos < max_bytes:
            step = min(_TAIL_BLOCK, pos, max_bytes - (end - pos))
            pos -= step
            f.seek(pos)
            chunk = f.read(step)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if pos > 0 and len(lines) > 1:
        lines = lines[1:]  # the first one is cut
    tail = [line.rstrip(b"\r").rsplit(b"\r", 1)[-1] for line in lines[-n:]]
    return b"\n".join(tail).decode("utf-8", errors="replace")


def kill_process_tree(pid: int, grace_s: float, *, known: Iterable[psutil.Process] = ()) -> None:
    """Stop a process, its process group and all its descendants: SIGTERM, grace_s, SIGKILL.

    `pid` is also taken as a process-group id (the runner starts each training as a session
    leader). `known` adds processes seen earlier that may have left the tree. Returns once
    every one is gone or a zombie; the caller reaps its own child.
    """
    procs = set(known)
    try:
        procs.add(psutil.Process(pid))
    except psutil.NoSuchProcess:
        pass
    procs |= _descendants(filter(_is_live, procs))
    _send(pid, procs, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _alive(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
        procs |= _descendants(filter(_is_live, procs))
    procs |= _descendants(filter(_is_live, procs))
    _send(pid, procs, signal.SIGKILL)
    deadline = time.monotonic() + _KILL_WAIT_S
    while _alive(procs) and time.monotonic() < deadline:
        time.sleep(0.02)


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
    command = [sys.executable, "-I", "-S", str(REAPER), str(os.getpid()), str(spec.grace_s), "--"]
    try:
        with open(spec.log_path, "ab", buffering=0) as log:
            proc = subprocess.Popen(
                [*command, program, *spec.argv[1:]], cwd=spec.cwd, env=spec.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as exc:
        return _cannot_start(spec, f"{exc.strerror or exc}: {exc.filename or spec.argv[0]}")
    seen: set[psutil.Process] = set()
    stop: Outcome | None = None
    try:
        if on_started is not None:
            on_started(proc.pid)
        while not _has_exited(proc.pid):
            seen = _refresh(proc.pid, seen)
            if should_stop():
                stop = Outcome.TERMINATED
            elif time.monotonic() - started >= spec.timeout_s:
                stop = Outcome.TIMEOUT
            if stop is not None:
                break
            time.sleep(poll_s)
        # The shim is not reaped yet, so its pid (the group id) cannot be reused meanwhile.
        kill_process_tree(proc.pid, spec.grace_s, known=seen)
    except BaseException:
        kill_process_tree(proc.pid, spec.grace_s, known=seen)
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
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
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


def _has_exited(pid: int) -> bool:
    """Whether our child has exited, without reaping it."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _refresh(pid: int, seen: set[psutil.Process]) -> set[psutil.Process]:
    """The live descendants of `pid` and of those seen before, plus the seen ones still live."""
    live = {p for p in seen if _is_live(p)}
    return live | _descendants(live, roots={pid})


def _descendants(
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


def _send(pgid: int, procs: Iterable[psutil.Process], signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
    for proc in procs:
        try:
            proc.send_signal(signum)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def _is_live(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _alive(procs: Iterable[psutil.Process]) -> bool:
    return any(_is_live(p) for p in procs)
