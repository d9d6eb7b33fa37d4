"""The FastAPI application: routers, error handlers, pages and static files."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import text

from app import __doc__ as description
from app.auth.router import router as auth_router
from app.db import get_engine
from app.errors import install_error_handlers
from app.repos.router import router as repos_router
from app.trainings.router import router as trainings_router

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"


def create_app() -> FastAPI:
    """Build the application with every router."""
    app = FastAPI(title="Trainyard", version="0.1.0", description=description or "")
    install_error_handlers(app)

    @app.get("/api/v1/health", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness: the API answers and the database is reachable."""
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ok"}

    for router in (auth_router, repos_router, trainings_router):
        app.include_router(router)
    return app
