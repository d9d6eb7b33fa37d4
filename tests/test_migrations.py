"""The schema comes from Alembic alone, and it matches the models on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.db import Base, make_engine
from app.migrate import upgrade_to_head


def _assert_matches(url: str) -> None:
    upgrade_to_head(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    Base.metadata)
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert diff == []
    assert set(Base.metadata.tables) <= tables


def test_sqlite_schema_matches_models(tmp_path: Path) -> None:
    _assert_matches(f"sqlite:///{tmp_path / 'schema.db'}")


def test_postgresql_schema_matches_models(postgres_url: str) -> None:
    pytest.importorskip("psycopg")
    _assert_matches(postgres_url)
