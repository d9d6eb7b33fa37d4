"""Client commands over the REST API (submit, list, logs, terminate, outputs, datasets,
evaluate, predict, publish)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.client_api import Api, Connection, die, normalize_url, out, write_config
from app.cli.client_ml import register_ml
from app.cli.client_registry import datasets, models
from app.cli.client_repos import repos
from app.cli.client_trainings import register_trainings
from app.cli.client_workers import workers


def login(url: Annotated[str, typer.Option(envvar="TRAINYARD_URL", show_envvar=True,
                                           help="Server URL, e.g. http://127.0.0.1:8000.")],
          token: Annotated[str, typer.Option(envvar="TRAINYARD_TOKEN", show_envvar=True,
                                             prompt=True, hide_input=True,
                                             help="Your API token.")]) -> None:
    """Check a server URL and token, then save them in the config file for later commands."""
    conn = Connection(url=normalize_url(url), token=token.strip())
    if not conn.token:
        die("the token is empty")
    api = Api(conn)
    try:
        me = api.get_json("/api/v1/me")
    finally:
        api.close()
    path = write_config(url=conn.url, token=str(conn.token))
    out.print(f"logged in to {conn.url} as {me['username']}"
              f"{' (admin)' if me.get('is_admin') else ''}; saved in {path}")


def register(app: typer.Typer) -> None:
    """Add the client commands to the `trainyard` command."""
    app.command(rich_help_panel="Client")(login)
    register_trainings(app, panel="Client")
    register_ml(app, panel="Client")
    app.command(rich_help_panel="Client")(workers)
    app.add_typer(repos, name="repos", rich_help_panel="Client")
    app.add_typer(datasets, name="datasets", rich_help_panel="Client")
    app.add_typer(models, name="models", rich_help_panel="Client")
