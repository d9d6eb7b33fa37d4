"""The `trainyard` command: run the platform (`up`, `worker`) and drive it (client commands)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli import client

if TYPE_CHECKING:
    from app.procs.children import Supervisor

# The worker needs the trainings' grace (5 s) and a moment to record them; compose gives 30 s.
WORKER_STOP_GRACE_S = 20.0

app = typer.Typer(help="Trainyard: a self-hosted training-job service.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
client.register(app)


def _configure(data_dir: Path) -> dict[str, str]:
    """Point this process and its children at `data_dir`; returns the children's environment."""
    from app.cli.up import read_or_create_secret
    from app.config import get_settings
    from app.db import reset_engine

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TRAINYARD_DATA_DIR"] = str(data_dir)
    if not os.environ.get("TRAINYARD_SESSION_SECRET"):
        os.environ["TRAINYARD_SESSION_SECRET"] = read_or_create_secret(
            data_dir / "session-secret")
    get_settings.cache_clear()
    reset_engine()
    return dict(os.environ)


def _bootstrap_admin(data_dir: Path) -> str:
    """Migrate the database and make sure the admin exists; returns the admin token to show."""
    from app.auth.service import ensure_admin
    from app.cli.up import read_or_create_secret
    from app.config import get_settings
    from app.db import get_sessionmaker
    from app.migrate import upgrade_to_head

    upgrade_to_head()
    settings = get_settings()
    token = settings.admin_token or read_or_create_secret(data_dir / "admin-token", prefix="ty_")
    with get_sessionmaker()() as db:
        ensure_admin(db, token=token)
        db.commit()
    return token


def _start_redis(sup: Supervisor, data_dir: Path) -> str:
    """Start the embedded Redis with a generated password (kept in data_dir, mode 600)."""
    from app.cli.up import read_or_create_secret, redis_server_binary, write_redis_config
    from app.procs.ports import free_port

    port = free_port()
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(exist_ok=True, mode=0o700)
    password = read_or_create_secret(data_dir / "redis-password")
    conf = redis_dir / "redis.conf"
    # The port (and so the URL the API and worker hold) stays the same across restarts, and
    # the append-only file brings the queued messages back after one.
    write_redis_config(conf, port=port, password=password, folder=redis_dir)
    sup.start("redis", [redis_server_binary(), str(conf)],
              stop_grace_s=5, after_restart=lambda: _after_redis_restart(port, password))
    _wait_redis(port, password, sup)
    return f"redis://:{password}@127.0.0.1:{port}/0"


def _wait_redis(port: int, password: str, sup: Supervisor | None = None,
                timeout_s: float = 10) -> None:
    import redis

    client_ = redis.Redis(port=port, password=password)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client_.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline or (sup is not None and sup.failed()):
                raise RuntimeError("the embedded Redis did not start") from None
            time.sleep(0.05)


def _after_redis_restart(port: int, password: str) -> None:
    # The reconciler notices the new Redis (its run id) and sends what it forgot.
    _wait_redis(port, password)


def _check_sandbox() -> str:
    """Refuse to start when TRAINYARD_SANDBOX=on cannot be honoured; warn loudly when off.

    Returns the mode the children must use: once the sandbox works here, `on`, so that a child
    whose own check fails later (a transient error) refuses to run user code instead of running
    it unsandboxed.
    """
    from app.procs import sandbox

    try:
        state = sandbox.require()
    except sandbox.SandboxUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not state.enabled:
        line = "!" * 78
        typer.echo(f"{line}\nWARNING: the sandbox is OFF ({state.reason}).\n"
                   "User code (trainings, pip installs, predictors) runs with the platform's "
                   "uid and can\nread its secrets and data. See docs/security.md.\n{line}",
                   err=True)
    return "on" if state.enabled else state.mode


def _sandbox_line(mode: str) -> str:
    from app.procs import sandbox

    if mode != "on":
        return "Sandbox: OFF (see the warning above)"
    uid, _gid = sandbox.sandbox_ids()
    return f"Sandbox: on (bubblewrap; user code runs as uid {uid})"


