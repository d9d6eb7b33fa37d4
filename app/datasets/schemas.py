"""Request and response shapes of the dataset and model registry API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field

VISIBILITY = ("Who may list it and use it as a training input: true for every user, false for "
              "its owner (and admins). Default: private, except for an admin's imports, "
              "which are platform data and public.")


class DatasetImport(BaseModel):
    """Import from the server's disk (`path`) or from the internet (`url`); admins only."""

    name: str
    path: str | None = Field(default=None, description="A folder or archive on the server.")
    url: str | None = Field(default=None, description="An archive to download, e.g. the "
                            "official cifar-10-binary.tar.gz.")
    sha256: str | None = None
    md5: str | None = None
    is_public: bool | None = Field(default=None, description=VISIBILITY)


class DatasetUpload(BaseModel):
    """Upload a dataset archive (multipart/form-data)."""

    model_config = ConfigDict(str_strip_whitespace=True)

    name: str
    archive: UploadFile = Field(description="cifar-10-binary.tar.gz, or a .zip/.tar.gz of "
                                "train/<class>/* and test/<class>/* images.")
    is_public: bool | None = Field(default=None, description=VISIBILITY)


class ModelUpload(BaseModel):
    """Upload checkpoint files as a model (multipart/form-data)."""

    model_config = ConfigDict(str_strip_whitespace=True)

    name: str
    description: str = Field(default="", max_length=200)
    file: list[UploadFile] = Field(description="The model's files (.ckpt and others), one "
                                   "part each.")
    is_public: bool | None = Field(default=None, description=VISIBILITY)


class DatasetPublic(BaseModel):
    owner: str
    name: str
    input_url: str = Field(description="What a config's inputs use to name it.")
    format: str
    is_public: bool
    size_bytes: int
    info: dict[str, Any]
    created_at: datetime


class VisibilityUpdate(BaseModel):
    """Make a dataset or model public or private."""

    is_public: bool = Field(description=VISIBILITY)


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
