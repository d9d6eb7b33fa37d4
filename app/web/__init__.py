"""The browser dashboard: server-rendered pages on the same services as the REST API."""

from __future__ import annotations

from fastapi import FastAPI

from app.web import actions, inference_page, router
from app.web.rendering import STATIC_DIR, RevalidatedStaticFiles
from app.web.session import install_sessions


def install_web(app: FastAPI) -> None:
    """Mount the pages, their static files and browser sessions on `app`."""
    install_sessions(app)
    app.mount("/static", RevalidatedStaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(router.router)
    app.include_router(actions.router)
    app.include_router(inference_page.page_router)