@app.command()
def up(host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
       port: Annotated[int, typer.Option(help="Port of the API and dashboard.")] = 8000,
       data_dir: Annotated[Path, typer.Option(help="Where everything is stored.",
                                              envvar="TRAINYARD_DATA_DIR")] = Path(".data"),
       workers: Annotated[int, typer.Option(help="Trainings run at once.")] = 1) -> None:
    """Start the whole platform: database migrations, Redis, the API and a worker."""
    from app.cli.up import API_ONLY_SECRETS, up_worker_name, wait_healthy, worker_argv
    from app.procs.children import Supervisor

    env = _configure(data_dir)
    data_dir = Path(env["TRAINYARD_DATA_DIR"])
    env["TRAINYARD_SANDBOX"] = _check_sandbox()
    token = _bootstrap_admin(data_dir)
    sup = Supervisor(env=env)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    try:
        if not env.get("TRAINYARD_REDIS_URL"):
            env["TRAINYARD_REDIS_URL"] = _start_redis(sup, data_dir)
            os.environ["TRAINYARD_REDIS_URL"] = env["TRAINYARD_REDIS_URL"]
            from app.config import get_settings

            get_settings.cache_clear()
        sup.start("api", [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
                          "--host", host, "--port", str(port), "--no-access-log",
                          "--timeout-graceful-shutdown", "5"],
                  stop_grace_s=10)
        sup.start("worker", worker_argv([], concurrency=workers, name=up_worker_name(data_dir)),
                  log_file=logs / "worker.log", without=API_ONLY_SECRETS,
                  stop_grace_s=WORKER_STOP_GRACE_S)
        url = f"http://{host}:{port}"
        wait_healthy(url, sup)  # the reconciler sends what a restarted Redis forgot
        typer.echo(f"Trainyard is running at {url}")
        typer.echo(f"Admin token: {token}")
        typer.echo(f"Data: {data_dir}   Worker log: {logs / 'worker.log'}   Ctrl-C stops.")
        typer.echo(_sandbox_line(env["TRAINYARD_SANDBOX"]))
        while not stopping:
            sup.watch()
            time.sleep(0.2)
    finally:
        typer.echo("Stopping Trainyard...", err=True)
        sup.stop()


@app.command()
def worker(queues: Annotated[str, typer.Option(help="Comma-separated queues to consume.")]
           = "trainings.cpu",
           concurrency: Annotated[int, typer.Option(help="Trainings run at once.")] = 1,
           name: Annotated[str | None, typer.Option(
               help="Worker name, unique among live workers (%h: the host name). Default: "
                    "trainyard-<pid>@<host>, unique per process.")] = None) -> None:
    """Run a Celery worker for training queues (uses TRAINYARD_DATABASE_URL/REDIS_URL).

    The command replaces itself with Celery, so signals reach the worker directly.
    """
    from app.cli.up import worker_argv

    os.environ["TRAINYARD_SANDBOX"] = _check_sandbox()
    # After exec the pid is Celery's: two workers started on one host never share a default
    # name, and a name a live worker holds is refused at start (worker/celery_app.py).
    argv = worker_argv([q.strip() for q in queues.split(",") if q.strip()],
                       concurrency=concurrency, name=name or f"trainyard-{os.getpid()}@%h")
    # Become the Celery worker (same pid): SIGTERM from `docker stop` or a process manager
    # reaches Celery itself, which abandons its trainings and exits (docs/operations.md).
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


@app.command()
def migrate() -> None:
    """Apply the database migrations (the configured database)."""
    from app.migrate import upgrade_to_head

    upgrade_to_head()
    typer.echo("database is at the latest schema")


@app.command()
def bootstrap() -> None:
    """Apply migrations and register TRAINYARD_ADMIN_TOKEN as the admin's token (deployments)."""
    from app.config import get_settings

    settings = get_settings()
    if not settings.admin_token:
        raise typer.BadParameter("set TRAINYARD_ADMIN_TOKEN")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _bootstrap_admin(settings.data_dir)
    typer.echo("database migrated; admin token registered")


if __name__ == "__main__":
    app()
