"""`trainyard logs`: print a training's log in pages, or follow its event stream."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import httpx
import typer
from httpx_sse import SSEError, connect_sse

from app.cli.client_api import (
    RETRYABLE_STATUS,
    Api,
    TokenOption,
    UrlOption,
    connect,
    die,
    err,
    fail_response,
    write_stdout,
)
from app.statuses import TrainingStatus

PAGE = 1024 * 1024
STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)  # the server pings every 15 s
RETRY_DELAYS = (0.5, 1, 2, 4, 5, 5, 5, 5, 5, 5)  # about 40 s of retries without any progress


def print_log(api: Api, training_id: int) -> None:
    """Write the log to stdout a page at a time, up to its size when the first page came."""
    offset = 0
    end: int | None = None
    while end is None or offset < end:
        response = api.request("GET", f"/api/v1/trainings/{training_id}/log",
                               params={"offset": offset, "limit": PAGE})
        data = response.content
        if not data:
            break
        write_stdout(data)
        offset = int(response.headers.get("X-Next-Offset", offset + len(data)))
        if end is None:
            end = int(response.headers.get("X-Log-Size", offset))


class _Follower:
    """Follows `/log/stream`, resuming after the last event it saw when the connection drops."""

    def __init__(self, api: Api, training_id: int) -> None:
        self.api = api
        self.path = f"/api/v1/trainings/{training_id}/log/stream"
        self.last_id = ""
        self.status = ""
        self.end: str | None = None

    def _read_once(self) -> bool:
        """One connection; returns True when an event arrived (progress was made)."""
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        progressed = False
        with connect_sse(self.api.http, "GET", self.path, headers=headers,
                         timeout=STREAM_TIMEOUT) as source:
            response = source.response
            if response.status_code in RETRYABLE_STATUS:
                return False
            if response.is_error:
                response.read()
                fail_response(response)
            for event in source.iter_sse():
                progressed = True
                if event.event == "log":
                    sys.stdout.write(event.data)
                    sys.stdout.flush()
                    if event.id:
                        self.last_id = event.id
                elif event.event == "status" and event.data != self.status:
                    self.status = event.data
                    err.print(f"[dim]-- status: {event.data}[/]")
                elif event.event == "end":
                    self.end = event.data
                    return True
        return progressed

    def run(self) -> str:
        """Follow until the `end` event; returns the final status ('deleted' if it vanished)."""
        failures = 0
        while self.end is None:
            problem = "the stream closed early"
            try:
                if self._read_once():
                    failures = 0
                    continue
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            except SSEError as exc:
                die(f"{self.api.url}{self.path} did not answer with an event stream: {exc}")
            if failures >= len(RETRY_DELAYS):
                die(f"lost {self.api.url}{self.path} and could not reconnect ({problem})")
            err.print(f"[dim]-- reconnecting ({problem})[/]")
            time.sleep(RETRY_DELAYS[failures])
            failures += 1
        return self.end


def follow_log(api: Api, training_id: int) -> int:
    """Stream the log until the training ends; the exit code: 0 if it Completed, else 1."""
    try:
        final = _Follower(api, training_id).run()
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if final == "deleted":
        err.print(f"training {training_id} was deleted")
        return 1
    if not final:
        final = api.get_json(f"/api/v1/trainings/{training_id}")["status"]
    colour = "green" if final == TrainingStatus.COMPLETED else "red"
    err.print(f"training {training_id} ended: [bold {colour}]{final}[/]")
    return 0 if final == TrainingStatus.COMPLETED else 1


def logs(training_id: Annotated[int, typer.Argument(metavar="ID", help="Training id.")],
         follow: Annotated[bool, typer.Option(
             "--follow", "-f", help="Keep printing until the training ends; the exit code is "
             "0 when it Completed, 1 otherwise.")] = False,
         url: UrlOption = None, token: TokenOption = None) -> None:
    """Print a training's log."""
    with connect(url, token) as api:
        if not follow:
            print_log(api, training_id)
            return
        code = follow_log(api, training_id)
    raise typer.Exit(code)
