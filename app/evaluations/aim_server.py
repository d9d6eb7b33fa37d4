"""The Aim UI process: `python -m app.evaluations.aim_server --template DIR`.

It does what `aim up --repo DIR --base-path P` does, in one process that can be started ahead
of need: it imports Aim, FastAPI and uvicorn and makes sure an empty Aim repository template
exists, then waits for one JSON line on stdin (the spec), optionally builds the Aim repository
(standard evaluation, comparison), and serves Aim's UI on 127.0.0.1 until stopped.
Spec keys: folder, base_path, port, log, build (null or {fingerprint, experiment, sources}).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BUILD_MARKER = "trainyard-build.json"
# Everything slow to import that does not read the repository path at import time
# (aim.web.api.db does: it binds its engine to the mounted repository).
PREWARM_MODULES = (
    "alembic.command", "alembic.runtime.migration", "uvicorn", "fastapi", "aim.sdk.repo",
    "aim.sdk.index_manager", "aim.sdk.run_status_manager", "aim.web.api.utils",
    "aim.web.api.views", "aim.web.api.runs.views", "aim.web.api.experiments.views",
    "aim.web.api.projects.views", "aim.web.api.tags.views",
)


def warm_up(template: Path) -> None:
    """Import what serving needs and create the empty repository template once."""
    import importlib

    for module in PREWARM_MODULES:
        importlib.import_module(module)
    from aim.sdk.repo import Repo

    if (template / ".aim").is_dir():
        return
    # Initialising a repository runs Aim's migrations in a child Python (about 2 s): do it
    # once here and copy the result for every repository Trainyard builds.
    template.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".template-", dir=template.parent))
    Repo.from_path(str(stage), init=True).close()
    try:
        stage.rename(template)
    except OSError:  # another process made it first
        shutil.rmtree(stage, ignore_errors=True)


def build(folder: Path, spec: dict[str, Any], template: Path) -> None:
    """Write the runs of every source into a fresh Aim repository at `folder` (once)."""
    from app.evaluations.aim_data import read_runs, write_runs
    from app.evaluations.log_parser import parse_log

    marker = folder / BUILD_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == spec["fingerprint"]:
        return
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(template, folder)
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
    marker.write_text(json.dumps(spec["fingerprint"]))


def serve(folder: Path, *, base_path: str, port: int) -> None:
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
    print(f"serving {folder} at http://127.0.0.1:{port}{base_path}/", flush=True)
    uvicorn.run("aim.web.run:app", host="127.0.0.1", port=port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=3)


def _redirect_output(log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main() -> None:
    """Warm up, wait for the spec on stdin, build if asked, serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--template", type=Path, required=True)
    args = parser.parse_args()
    started = time.monotonic()
    warm_up(args.template)
    print(f"warm in {time.monotonic() - started:.2f} s", flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return  # retired before use
    spec = json.loads(line)
    _redirect_output(Path(spec["log"]))
    print(f"started {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    folder = Path(spec["folder"])
    if spec.get("build"):
        build(folder, spec["build"], args.template)
    serve(folder, base_path=spec["base_path"], port=int(spec["port"]))


if __name__ == "__main__":
    main()
