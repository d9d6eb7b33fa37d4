"""Engine, sessions and the declarative base."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from app.config import get_settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every table; one metadata with a naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


_WRITE_STATEMENT = re.compile(
    r"\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|SAVEPOINT)\b", re.IGNORECASE)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer. The busy timeout (the driver's `timeout`,
    # set before this runs) makes a second writer wait for the lock instead of failing,
    # which is what serialises the per-repo rules.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin_immediate(_conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
    # The driver's own transaction handling is off (isolation_level=None), so reads run in
    # autocommit and never hold a lock. A transaction starts at its first write, with
    # BEGIN IMMEDIATE: it waits (busy_timeout) for the write lock at its start instead of
    # upgrading a stale read snapshot later, which SQLite refuses at once ("database is
    # locked", SQLITE_BUSY_SNAPSHOT) without waiting.
    if not cursor.connection.in_transaction and _WRITE_STATEMENT.match(statement):
        cursor.execute("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """An engine for `url`, with SQLite tuned for concurrent use (see docs/architecture.md)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={
            "check_same_thread": False, "timeout": get_settings().sqlite_busy_timeout_s,
            "isolation_level": None})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "before_cursor_execute", _sqlite_begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def is_database_busy(exc: BaseException) -> bool:
    """Whether `exc` is the database refusing for now (lock wait over, deadlock, conflict)."""
    if not isinstance(exc, DBAPIError):
        return False
    if "database is locked" in str(exc.orig) or "database is busy" in str(exc.orig):
        return True
    # PostgreSQL: serialization failure, deadlock detected, lock not available.
    return getattr(exc.orig, "sqlstate", None) in {"40001", "40P01", "55P03"}


@lru_cache
def get_engine() -> Engine:
    """The process-wide engine for the configured database."""
    return make_engine(get_settings().sqlalchemy_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    """The process-wide session factory."""
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def reset_engine() -> None:
    """Forget the cached engine (after settings change, in tests and forked workers)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()


def get_db() -> Iterator[Session]:
    """A session per request; routes commit through `transaction`, anything else is rolled back."""
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_db)]


@dataclass
class Cleanup:
    """Files to remove once the rows that named them are gone for good.

    A deletion service deletes rows, flushes, and returns the files those rows owned; the route
    runs it after its commit, so a commit that fails leaves every file its rows still name.
    """

    paths: list[Path] = field(default_factory=list)

    def add(self, *paths: Path) -> Cleanup:
        """Also remove `paths` (files or folders)."""
        self.paths.extend(paths)
        return self

    def run(self) -> None:
        """Remove the files (what is already gone is skipped)."""
        for path in self.paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


class Transaction:
    """The unit of work a `transaction` block runs: what to undo if it does not commit."""

    def __init__(self) -> None:
        self.undo = Cleanup()

    def on_rollback(self, *paths: Path) -> None:
        """Remove `paths` if the transaction does not commit: files written for new rows."""
        self.undo.add(*paths)


@contextmanager
def transaction(db: Session) -> Iterator[Transaction]:
    """The one place a request ends its writes: commit when the block succeeds; when it raises
    or the commit fails, roll back and remove the files registered with `on_rollback`.

    Services only flush. Run the block from its first write to its end in one thread (a sync
    route, or one `run_in_threadpool` call), so SQLite's write lock is never held across an
    `await`; run the deletion `Cleanup` the block returns after it.
    """
    txn = Transaction()
    try:
        yield txn
        db.commit()
    except BaseException:
        try:
            db.rollback()
        finally:
            txn.undo.run()
        raise
