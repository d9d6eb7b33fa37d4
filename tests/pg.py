"""PostgreSQL for tests: whether it is reachable, and fresh databases that are dropped after."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get("TRAINYARD_TEST_PG_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")


def postgres_available() -> bool:
    """Whether the test server answers."""
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@contextmanager
def private_database(prefix: str = "trainyard_own_") -> Iterator[str]:
    """A fresh, empty PostgreSQL database (its SQLAlchemy URL), dropped afterwards."""
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg", database=name) \
            .render_as_string(hide_password=False)
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
