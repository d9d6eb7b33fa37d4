"""Training commands: submit, list, show, terminate, delete, outputs."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.json import JSON
from rich.table import Table

from app.cli import client_format as fmt
from app.cli.client_api import (
    Api,
    TokenOption,
    UrlOption,
    connect,
    die,
    err,
    error_lines,
    out,
)
from app.cli.client_logs import follow_log, logs
from app.cli.client_repos import repo_path
from app.cli.client_transfer import download_files

IdArg = Annotated[int, typer.Argument(metavar="ID", help="Training id.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead.")]


def _read_config_file(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        die(f"cannot read {path}: {exc.strerror}")
    return _parse_config(data, path.name)


def _parse_config(text: bytes, source: str) -> Any:
    from app.errors import AppError
    from app.trainings.config import parse_config_text

    try:
        return parse_config_text(text, source=source)
    except AppError as exc:
        headline, lines = error_lines(exc.body())
        die(headline, *[line for line in lines if line != f"config: {headline}"])


def _parse_settings(settings: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            die(f"--set takes NAME=VALUE, got {item!r}")
        pairs[key.strip()] = value
    return pairs


def _set_hyperparameters(body: dict[str, Any], values: dict[str, str]) -> None:
    if not values:
        return
    key = next((k for k in ("hypeparameters", "hyperparameters") if k in body),
               "hypeparameters")
    items = body.get(key)
    if not isinstance(items, list):
        items = []
    rest = dict(values)
    for item in items:
        if isinstance(item, dict) and item.get("name") in rest:
            item["value"] = rest.pop(str(item["name"]))
    items += [{"name": k, "value": v} for k, v in rest.items()]
    body[key] = items


def submit(repo: Annotated[str, typer.Option(metavar="OWNER/NAME", help="Repository to train.")],
           config_path: Annotated[str | None, typer.Argument(
               metavar="[CONFIG_PATH]", help="config.json inside the repository, "
               "e.g. train/config.json.")] = None,
           file: Annotated[Path | None, typer.Option(
               "--file", help="Send a local config file (JSON or JSONC) instead.")] = None,
           name: Annotated[str | None, typer.Option(
               "--name", help="Job name for this run instead of the config's job_name "
               "(names are unique in a repository).")] = None,
           settings: Annotated[list[str] | None, typer.Option(
               "--set", metavar="NAME=VALUE", help="Give a hyperparameter this value for this "
               "run (repeatable), e.g. --set epochs=2.")] = None,
           follow: Annotated[bool, typer.Option(
               "--follow", "-f", help="Then follow the log until the training ends.")] = False,
           url: UrlOption = None, token: TokenOption = None) -> None:
    """Create a training instance from a config file of the repository or a local one."""
    if (config_path is None) == (file is None):
        die("give either CONFIG_PATH (a file in the repository) or --file LOCAL.json")
    overrides = _parse_settings(settings or [])
    with connect(url, token) as api:
        if file is not None:
            body = _read_config_file(file)
        elif overrides:  # the file's own text, edited here for this one run
            text = api.request("GET", repo_path(repo, "files", config_path or "")).content
            body = _parse_config(text, config_path or "")
        else:
            body = {"config_path": config_path}
        if isinstance(body, dict):
            _set_hyperparameters(body, overrides)
            if name is not None:
                body["job_name"] = name
        created = api.request("POST", repo_path(repo, "trainings"), json=body).json()
        out.print(f"training {created['id']} ({created['job_name']}) in {created['repo']}: ",
                  fmt.status(created["status"]), sep="")
        if not follow:
            return
        code = follow_log(api, created["id"])
    raise typer.Exit(code)


def _all_trainings(api: Api, repo: str | None) -> list[dict[str, Any]]:
    if repo:
        rows: list[dict[str, Any]] = api.get_json(repo_path(repo, "trainings"))
        return rows
    rows = []
    for r in api.get_json("/api/v1/repos"):
        if r.get("trainings", 1):
            rows.extend(api.get_json(repo_path(r["full_name"], "trainings")))
    return sorted(rows, key=lambda t: t["id"], reverse=True)


def list_trainings(repo: Annotated[str | None, typer.Option(
                       metavar="OWNER/NAME", help="Only this repository's trainings.")] = None,
                   as_json: JsonFlag = False,
                   url: UrlOption = None, token: TokenOption = None) -> None:
    """Training instances, newest first (all of your repositories' unless --repo)."""
    with connect(url, token) as api:
        rows = _all_trainings(api, repo)
    if as_json:
        out.print_json(data=rows)
        return
    if not rows:
        out.print("no trainings yet: `trainyard submit --repo OWNER/NAME train/config.json`")
        return
    table = Table(box=None, header_style="bold")
    # Ids and names are never cut short on a narrow terminal: the times wrap instead.
    for header, key in (("ID", "id"), ("Repository", "repo"), ("Name", "job_name"),
                        ("Status", "status")):
        table.add_column(header, no_wrap=True,
                         min_width=max(len(header), *(len(str(t[key])) for t in rows)))
    table.add_column("Created")
    table.add_column("Duration")
    for t in rows:
        table.add_row(str(t["id"]), t["repo"], t["job_name"], fmt.status(t["status"]),
                      fmt.when(t["created_at"]), fmt.duration(t.get("duration_s")))
    out.print(table)


def show(training_id: IdArg, as_json: JsonFlag = False,
         url: UrlOption = None, token: TokenOption = None) -> None:
    """A training's status, times, error and config."""
    with connect(url, token) as api:
        t = api.get_json(f"/api/v1/trainings/{training_id}")
    if as_json:
        out.print_json(data=t)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    state = fmt.status(t["status"])
    if t.get("exit_code") is not None:
        state.append(f" (exit code {t['exit_code']})")
    for label, value in [
        ("Training", f"{t['id']}  {t['job_name']}"), ("Repository", t["repo"]),
        ("Status", state), ("Created", fmt.when(t["created_at"])),
        ("Started", fmt.when(t.get("started_at"))), ("Finished", fmt.when(t.get("finished_at"))),
        ("Duration", fmt.duration(t.get("duration_s"))), ("Runtime", t.get("runtime") or "-"),
        ("Flavor", t.get("flavor") or "-"), ("Worker", t.get("worker") or "-"),
        ("Created by", t.get("created_by") or "-"),
    ]:
        grid.add_row(label, value)
    if t.get("waiting"):
        grid.add_row("Queue", fmt.waiting(t["waiting"]))
    out.print(grid)
    if t.get("error"):
        out.print("\n[bold red]Error[/]")
        out.print(t["error"], markup=False, style="red")
    out.print("\n[bold]Config[/]")
    out.print(JSON.from_data(t["config"]))


def terminate(training_id: IdArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """Stop a training (a queued one ends at once, a running one goes through Terminating)."""
    with connect(url, token) as api:
        answer = api.request("POST", f"/api/v1/trainings/{training_id}/terminate").json()
    out.print(f"training {answer['id']}: ", fmt.status(answer["status"]), sep="")


def delete(training_id: IdArg,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
           url: UrlOption = None, token: TokenOption = None) -> None:
    """Delete a training and its files (a running one is terminated first)."""
    if not yes:
        if not sys.stdin.isatty():
            die("deleting needs confirmation: pass --yes")
        typer.confirm(f"Delete training {training_id} with its log and outputs?", abort=True)
    with connect(url, token) as api:
        api.request("DELETE", f"/api/v1/trainings/{training_id}", timeout=120)
    out.print(f"deleted training {training_id}")


def outputs(training_id: IdArg,
            download: Annotated[Path | None, typer.Option(
                metavar="DIR", help="Download every file into DIR, keeping relative paths.")
            ] = None,
            url: UrlOption = None, token: TokenOption = None) -> None:
    """The files a training wrote to its outputs; --download fetches them."""
    with connect(url, token) as api:
        listed = api.get_json(f"/api/v1/trainings/{training_id}/outputs")
        refused = [f for f in listed if f.get("refused")]
        files = [f for f in listed if not f.get("refused")]
        for f in refused:
            err.print(f"{f['path']}: {f['refused']}")
        if download is not None:
            items = [(f"/api/v1/trainings/{training_id}/outputs/{quote(f['path'])}", f["path"],
                      int(f["size"])) for f in files]
            written = download_files(api, items, download)
            out.print(f"downloaded {len(items)} files ({fmt.size(written)}) to {download}")
            return
    if not files:
        if not refused:
            err.print(f"training {training_id} has no output files (yet)")
        return
    table = Table("Path", "Size", "Modified", "Checkpoint", box=None, header_style="bold")
    for f in files:
        table.add_row(f["path"], fmt.size(f["size"]), fmt.when(f["modified_at"]),
                      "[green]yes[/]" if f.get("checkpoint") else "")
    out.print(table)
    total = sum(int(f["size"]) for f in files)
    out.print(f"{len(files)} files, {fmt.size(total)}")


def register_trainings(app: typer.Typer, *, panel: str) -> None:
    """Add the training commands to `app` under the help panel `panel`."""
    commands: list[tuple[str, Callable[..., None]]] = [
        ("submit", submit), ("list", list_trainings), ("show", show), ("logs", logs),
        ("terminate", terminate), ("delete", delete), ("outputs", outputs)]
    for name, command in commands:
        app.command(name, rich_help_panel=panel)(command)
