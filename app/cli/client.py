"""Client commands over the REST API (submit, list, logs, terminate, outputs, datasets,
evaluate, predict, publish)."""

from __future__ import annotations

import os
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape

from app.cli.client_api import (
    Api,
    Connection,
    TokenOption,
    UrlOption,
    config_path,
    die,
    err,
    normalize_url,
    out,
    resolve_connection,
    write_config,
)
from app.cli.client_ml import register_ml
from app.cli.client_registry import datasets, models
from app.cli.client_repos import repos
from app.cli.client_tokens import tokens
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
    me = _me(conn)
    path = write_config(url=conn.url, token=str(conn.token))
    out.print(f"logged in to {conn.url} as {_who(me)}; saved in {path}")
    _warn_environment(conn)


def _me(conn: Connection) -> dict[str, Any]:
    api = Api(conn)
    try:
        me: dict[str, Any] = api.get_json("/api/v1/me")
    finally:
        api.close()
    return me


def _who(me: dict[str, Any]) -> str:
    return f"{me['username']}{' (admin)' if me.get('is_admin') else ''}"


def _warn_environment(saved: Connection) -> None:
    """Warn when TRAINYARD_URL or TRAINYARD_TOKEN will outrank what was just saved."""
    env_url = os.environ.get("TRAINYARD_URL")
    if env_url and normalize_url(env_url) != saved.url:
        err.print(f"[bold yellow]Warning:[/] TRAINYARD_URL={escape(env_url)} is set: commands "
                  f"will go there, not to {escape(saved.url)}, until you `unset TRAINYARD_URL`")
    env_token = (os.environ.get("TRAINYARD_TOKEN") or "").strip()
    if env_token and env_token != saved.token:
        target = normalize_url(env_url) if env_url else saved.url
        api = Api(Connection(url=target, token=env_token))
        try:
            answer = api.http.get("/api/v1/me")
            who = f"as {_who(answer.json())}" if answer.is_success else \
                f"with a token that {target} refuses ({answer.status_code})"
        except (httpx.HTTPError, ValueError):
            who = f"with a token {target} could not check"
        finally:
            api.close()
        err.print(f"[bold yellow]Warning:[/] TRAINYARD_TOKEN is set in the environment and "
                  f"outranks the saved login: commands will run {escape(who)}, until you "
                  "`unset TRAINYARD_TOKEN`")


def whoami(url: UrlOption = None, token: TokenOption = None) -> None:
    """Who the commands run as, on which server, and where the token comes from."""
    conn = resolve_connection(url, token)
    if not conn.token:
        die(f"not logged in to {conn.url}: run `trainyard login`")
    me = _me(conn)
    if token is None:
        source = f"saved login ({config_path()})"
    elif (os.environ.get("TRAINYARD_TOKEN") or "").strip() == token.strip():
        source = "the TRAINYARD_TOKEN environment variable"
    else:
        source = "--token"
    out.print(f"{_who(me)} at {conn.url} (token from {source})")


def register(app: typer.Typer) -> None:
    """Add the client commands to the `trainyard` command."""
    app.command(rich_help_panel="Client")(login)
    app.command(rich_help_panel="Client")(whoami)
    register_trainings(app, panel="Client")
    register_ml(app, panel="Client")
    app.command(rich_help_panel="Client")(workers)
    app.add_typer(repos, name="repos", rich_help_panel="Client")
    app.add_typer(datasets, name="datasets", rich_help_panel="Client")
    app.add_typer(models, name="models", rich_help_panel="Client")
    app.add_typer(tokens, name="tokens", rich_help_panel="Client")
