"""One training from claim to outcome: claim the row, prepare the run, supervise, record."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app import safe_files, storage
from app.config import get_settings
from app.db import get_sessionmaker
from app.models import Training, TrainingStatus
from app.models.base import utcnow
from app.models.training import finish
from app.procs import envs, sandbox, tree
from app.procs.environ import build_env
from app.trainings.config_rules import parse_input_url
from app.trainings.runtimes import get_flavor, get_runtime, sandbox_limits, sandbox_network
from worker import control, runner

log = logging.getLogger(__name__)

REQUIREMENTS_FILE = "pip-requirements.txt"
SHUTDOWN_SWEEP_S = 0.2  # while a worker shuts down, how often what its pool started is stopped


class PrepareError(Exception):
    """The run could not be set up; the message becomes the training's error."""


@dataclass(frozen=True)
class PreparedRun:
    spec: runner.RunSpec
    python: str


def _session() -> Session:
    return get_sessionmaker()()


def claim(training_id: int, *, worker_name: str) -> bool:
    """Move the training from Pending to Creating for this worker; False if someone else has it.

    A duplicate message (the reconciler sends again what it cannot find in a queue) finds the
    training claimed and does nothing; lost workers are the reconciler's business.
    """
    with _session() as db:
        claimed = db.execute(
            update(Training).where(Training.id == training_id,
                                   Training.status == TrainingStatus.PENDING)
            .values(status=TrainingStatus.CREATING, worker=worker_name, heartbeat_at=utcnow(),
                    dispatch_error=None))
        db.commit()
        return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]


def _mark_in_progress_abnormal(worker_name: str, error: str) -> int:
    with _session() as db:
        rows = list(db.scalars(select(Training).where(
            Training.worker == worker_name,
            Training.status.in_([TrainingStatus.CREATING, TrainingStatus.RUNNING,
                                 TrainingStatus.TERMINATING]))))
        for training in rows:
            finish(training, TrainingStatus.ABNORMAL, error=error)
        db.commit()
        return len(rows)


def mark_lost_trainings(worker_name: str) -> int:
    """At worker start: trainings this worker had in progress died with it; mark them Abnormal."""
    return _mark_in_progress_abnormal(
        worker_name, f"worker {worker_name} stopped while the training was in progress")


def abandon_trainings(worker_name: str) -> int:
    """At worker shutdown: mark this worker's trainings Abnormal and stop their processes."""
    count = _mark_in_progress_abnormal(
        worker_name, f"worker {worker_name} shut down while the training was in progress")
    # What the pool processes started: each running training's shim, which leads the
    # training's process group, and what a run being prepared started (pip, in its own
    # group too). Stopping them ends the tasks, so the worker exits without waiting for them.
    # A run being prepared may be between two steps (a venv made, pip not yet started): until
    # the worker exits, whatever its pool processes start next is stopped too.
    tree.terminate_grandchildren()
    threading.Thread(target=_keep_stopping_what_the_pool_starts, daemon=True,
                     name="stop-abandoned-runs").start()
    return count


def _keep_stopping_what_the_pool_starts() -> None:
    while True:
        time.sleep(SHUTDOWN_SWEEP_S)
        tree.terminate_grandchildren()


def _input_path(input_url: str) -> Path:
    ref = parse_input_url(input_url)
    root = (storage.dataset_dir if ref.kind == "datasets" else storage.model_dir)(
        ref.owner, ref.name)
    path = root / ref.subpath if ref.subpath else root
    if not path.exists():
        raise PrepareError(f"input {input_url} no longer exists")
    return path


