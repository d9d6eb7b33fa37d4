"""`trainyard workers`: the workers, their heartbeats and what they run, and the queues."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from app.cli import client_format as fmt
from app.cli.client_api import TokenOption, UrlOption, connect, out


def workers(as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]
            = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """Queues and online workers per instance type; every worker too for admins."""
    with connect(url, token) as api:
        data = api.get_json("/api/v1/workers")
    if as_json:
        out.print_json(data=data)
        return
    types = Table("Instance type", "Queue", "Waiting", "Pending", "Online workers",
                  "Busy slots", box=None, header_style="bold")
    for t in data["instance_types"]:
        depth = "?" if t["queue_depth"] is None else str(t["queue_depth"])
        types.add_row(t["flavor"], t["queue"], depth, str(t["pending"]),
                      str(t["online_workers"]), f"{t['busy_slots']}/{t['slots']}")
    out.print(types)
    if not data["redis_reachable"]:
        out.print("[red]Redis cannot be reached: queue depths are unknown[/]")
    rows = data.get("workers")
    if rows is None:
        return
    out.print()
    if not rows:
        out.print("no worker has registered yet: start one with `trainyard worker`")
        return
    table = Table("Worker", "State", "Host/pid", "Queues", "Slots", "Last heartbeat",
                  "Running", "Version", box=None, header_style="bold")
    for w in rows:
        state = "[green]online[/]" if w["online"] else (
            "stopped" if w["stopped_at"] else "[red]lost[/]")
        table.add_row(w["name"], state, f"{w['host']}/{w['pid']}", ",".join(w["queues"]),
                      str(w["slots"]), f"{fmt.when(w['last_heartbeat_at'])} "
                      f"({w['heartbeat_age_s']:.0f} s ago)",
                      ", ".join(str(i) for i in w["running"]) or "-", w["version"])
    out.print(table)
