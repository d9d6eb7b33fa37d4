"""`trainyard tokens ...`: list, create and revoke your API tokens (admins: anyone's)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer
from rich.table import Table

from app.cli import client_format as fmt
from app.cli.client_api import TokenOption, UrlOption, connect, err, out

tokens = typer.Typer(help="API tokens: list, create, revoke (yours, or with --user another "
                          "user's: admins only).", no_args_is_help=True)

UserOption = Annotated[str | None, typer.Option(
    "--user", metavar="NAME", help="Another user's tokens (admins only).")]


def _base(user: str | None) -> str:
    return "/api/v1/tokens" if user is None else f"/api/v1/users/{quote(user, safe='')}/tokens"


@tokens.command("list")
def list_tokens(user: UserOption = None, url: UrlOption = None,
                token: TokenOption = None) -> None:
    """Tokens: id, name, first characters, created and last used (never the secrets)."""
    with connect(url, token) as api:
        rows = api.get_json(_base(user))
    table = Table("Id", "Name", "Starts with", "Created", "Last used", "", box=None,
                  header_style="bold")
    for row in rows:
        table.add_row(str(row["id"]), row["name"], f"{row.get('prefix') or '?'}…",
                      fmt.when(row.get("created_at")), fmt.when(row.get("last_used_at")),
                      "(this one)" if row.get("current") else "")
    out.print(table)


@tokens.command("create")
def create_token(name: Annotated[str, typer.Argument(help="What the token is for.")],
                 user: UserOption = None, url: UrlOption = None,
                 token: TokenOption = None) -> None:
    """Create a named token and print its secret: this is the only time it is shown."""
    with connect(url, token) as api:
        created = api.request("POST", _base(user), json={"name": name}).json()
    whose = "" if user is None else f" for {user}"
    err.print(f"token {created['id']} '{created['name']}' created{whose}; copy it now, it is "
              "not shown again:")
    out.print(created["token"])


@tokens.command("revoke")
def revoke_token(token_id: Annotated[int, typer.Argument(metavar="ID",
                                                         help="The token's id (tokens list).")],
                 user: UserOption = None, url: UrlOption = None,
                 token: TokenOption = None) -> None:
    """Revoke a token: it stops working at once, with the browser sessions signed in with it."""
    with connect(url, token) as api:
        api.request("DELETE", f"{_base(user)}/{token_id}")
    out.print(f"token {token_id} revoked" + ("" if user is None else f" (of {user})"))
