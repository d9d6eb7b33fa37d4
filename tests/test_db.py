"""SQLite under lock contention: readers never wait, a writer that cannot get the lock gets a
503 with Retry-After and leaves nothing behind."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.auth.service import ensure_admin
from app.config import get_settings
from app.db import get_sessionmaker, reset_engine
from app.main import create_app
from app.migrate import upgrade_to_head


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app in this process on a fresh SQLite database with a 0.5 s busy timeout."""
    for name in ("TRAINYARD_DATABASE_URL", "TRAINYARD_REDIS_URL", "TRAINYARD_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRAINYARD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TRAINYARD_SQLITE_BUSY_TIMEOUT_S", "0.5")
    get_settings.cache_clear()
    reset_engine()
    upgrade_to_head()
    with get_sessionmaker()() as db:
        token = ensure_admin(db, token=None)
        db.commit()
    try:
        yield TestClient(create_app(), headers={"Authorization": f"Bearer {token}"})
    finally:
        reset_engine()
        get_settings.cache_clear()


def test_a_held_write_lock_gives_writers_a_503_and_readers_nothing(
        api: TestClient, tmp_path: Path) -> None:
    assert api.post("/api/v1/repos", json={"name": "first", "template": "resnet50"}) \
        .status_code == 201
    holder = sqlite3.connect(tmp_path / "trainyard.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        reads = api.get("/api/v1/repos")
        assert reads.status_code == 200 and [r["name"] for r in reads.json()] == ["first"]
        started = time.monotonic()
        busy = api.post("/api/v1/repos", json={"name": "second", "template": "resnet50"})
        waited = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert busy.status_code == 503, busy.text
    assert busy.json()["error"] == "busy" and int(busy.headers["Retry-After"]) > 0
    assert waited >= 0.5  # it waited for the lock, for the busy timeout
    assert not (tmp_path / "repos" / "admin" / "second").exists()
    again = api.post("/api/v1/repos", json={"name": "second", "template": "resnet50"})
    assert again.status_code == 201, again.text
