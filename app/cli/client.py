"""Client commands over the REST API (submit, list, logs, terminate, outputs, datasets)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the client commands to the `trainyard` command."""
    del app
