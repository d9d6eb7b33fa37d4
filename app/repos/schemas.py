"""Request and response shapes of the repository API."""

from __future__ import annotations

from datetime import datetime

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field

NAME = "Repository name: letters, digits, '_', '.', '-'."


class RepoCreate(BaseModel):
    """Fork a built-in sample (JSON)."""

    name: str = Field(description=NAME)
    template: str = Field(default="resnet50", description="Built-in sample to fork.")
    description: str = ""


class RepoUpload(BaseModel):
    """Create a repository from an archive (multipart/form-data)."""

    model_config = ConfigDict(str_strip_whitespace=True)

    name: str = Field(description=NAME)
    archive: UploadFile = Field(description=".zip or .tar.gz of the repository's files.")


class RepoFile(BaseModel):
    path: str
    size: int
    modified_at: datetime


class RepoPublic(BaseModel):
    owner: str
    name: str
    full_name: str
    template: str | None
    description: str
    created_at: datetime
    updated_at: datetime
    trainings: int = 0
    unfinished_training: int | None = None
    stripped_root: str | None = Field(
        default=None, description="On creation from an archive whose files all sat in one "
        "top folder: that folder, left out (its contents are the repository).")


class RepoDetail(RepoPublic):
    files: list[RepoFile]


class FileWritten(BaseModel):
    path: str
    size: int
