"""Shared fixtures: live platforms on SQLite and PostgreSQL, databases, paths."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine
from app.migrate import upgrade_to_head
from tests.browser import launch
from tests.live import Live, start_live
from tests.pg import private_database

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test run (dropped afterwards)."""
    with private_database("trainyard_test_") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """Sessions on a migrated database of the test's own, SQLite then PostgreSQL (not the
    live platforms' database: they hold the real reconciler lease and services)."""
    with ExitStack() as stack:
        url = (f"sqlite:///{tmp_path / 'own.db'}" if request.param == "sqlite"
               else stack.enter_context(private_database()))
        upgrade_to_head(url)
        engine = make_engine(url)
        yield sessionmaker(bind=engine)
        engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, one per module."""
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


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
