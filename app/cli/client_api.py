"""The client's connection to a Trainyard server: settings, config file, requests, errors."""

from __future__ import annotations

import os
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.markup import escape

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

PROFILE = "default"
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# Uploads end with server-side work (unpacking, converting a dataset) before the answer comes.
SLOW_TIMEOUT = httpx.Timeout(30.0, connect=10.0, read=900.0)
RETRYABLE_STATUS = frozenset({502, 503, 504})

UrlOption = Annotated[str | None, typer.Option(
    "--url", envvar="TRAINYARD_URL", show_envvar=True, rich_help_panel="Connection",
    help="Server URL; by default the one saved by `trainyard login`.")]
TokenOption = Annotated[str | None, typer.Option(
    "--token", envvar="TRAINYARD_TOKEN", show_envvar=True, rich_help_panel="Connection",
    help="API token; by default the one saved for that URL.")]


def die(message: str, *details: str, code: int = 1) -> NoReturn:
    """Print an error (and indented detail lines) to stderr and exit with `code`."""
    err.print(f"[bold red]Error:[/] {escape(message)}")
    for line in details:
        err.print(f"  {escape(line)}")
    raise typer.Exit(code)


def error_lines(body: Any) -> tuple[str, list[str]]:
    """The headline and one line per field of an API error body `{"error", "detail", "fields"}`."""
    if not isinstance(body, dict):
        return str(body), []
    detail = str(body.get("detail") or "")
    lines = [f"{f.get('field', '?')}: {f.get('message', '')}" for f in body.get("fields") or []
             if isinstance(f, dict)]
    # The detail often ends by repeating the field lines: keep only what comes before them.
    cut = min((i for i in (detail.find(line) for line in lines) if i >= 0), default=-1)
    if cut >= 0:
        detail = detail[:cut].rstrip(" :;,")
    if not detail and lines:
        detail = "the request has 1 problem" if len(lines) == 1 else \
            f"the request has {len(lines)} problems"
    return detail or str(body.get("error") or "request failed").replace("_", " "), lines


def fail_response(response: httpx.Response) -> NoReturn:
    """Exit with a readable message for an error response (its body must be read)."""
    request = response.request
    label = f"{response.status_code}"
    try:
        body = response.json()
        headline, lines = error_lines(body)
        if isinstance(body, dict) and body.get("error"):
            label += f" {body['error']}"
    except ValueError:
        headline, lines = response.text.strip()[:300] or response.reason_phrase, []
    if response.status_code == 401:
        lines.append("check the token: `trainyard login`, --token or TRAINYARD_TOKEN")
    die(f"{headline} [{label}]", *lines, f"({request.method} {request.url})")


def fail_transport(exc: httpx.TransportError) -> NoReturn:
    """Exit with a message naming the URL that could not be reached."""
    try:
        url = str(exc.request.url)
    except RuntimeError:
        url = "the server"
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        reason = f"timed out ({type(exc).__name__})"
    die(f"cannot reach {url}: {reason}")


# --- where the connection settings come from ---------------------------------------------------

def config_path() -> Path:
    """`$XDG_CONFIG_HOME/trainyard/config.toml` (default `~/.config/trainyard/config.toml`)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "trainyard" / "config.toml"


def read_config() -> dict[str, Any]:
    """The whole config file (empty when there is none)."""
    path = config_path()
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        die(f"cannot read the config file {path}: {exc}")


def write_config(*, url: str, token: str) -> Path:
    """Store url and token as the default profile, readable by the owner only."""
    import tomli_w

    path = config_path()
    data = read_config()
    data[PROFILE] = {**data.get(PROFILE, {}), "url": url, "token": token}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".toml")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            tomli_w.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def normalize_url(url: str) -> str:
    """`host:port` -> `http://host:port`, without a trailing slash."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    return url


@dataclass(frozen=True)
class Connection:
    """Where to send requests and with which token."""

    url: str
    token: str | None


def resolve_connection(url: str | None, token: str | None) -> Connection:
    """Flags, then environment (both given here by typer), then the config file."""
    profile = read_config().get(PROFILE, {})
    saved_url = normalize_url(str(profile["url"])) if profile.get("url") else None
    if not url and not saved_url:
        die("no server URL: pass --url, set TRAINYARD_URL or run `trainyard login`")
    final_url = normalize_url(url) if url else str(saved_url)
    # The saved token belongs to the saved server: never send it anywhere else.
    if not token and final_url == saved_url and profile.get("token"):
        token = str(profile["token"])
    return Connection(url=final_url, token=token)


# --- requests ----------------------------------------------------------------------------------

class Api:
    """An httpx client for one server; every error ends the command with a readable message."""

    def __init__(self, conn: Connection) -> None:
        headers = {"User-Agent": "trainyard-cli"}
        if conn.token:
            headers["Authorization"] = f"Bearer {conn.token}"
        self.url = conn.url
        self.http = httpx.Client(base_url=conn.url, headers=headers, timeout=TIMEOUT)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; exits on a connection error or an error status."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            fail_transport(exc)
        if response.is_error:
            fail_response(response)
        return response

    def get_json(self, path: str, **kwargs: Any) -> Any:
        """GET a JSON document."""
        return self.request("GET", path, **kwargs).json()

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response whose status was checked (the body is not read yet)."""
        try:
            with self.http.stream(method, path, **kwargs) as response:
                if response.is_error:
                    response.read()
                    fail_response(response)
                yield response
        except httpx.TransportError as exc:
            fail_transport(exc)


@contextmanager
def connect(url: str | None, token: str | None, *, need_token: bool = True) -> Iterator[Api]:
    """An `Api` for the resolved connection, closed afterwards."""
    conn = resolve_connection(url, token)
    if need_token and not conn.token:
        die(f"no API token for {conn.url}: pass --token, set TRAINYARD_TOKEN "
            "or run `trainyard login`")
    api = Api(conn)
    try:
        yield api
    finally:
        api.close()


def split_repo(full_name: str) -> tuple[str, str]:
    """`owner/name` -> (owner, name); exits when it is not in that form."""
    owner, sep, name = full_name.strip("/").partition("/")
    if not sep or not owner or not name or "/" in name:
        die(f"repository must be OWNER/NAME, got {full_name!r}")
    return owner, name


def write_stdout(data: bytes) -> None:
    """Raw bytes to stdout, flushed (for logs and file contents)."""
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
