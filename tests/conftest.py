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
# Set where ../shared/data must be there: then a `shared_data` test that skips fails too.
REQUIRE_SHARED_DATA = os.environ.get("TRAINYARD_REQUIRE_SHARED_DATA") == "1"


def _skip_reason(report: pytest.TestReport) -> str:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
    return str(reason).removeprefix("Skipped: ")


def _forbidding_flag(report: pytest.TestReport) -> str | None:
    """The flag under which this skip fails the run, if it is set."""
    if "shared_data" in report.keywords:
        return "TRAINYARD_REQUIRE_SHARED_DATA=1" if REQUIRE_SHARED_DATA else None
    return "TRAINYARD_STRICT_SKIPS=1" if STRICT_SKIPS else None


def _skipped(config: pytest.Config) -> list[pytest.TestReport]:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return list(reporter.stats.get("skipped", [])) if reporter else []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run on a skip that a flag forbids: any skip outside the `shared_data` tests
    with TRAINYARD_STRICT_SKIPS=1, theirs too with TRAINYARD_REQUIRE_SHARED_DATA=1."""
    if any(_forbidding_flag(r) for r in _skipped(session.config)):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    """How many tests were skipped and why; the skips that failed the run by name."""
    skipped = _skipped(config)
    if not skipped:
        return
    terminalreporter.section(f"{len(skipped)} skipped")
    reasons: dict[str, int] = {}
    for report in skipped:
        reasons[_skip_reason(report)] = reasons.get(_skip_reason(report), 0) + 1
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{count:4d} x {reason}")
    for report in skipped:
        flag = _forbidding_flag(report)
        if flag:
            terminalreporter.write_line(f"SKIP NOT ALLOWED ({flag}): {report.nodeid}: "
                                        f"{_skip_reason(report)}", red=True)


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
