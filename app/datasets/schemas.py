"""Request and response shapes of the dataset and model registry API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class DatasetImport(BaseModel):
    """Import from the server's disk (`path`) or from the internet (`url`); admins only."""

    name: str
    path: str | None = Field(default=None, description="A folder or archive on the server.")
    url: str | None = Field(default=None, description="An archive to download, e.g. the "
                            "official cifar-10-binary.tar.gz.")
    sha256: str | None = None
    md5: str | None = None
    is_public: bool = True


class DatasetPublic(BaseModel):
    owner: str
    name: str
    input_url: str = Field(description="What a config's inputs use to name it.")
    format: str
    is_public: bool
    size_bytes: int
    info: dict[str, Any]
    created_at: datetime


class ModelFile(BaseModel):
    path: str
    size: int


class ModelPublic(BaseModel):
    owner: str
    name: str
    input_url: str
    description: str
    is_public: bool
    size_bytes: int
    source_training_id: int | None
    files: list[ModelFile]
    created_at: datetime
