"""The FastAPI application: routers, error handlers, pages and static files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from app import __doc__ as description
from app.auth.router import router as auth_router
from app.config import get_settings
from app.datasets.router import router as datasets_router
from app.db import get_engine
from app.errors import install_error_handlers
from app.evaluations.manager import evaluations_lifespan
from app.evaluations.proxy import router as aim_proxy_router
from app.evaluations.router import router as evaluations_router
from app.guards import RefuseNulInUrl
from app.headers import SecurityHeadersMiddleware
from app.inference.router import router as inference_router
from app.inference.service import predictors_lifespan
from app.openapi import install_openapi
from app.repos.router import router as repos_router
from app.trainings.router import router as trainings_router
from app.trainings.runtimes import sandbox_state
from app.web import install_web
from app.workers.reconciler import Reconciler
from app.workers.router import router as workers_router

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"


@asynccontextmanager
async def reconciler_lifespan(_app: FastAPI) -> AsyncIterator[None]:
    """This API process's copy of the reconciler (a lease makes one copy active)."""
    settings = get_settings()
    if not (settings.run_reconciler and settings.redis_url):
        yield
        return
    reconciler = Reconciler().start()
    try:
        yield
    finally:
        await run_in_threadpool(reconciler.stop)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Child processes of the API (predictors, Aim UIs) and the reconciler live with it."""
    async with predictors_lifespan(app), evaluations_lifespan(app), reconciler_lifespan(app):
        yield


def create_app() -> FastAPI:
    """Build the application with every router."""
    app = FastAPI(title="Trainyard", version="0.1.0", description=description or "",
                  lifespan=lifespan)
    install_error_handlers(app)

    @app.get("/api/v1/health", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness, and whether user code runs sandboxed (`sandbox`: on or off, and why)."""
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        state = sandbox_state()
        return {"status": "ok", "sandbox": state.label, "sandbox_reason": state.reason}

    routers = (auth_router, repos_router, trainings_router, datasets_router, inference_router,
               evaluations_router, aim_proxy_router, workers_router)
    for router in routers:
        app.include_router(router)
    install_web(app)  # dashboard pages, /static, browser sessions
    app.add_middleware(SecurityHeadersMiddleware)
    install_openapi(app, routers)  # errors documented as the one shape they are sent in
    app.add_middleware(RefuseNulInUrl)
    return app
