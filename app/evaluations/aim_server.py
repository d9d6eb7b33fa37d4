"""The Aim UI process: `python -m app.evaluations.aim_server [--template DIR]`.

It does what `aim up --repo DIR --base-path P` does, in one process that can be started ahead
of need (often inside the sandbox, see `app.evaluations.aim_process`): it imports Aim, FastAPI
and uvicorn, then waits on stdin, a unix socket, for one JSON line (the spec) that arrives with
one file descriptor: the log to write to. It optionally builds the Aim repository (standard
evaluation, comparison) from copies of its sources, and serves Aim's UI on a unix socket until
stopped. Spec keys: folder, base_path, socket, build (null or {fingerprint, experiment,
sources}). `--make-template DIR` only creates the empty repository template and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Everything slow to import that does not read the repository path at import time
# (aim.web.api.db does: it binds its engine to the mounted repository).
PREWARM_MODULES = (
    "alembic.command", "alembic.runtime.migration", "uvicorn", "fastapi", "aim.sdk.repo",
    "aim.sdk.index_manager", "aim.sdk.run_status_manager", "aim.web.api.utils",
    "aim.web.api.views", "aim.web.api.runs.views", "aim.web.api.experiments.views",
    "aim.web.api.projects.views", "aim.web.api.tags.views",
)


def warm_up() -> None:
    """Import what serving needs."""
    import importlib

    for module in PREWARM_MODULES:
        importlib.import_module(module)


def make_template(template: Path) -> None:
    """Create the empty repository template once (a no-op when it exists)."""
    from aim.sdk.repo import Repo

    if (template / ".aim").is_dir():
        return
    # Initialising a repository runs Aim's migrations in a child Python (about 2 s): do it
    # once here and copy the result for every repository Trainyard builds.
    template.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".template-", dir=template.parent))
    Repo.from_path(str(stage), init=True).close()
    # Sandboxed Aim processes (another uid) copy it: readable by all, like the runtime.
    for folder, _dirs, files in os.walk(stage):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    try:
        stage.rename(template)
    except OSError:  # another process made it first
        shutil.rmtree(stage, ignore_errors=True)


def build(folder: Path, spec: dict[str, Any], template: Path | None) -> None:
    """Write the runs of every source into a fresh Aim repository at `folder`."""
    from aim.sdk.repo import Repo

    from app.evaluations.aim_data import read_runs, write_runs
    from app.evaluations.log_parser import parse_log

    shutil.rmtree(folder, ignore_errors=True)
    if template is not None and (template / ".aim").is_dir():
        shutil.copytree(template, folder)
    else:  # no template yet (it is being made): initialise one here, slower
        folder.mkdir(parents=True)
        Repo.from_path(str(folder), init=True).close()
    started = time.monotonic()
    for source in spec["sources"]:
        if source["kind"] == "log":
            text = Path(source["path"]).read_text("utf-8", errors="replace")
            runs = parse_log(text, run_name=source["run_name"], params=source["params"])
        else:
            runs = read_runs(Path(source["path"]))
            for run in runs:
                run.name = f"{source['run_name']}: {run.name}"
        write_runs(folder, runs, experiment=spec["experiment"], extra_params=source["extra"])
        print(f"built {len(runs)} run(s) from {source['path']} "
              f"({time.monotonic() - started:.2f} s)", flush=True)


def serve(folder: Path, *, base_path: str, uds: str) -> None:
    """Serve Aim's UI for the repository in `folder` under `base_path` (as `aim up` does)."""
    import uvicorn
    from aim.sdk.index_manager import RepoIndexManager
    from aim.sdk.repo import Repo, RepoStatus
    from aim.sdk.run_status_manager import RunStatusManager
    from aim.web.configs import AIM_ENV_MODE_KEY, AIM_UI_BASE_PATH, AIM_UI_MOUNTED_REPO_PATH
    from alembic import command
    from alembic.config import Config

    status = Repo.check_repo_status(str(folder))
    if status in (RepoStatus.MISSING, RepoStatus.UPDATE_REQUIRED):
        sys.exit(f"{folder} does not hold an Aim repository this Aim version can open "
                 f"(status {status.name})")
    os.environ[AIM_ENV_MODE_KEY] = "prod"
    os.environ[AIM_UI_BASE_PATH] = base_path
    repo = Repo.from_path(str(folder))
    os.environ[AIM_UI_MOUNTED_REPO_PATH] = repo.path
    import aim.web

    # The UI's own tables (dashboards, reports), migrated in this process: `aim up` spends
    # a second and a half starting a Python for it.
    ini = Path(aim.web.__file__).parent / "migrations" / "alembic.ini"
    command.upgrade(Config(str(ini)), "head")
    RepoIndexManager.get_index_manager(repo).start()
    RunStatusManager(repo).start()  # type: ignore[no-untyped-call]
    print(f"serving {folder} at unix:{uds} {base_path}/", flush=True)
    # uvicorn makes the socket 0666: the folder it is in (0700) is what keeps others out.
    uvicorn.run("aim.web.run:app", uds=uds, log_level="warning", access_log=False,
                timeout_graceful_shutdown=3)


def receive_spec(channel: socket.socket) -> tuple[dict[str, Any] | None, int | None]:
    """The spec line and the log descriptor sent with it; (None, None) when retired unused."""
    data = b""
    log_fd: int | None = None
    while not data.endswith(b"\n"):
        chunk, fds, _flags, _addr = socket.recv_fds(channel, 1 << 16, 1)
        if fds:
            log_fd = fds[0]
        if not chunk:
            break
        data += chunk
    if not data.strip():
        return None, log_fd
    spec: dict[str, Any] = json.loads(data)
    return spec, log_fd


def _redirect_output(fd: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main() -> None:
    """Warm up, wait for the spec on stdin, build if asked, serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--template", type=Path)
    parser.add_argument("--make-template", type=Path)
    args = parser.parse_args()
    if args.make_template is not None:
        make_template(args.make_template)
        return
    started = time.monotonic()
    warm_up()
    print(f"warm in {time.monotonic() - started:.2f} s", flush=True)
    with socket.socket(fileno=os.dup(0)) as channel:
        spec, log_fd = receive_spec(channel)
    if spec is None:
        return  # retired before use
    if log_fd is not None:
        _redirect_output(log_fd)
    print(f"started {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    folder = Path(spec["folder"])
    if spec.get("build"):
        build(folder, spec["build"], args.template)
    serve(folder, base_path=spec["base_path"], uds=spec["socket"])


if __name__ == "__main__":
    main()
