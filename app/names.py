"""Names of repositories, datasets and models: `owner/name` path segments."""

from __future__ import annotations

import re

from app.errors import Invalid

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str, *, what: str = "repository", field: str = "name") -> None:
    """Refuse a name that is not 1-64 characters of letters, digits, '_', '.', '-'."""
    if not NAME_RE.match(name) or name.endswith((".git", ".")):
        raise Invalid(f"{field}: a {what} name must be 1-64 characters of letters, digits, "
                      "'_', '.', '-', starting with a letter or digit",
                      fields=[{"field": field, "message": f"invalid {what} name"}])
