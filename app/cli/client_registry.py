"""`trainyard datasets ...` and `trainyard models ...`: list, upload, import."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from app.cli import client_format as fmt
from app.cli.client_api import (
    SLOW_TIMEOUT,
    TokenOption,
    UrlOption,
    connect,
    die,
    err,
    out,
    split_repo,
)
from app.cli.client_transfer import post_files, upload_source

datasets = typer.Typer(help="Datasets trainings read as `datasets/<owner>/<name>/`.",
                       no_args_is_help=True)
models = typer.Typer(help="Models: checkpoints to start from or to serve.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="Name to give it.")]


def _full_name(row: dict[str, Any]) -> str:
    owner = row.get("owner")
    if isinstance(owner, dict):
        owner = owner.get("username")
    return f"{owner}/{row['name']}" if owner else str(row["name"])


def _images(row: dict[str, Any]) -> str:
    info = row.get("info") or {}
    if "train_count" not in info:
        return "-"
    return f"{info['train_count']} train / {info.get('test_count', 0)} test, " \
           f"{len(info.get('classes', []))} classes"


def _table(rows: list[dict[str, Any]], kind: str) -> None:
    if not rows:
        out.print(f"no {kind} yet")
        return
    if kind == "datasets":
        table = Table("Name", "Format", "Images", "Size", "Created", box=None,
                      header_style="bold")
        for row in rows:
            table.add_row(_full_name(row), str(row.get("format") or "-"), _images(row),
                          fmt.size(row.get("size_bytes")), fmt.when(row.get("created_at")))
    else:
        table = Table("Name", "Description", "Files", "Size", "Created", box=None,
                      header_style="bold")
        for row in rows:
            table.add_row(_full_name(row), str(row.get("description") or "-"),
                          str(len(row.get("files", []))), fmt.size(row.get("size_bytes")),
                          fmt.when(row.get("created_at")))
    out.print(table)


@datasets.command("list")
def list_datasets(url: UrlOption = None, token: TokenOption = None) -> None:
    """Datasets you can use."""
    with connect(url, token) as api:
        _table(api.get_json("/api/v1/datasets"), "datasets")


VisibilityFlag = Annotated[bool | None, typer.Option(
    "--public/--private", help="Every user may use it, or only you (and admins). Default: "
    "private; an admin's are public.", show_default=False)]


def visibility_fields(public: bool | None) -> dict[str, str]:
    """The form field for `--public/--private` (none: the server's default applies)."""
    return {} if public is None else {"is_public": str(public).lower()}


def _ready(kind: str, created: dict[str, Any]) -> None:
    out.print(f"{kind} {_full_name(created)} is ready ({fmt.size(created.get('size_bytes'))})")
    if created.get("input_url"):
        out.print(f"use it in a config's inputs as: {created['input_url']}")


@datasets.command("import")
def import_dataset(
        name: NameArg,
        source: Annotated[str, typer.Argument(
            metavar="PATH", help="A folder, or a .zip/.tar.gz: CIFAR-10 binary files or "
            "train/<class>/ + test/<class>/ images (with --from-url: a URL).")],
        on_server: Annotated[bool, typer.Option(
            "--on-server", help="PATH is on the server's disk: import it there (admins only).")
        ] = False,
        from_url: Annotated[bool, typer.Option(
            "--from-url", help="PATH is a URL of an archive the server downloads (admins only).")
        ] = False,
        sha256: Annotated[str | None, typer.Option(
            help="With --from-url: the archive's expected SHA-256.")] = None,
        md5: Annotated[str | None, typer.Option(
            help="With --from-url: the archive's expected MD5.")] = None,
        public: VisibilityFlag = None,
        url: UrlOption = None, token: TokenOption = None) -> None:
    """Upload a dataset (a folder is packed as .tar.gz first), or import one on the server."""
    if on_server and from_url:
        die("--on-server and --from-url exclude each other")
    if (sha256 or md5) and not from_url:
        die("--sha256/--md5 check a download: use them with --from-url")
    with connect(url, token) as api:
        if on_server or from_url:
            body: dict[str, Any] = {"name": name, "url" if from_url else "path": source}
            if public is not None:
                body["is_public"] = public
            body.update({k: v for k, v in (("sha256", sha256), ("md5", md5)) if v})
            with err.status("importing on the server ..."):
                created = api.request("POST", "/api/v1/datasets/import", timeout=SLOW_TIMEOUT,
                                      json=body).json()
        else:
            path = Path(source)
            with upload_source(path) as archive:
                filename = archive.name if archive == path else f"{name}.tar.gz"
                created = post_files(api, "/api/v1/datasets/upload",
                                     data={"name": name, **visibility_fields(public)},
                                     files=[("archive", archive, filename)])
    _ready("dataset", created)


@models.command("list")
def list_models(url: UrlOption = None, token: TokenOption = None) -> None:
    """Models you can use."""
    with connect(url, token) as api:
        _table(api.get_json("/api/v1/models"), "models")


@models.command("upload")
def upload_model(name: NameArg,
                 files: Annotated[list[Path], typer.Argument(
                     metavar="FILE...", help="Checkpoint files (.ckpt) and any others.")],
                 description: Annotated[str, typer.Option(help="A line about it.")] = "",
                 public: VisibilityFlag = None,
                 url: UrlOption = None, token: TokenOption = None) -> None:
    """Upload checkpoint files as a model."""
    for f in files:
        if not f.is_file():
            die(f"{f} is not a file")
    if len({f.name for f in files}) != len(files):
        die("two of the files have the same name; a model's files sit in one folder")
    with connect(url, token) as api:
        created = post_files(api, "/api/v1/models",
                             data={"name": name, "description": description,
                                   **visibility_fields(public)},
                             files=[("file", f, f.name) for f in files])
    _ready("model", created)


FullNameArg = Annotated[str, typer.Argument(metavar="OWNER/NAME", help="e.g. alice/cifar10.")]
ChoiceArg = Annotated[str, typer.Argument(metavar="public|private",
                                          help="public: every user may use it; private: you.")]


def _set_visibility(kind: str, full_name: str, choice: str, url: str | None,
                    token: str | None) -> None:
    if choice not in ("public", "private"):
        die(f"say 'public' or 'private', not '{choice}'")
    owner, _, name = full_name.partition("/")
    if not owner or not name:
        die(f"{full_name}: give it as OWNER/NAME")
    with connect(url, token) as api:
        api.request("PATCH", f"/api/v1/{kind}s/{owner}/{name}",
                    json={"is_public": choice == "public"})
    out.print(f"{kind} {owner}/{name} is now {choice}")


@datasets.command("visibility")
def dataset_visibility(full_name: FullNameArg, choice: ChoiceArg, url: UrlOption = None,
                       token: TokenOption = None) -> None:
    """Make one of your datasets public or private."""
    _set_visibility("dataset", full_name, choice, url, token)


@models.command("visibility")
def model_visibility(full_name: FullNameArg, choice: ChoiceArg, url: UrlOption = None,
                     token: TokenOption = None) -> None:
    """Make one of your models public or private."""
    _set_visibility("model", full_name, choice, url, token)


YesFlag = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")]


def _delete(kind: str, full_name: str, yes: bool, url: str | None, token: str | None) -> None:
    owner, name = split_repo(full_name)
    if not yes:
        if not sys.stdin.isatty():
            die("deleting needs confirmation: pass --yes")
        typer.confirm(f"Delete {kind[:-1]} {owner}/{name} and its files?", abort=True)
    with connect(url, token) as api:
        api.request("DELETE", f"/api/v1/{kind}/{quote(owner)}/{quote(name)}")
    out.print(f"deleted {kind[:-1]} {owner}/{name}")


@datasets.command("delete")
def delete_dataset(full_name: FullNameArg, yes: YesFlag = False,
                   url: UrlOption = None, token: TokenOption = None) -> None:
    """Delete one of your datasets and its files."""
    _delete("datasets", full_name, yes, url, token)


@models.command("delete")
def delete_model(full_name: FullNameArg, yes: YesFlag = False,
                 url: UrlOption = None, token: TokenOption = None) -> None:
    """Delete one of your models and its files."""
    _delete("models", full_name, yes, url, token)
