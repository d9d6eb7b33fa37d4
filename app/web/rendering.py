"""Jinja2 templates, their filters, and the static files of the dashboard."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import Scope

from app.models import FINISHED, Training, User
from app.trainings.runtimes import sandbox_state
from app.units import format_bytes
from app.web.session import CSRF_FORM_FIELD, csrf_token, pop_flash

FRONTEND = Path(__file__).resolve().parents[2] / "frontend"
TEMPLATES_DIR = FRONTEND / "templates"
STATIC_DIR = FRONTEND / "static"

# Pages load only this origin's scripts and styles: no inline script, nothing from elsewhere.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; "
                           "style-src 'self'; script-src 'self'; object-src 'none'; "
                           "frame-ancestors 'self'; base-uri 'self'; form-action 'self'")


def format_duration(seconds: float | None) -> str:
    """`42s`, `3m 05s`, `1h 02m` (an em dash when unknown)."""
    if seconds is None:
        return "—"
    total = int(seconds)
    if total < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_size(size: int | None) -> str:
    """A byte count for people: `812 B`, `1.4 kB`, `94.3 MB` (decimal units, as the CLI)."""
    return "—" if size is None else format_bytes(size)


def format_time(moment: datetime | None) -> str:
    """A UTC timestamp as text (the browser shows it in local time)."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(moment: datetime | None) -> str:
    """An ISO 8601 timestamp for `<time datetime>` and scripts."""
    return "" if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def elapsed_s(training: Training) -> float | None:
    """How long a training has run: its recorded duration, or the time since it started."""
    if training.duration_s is not None:
        return training.duration_s
    if training.started_at is not None and not training.state.finished:
        return (datetime.now(UTC) - training.started_at).total_seconds()
    return None


def pretty_json(value: Any) -> str:
    """Indented JSON for reading."""
    return json.dumps(value, indent=2, ensure_ascii=False)


templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.filters.update(duration=format_duration, filesize=format_size,
                             timestamp=format_time, isotime=iso_time, pretty_json=pretty_json)
templates.env.globals.update(elapsed_s=elapsed_s, CSRF_FORM_FIELD=CSRF_FORM_FIELD,
                             sandbox_state=sandbox_state,
                             FINISHED_STATUSES=" ".join(sorted(FINISHED)))


def render(request: Request, name: str, context: dict[str, Any] | None = None, *,
           user: User | None = None, status: int = 200) -> HTMLResponse:
    """A page from `frontend/templates`, with the user, CSRF token and queued message."""
    ctx = {"user": user, "csrf_token": csrf_token(request), "flash": pop_flash(request),
           **(context or {})}
    response = templates.TemplateResponse(request, name, ctx, status_code=status)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


class RevalidatedStaticFiles(StaticFiles):
    """Static files the browser revalidates on every load (a cheap 304), so upgrades show."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response
