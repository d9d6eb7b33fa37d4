"""Path and query parameter types shared by routers, bounded to what the database can hold."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

# SQLite and PostgreSQL (BIGINT) integers are signed 64-bit: a larger id can never match a row,
# and binding it raises inside the driver, so it is refused as a 422 before any query.
DB_INT_MAX = 2**63 - 1

TrainingId = Annotated[int, Path(ge=1, le=DB_INT_MAX, description="The training's id.")]
TokenId = Annotated[int, Path(ge=1, le=DB_INT_MAX, description="The API token's id.")]
Username = Annotated[str, Path(min_length=1, max_length=40, description="The user's name.")]
