"""The app in the test process (no lifespan: no reconciler, no services) on a fresh database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.auth.service import ensure_admin
from app.config import get_settings
from app.db import get_sessionmaker, reset_engine
from app.main import create_app
from app.migrate import upgrade_to_head


@contextmanager
def in_process_api(data_dir: Path, monkeypatch: pytest.MonkeyPatch, *,
                   database_url: str | None = None, sqlite_busy_timeout_s: float | None = None,
                   raise_server_exceptions: bool = True) -> Iterator[TestClient]:
    """A client of the app as the admin, on SQLite in `data_dir` or on `database_url`."""
    for name in ("TRAINYARD_DATABASE_URL", "TRAINYARD_REDIS_URL", "TRAINYARD_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRAINYARD_DATA_DIR", str(data_dir))
    if database_url is not None:
        monkeypatch.setenv("TRAINYARD_DATABASE_URL", database_url)
    if sqlite_busy_timeout_s is not None:
        monkeypatch.setenv("TRAINYARD_SQLITE_BUSY_TIMEOUT_S", str(sqlite_busy_timeout_s))
    get_settings.cache_clear()
    reset_engine()
    upgrade_to_head()
    with get_sessionmaker()() as db:
        token = ensure_admin(db, token=None)
        db.commit()
    try:
        yield TestClient(create_app(), headers={"Authorization": f"Bearer {token}"},
                         raise_server_exceptions=raise_server_exceptions)
    finally:
        reset_engine()
        get_settings.cache_clear()