def prepare(training: Training, *, log_path: Path) -> PreparedRun:
    """Resolve inputs and outputs to local paths, pick the interpreter, build argv and env.

    In the sandbox (see docs/security.md) the run sees the same paths: its inputs read-only,
    its workspace (the code snapshot taken for this training alone, holding its output
    folders) and its HOME read-write, handed to the sandbox uid.
    """
    cfg = training.config
    workspace = storage.training_workspace(training.id)
    code_dir = workspace / PurePosixPath(training.code_dir)
    boot = code_dir / training.boot_file
    if not boot.is_file():
        raise PrepareError(f"boot file {training.code_dir}{training.boot_file} is missing "
                           "from the code snapshot")
    args: list[tuple[str, str]] = [(h["name"], str(h["value"])) for h in cfg["hypeparameters"]]
    inputs = [(x["name"], _input_path(x["input_url"])) for x in cfg["inputs"]]
    args += [(name, str(path)) for name, path in inputs]
    for out in cfg["outputs"]:
        folder = workspace / PurePosixPath(out["output_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        args.append((out["name"], str(folder) + "/"))
    sandboxed = sandbox.require().enabled
    runtime = get_runtime(training.runtime)
    python = runtime.python
    requirements = boot.parent / REQUIREMENTS_FILE
    if requirements.is_file():
        try:
            python = envs.python_for_requirements(
                requirements, base_python=runtime.python, cache_dir=storage.envs_dir(),
                log_path=log_path, sandboxed=sandboxed)
        except envs.RequirementsError as exc:
            raise PrepareError(str(exc)) from exc
    home = storage.training_dir(training.id) / "home"
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    env = build_env(cfg["env_variables"], home=home,
                    runtime_is_mindspore=runtime.framework_type == "MindSpore", python=python)
    spec = None
    if sandboxed:
        # Programs write next to their code (./output, ./db, MindSpore's dumps), as on Xihe:
        # the snapshot is this training's private copy, so it may.
        sandbox.make_writable(workspace, home)
        flavor = get_flavor(training.flavor)
        spec = sandbox.SandboxSpec(
            cwd=boot.parent, pythons=(runtime.python, python),
            ro_paths=tuple(path for _, path in inputs), rw_paths=(workspace, home),
            network=sandbox_network(flavor), limits=sandbox_limits(flavor))
    settings = get_settings()
    run_spec = runner.RunSpec(argv=runner.build_argv(python, boot, args), cwd=boot.parent,
                              env=env, log_path=log_path, timeout_s=settings.training_timeout_s,
                              grace_s=settings.terminate_grace_s, sandbox=spec)
    return PreparedRun(spec=run_spec, python=python)


class StopCheck:
    """Polled by the runner: stop on a terminate message, or when a slow status read says so.

    The terminate request arrives over Redis pub/sub within a poll; reading the row every
    `stop_poll_s` is the fallback (Redis down, message missed), and it also stops a run the
    reconciler already ended (its worker was thought lost) or whose row was deleted.
    """

    def __init__(self, training_id: int) -> None:
        self.training_id = training_id
        self.next_check = 0.0  # the first call reads the row: a request sent before we listened
        self.listener = control.Listener(training_id)

    def __call__(self) -> bool:
        if self.listener.told_to_stop():
            return True
        if time.monotonic() < self.next_check:
            return False
        self.next_check = time.monotonic() + get_settings().stop_poll_s
        self.listener.reconnect()
        try:
            with _session() as db:
                status = db.scalar(select(Training.status)
                                   .where(Training.id == self.training_id))
        except OperationalError:  # the database is away for a moment: keep running
            log.warning("could not read the status of training %s", self.training_id)
            return False
        return status != TrainingStatus.RUNNING


def _set_running(training_id: int, python: str) -> bool:
    with _session() as db:
        done = db.execute(update(Training).where(Training.id == training_id,
                                                 Training.status == TrainingStatus.CREATING)
                          .values(status=TrainingStatus.RUNNING, started_at=utcnow(),
                                  python=python))
        db.commit()
        return bool(done.rowcount == 1)  # type: ignore[attr-defined]


_OUTCOME_STATUS = {
    runner.Outcome.COMPLETED: TrainingStatus.COMPLETED,
    runner.Outcome.FAILED: TrainingStatus.FAILED,
    runner.Outcome.TERMINATED: TrainingStatus.TERMINATED,
    runner.Outcome.TIMEOUT: TrainingStatus.TIMEOUT,
}


def _record(training_id: int, status: TrainingStatus, *, error: str | None,
            exit_code: int | None = None) -> None:
    with _session() as db:
        training = db.get(Training, training_id)
        if training is None:
            return
        if training.state.finished:  # e.g. marked Abnormal by a worker shutdown
            training.exit_code = exit_code
            db.commit()
            return
        if training.state is TrainingStatus.TERMINATING and status is TrainingStatus.FAILED:
            status = TrainingStatus.TERMINATED  # killed on request: not a failure
        finish(training, status, error=error)
        training.exit_code = exit_code
        db.commit()


def _keep_log_copy(training: Training, log_path: Path) -> None:
    # Xihe's log_url: a copy of the log lands in the workspace folder the config named. The run
    # wrote that workspace, so no link in it is followed (safe_files); a refusal is noted.
    log_url = training.config.get("log_url") or ""
    if log_url and log_path.exists():
        try:
            safe_files.replace_file(storage.training_workspace(training.id), log_url,
                                    f"{training.job_name}.log", log_path, field="log_url")
        except (safe_files.UnsafePath, OSError) as exc:
            why = exc.detail if isinstance(exc, safe_files.UnsafePath) else str(exc)
            with log_path.open("a", encoding="utf-8") as out:
                out.write(f"\n[trainyard] the log copy was not written: {why}\n")


def run_training_job(training_id: int, *, worker_name: str) -> str:
    """Run one training end to end; returns its final status (or 'skipped')."""
    if not claim(training_id, worker_name=worker_name):
        return "skipped"
    log_path = storage.training_log(training_id)
    with _session() as db:
        training = db.get(Training, training_id)
        if training is None:
            return "deleted"
        try:
            prepared = prepare(training, log_path=log_path)
        except PrepareError as exc:
            _record(training_id, TrainingStatus.FAILED, error=str(exc))
            return TrainingStatus.FAILED
        except Exception as exc:
            log.exception("preparing training %s failed", training_id)
            _record(training_id, TrainingStatus.FAILED, error=f"could not prepare the run: {exc}")
            return TrainingStatus.FAILED
    if not _set_running(training_id, prepared.python):
        _record(training_id, TrainingStatus.TERMINATED, error="terminated before it started")
        return TrainingStatus.TERMINATED
    result = runner.run(prepared.spec, should_stop=StopCheck(training_id))
    status = _OUTCOME_STATUS[result.outcome]
    error = None
    if status is TrainingStatus.FAILED:
        error = result.error_tail or result.reason
    elif status is TrainingStatus.TIMEOUT:
        error = f"ran past the limit of {prepared.spec.timeout_s:.0f} s"
    with _session() as db:
        training = db.get(Training, training_id)
        if training is not None:
            _keep_log_copy(training, log_path)
    _record(training_id, status, error=error, exit_code=result.exit_code)
    return status
