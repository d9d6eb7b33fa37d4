"""SQLite under lock contention: readers never wait, a writer that cannot get the lock gets a
503 with Retry-After and leaves nothing behind."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.inproc import in_process_api


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app in this process on a fresh SQLite database with a 0.5 s busy timeout."""
    with in_process_api(tmp_path, monkeypatch, sqlite_busy_timeout_s=0.5) as client:
        yield client


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
