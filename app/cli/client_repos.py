"""`trainyard repos ...`: list, fork, push, browse and edit repositories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer
from rich.table import Table

from app.cli import client_format as fmt
from app.cli.client_api import (
    TokenOption,
    UrlOption,
    connect,
    die,
    err,
    out,
    split_repo,
    write_stdout,
)
from app.cli.client_transfer import CHUNK, packed_dir, post_files

repos = typer.Typer(help="Repositories: fork the sample, push a folder, read and write files.",
                    no_args_is_help=True)

RepoArg = Annotated[str, typer.Argument(metavar="OWNER/NAME", help="The repository.")]


def repo_path(full_name: str, *rest: str) -> str:
    """`/api/v1/repos/{owner}/{name}[/rest...]` with each part URL-quoted."""
    owner, name = split_repo(full_name)
    parts = [quote(owner, safe=""), quote(name, safe="")] + [quote(r) for r in rest]
    return "/api/v1/repos/" + "/".join(parts)


@repos.command("list")
def list_repos(url: UrlOption = None, token: TokenOption = None) -> None:
    """Your repositories."""
    with connect(url, token) as api:
        rows = api.get_json("/api/v1/repos")
    table = Table("Repository", "Template", "Trainings", "Updated", "Description",
                  box=None, header_style="bold")
    for r in rows:
        table.add_row(r["full_name"], r.get("template") or "-", str(r.get("trainings", 0)),
                      fmt.when(r.get("updated_at")), r.get("description") or "")
    out.print(table if rows else "no repositories yet: `trainyard repos fork NAME`")


@repos.command("fork")
def fork(name: Annotated[str, typer.Argument(help="Name of the new repository.")],
         template: Annotated[str, typer.Option(help="Built-in sample to fork.")] = "resnet50",
         description: Annotated[str, typer.Option(help="A line about it.")] = "",
         url: UrlOption = None, token: TokenOption = None) -> None:
    """Create a repository from a built-in sample."""
    with connect(url, token) as api:
        repo = api.request("POST", "/api/v1/repos/fork", json={
            "name": name, "template": template, "description": description}).json()
    out.print(f"created {repo['full_name']} from the {template} sample")


@repos.command("push")
def push(name: Annotated[str, typer.Argument(help="Name of the new repository.")],
         directory: Annotated[Path, typer.Argument(metavar="DIR",
                                                   help="Folder holding the code.")],
         url: UrlOption = None, token: TokenOption = None) -> None:
    """Create a repository from a local folder (sent as a .tar.gz)."""
    with connect(url, token) as api, packed_dir(directory) as (archive, count):
        repo = post_files(api, "/api/v1/repos/upload", data={"name": name},
                          files=[("archive", archive, f"{name}.tar.gz")])
    out.print(f"created {repo['full_name']} from {directory} ({count} files)")


@repos.command("files")
def files(repo: RepoArg, url: UrlOption = None, token: TokenOption = None) -> None:
    """The files of a repository."""
    with connect(url, token) as api:
        detail = api.get_json(repo_path(repo))
    table = Table("Path", "Size", "Modified", box=None, header_style="bold")
    for f in detail.get("files", []):
        table.add_row(f["path"], fmt.size(f.get("size")), fmt.when(f.get("modified_at")))
    out.print(table)


@repos.command("cat")
def cat(repo: RepoArg, path: Annotated[str, typer.Argument(help="File inside the repository.")],
        url: UrlOption = None, token: TokenOption = None) -> None:
    """Print a file of a repository."""
    with connect(url, token) as api, api.stream("GET", repo_path(repo, "files", path)) as r:
        for chunk in r.iter_bytes(CHUNK):
            write_stdout(chunk)


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


@repos.command("put")
def put(repo: RepoArg,
        path: Annotated[str, typer.Argument(help="File inside the repository.")],
        local_file: Annotated[Path, typer.Argument(help="Local file to upload.")],
        url: UrlOption = None, token: TokenOption = None) -> None:
    """Create or replace a file of a repository with a local file."""
    if not local_file.is_file():
        die(f"{local_file} is not a file")
    length = local_file.stat().st_size
    with connect(url, token) as api:
        written = api.request("PUT", repo_path(repo, "files", path), content=_chunks(local_file),
                              headers={"Content-Type": "application/octet-stream",
                                       "Content-Length": str(length)}).json()
    err.print(f"wrote {written['path']} ({fmt.size(written['size'])}) in {repo}")
