"""Shared fixtures: live platforms on SQLite and PostgreSQL, databases, paths."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.live import Live, start_live

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PG_ADMIN_URL = os.environ.get("TRAINYARD_TEST_PG_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")
# CI sets this: a skip then fails the run, except for tests that need ../shared/data, which a
# checkout elsewhere does not have.
STRICT_SKIPS = os.environ.get("TRAINYARD_STRICT_SKIPS") == "1"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In strict mode, turn every skip outside the `shared_data` tests into a failure."""
    if not STRICT_SKIPS:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    hidden = [r for r in skipped if "shared_data" not in getattr(r, "keywords", {})]
    if hidden:
        for report in hidden:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
            print(f"\nSKIP NOT ALLOWED IN CI: {report.nodeid}: {reason}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _postgres_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test run (dropped afterwards)."""
    if not _postgres_available():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    name = f"trainyard_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg", database=name) \
        .render_as_string(hide_password=False)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """`trainyard up` on SQLite with an embedded Redis and a real Celery worker."""
    platform = start_live(tmp_path_factory.mktemp("live") / "data")
    yield platform
    platform.stop()


@pytest.fixture(scope="session")
def live_pg(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Live]:
    """`trainyard up` on PostgreSQL."""
    platform = start_live(tmp_path_factory.mktemp("live-pg") / "data",
                          database_url=postgres_url)
    yield platform
    platform.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_live(request: pytest.FixtureRequest) -> Live:
    """Each live platform in turn: the test runs on SQLite and on PostgreSQL."""
    name = "live" if request.param == "sqlite" else "live_pg"
    platform: Live = request.getfixturevalue(name)
    return platform
