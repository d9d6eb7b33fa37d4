"""Evaluation requests and responses."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.models.evaluation import EvaluationStatus


class EvaluationCreate(BaseModel):
    """Start the evaluation of a Completed training."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"type": "custom", "aim_path": "./db/"}, {"type": "standard"}]})

    type: Literal["custom", "standard"] = Field(
        description="custom: open the Aim repository the training's code wrote; standard: "
        "build one from the training log.")
    aim_path: str | None = Field(
        default=None, max_length=300,
        description="custom only: the folder holding `.aim`, relative to the workspace root, "
        "the code folder or an output folder.")

    @model_validator(mode="after")
    def _path_for_custom(self) -> EvaluationCreate:
        if self.type == "custom" and not (self.aim_path or "").strip():
            raise ValueError("aim_path is required for a custom evaluation (e.g. './db/')")
        if self.type == "standard" and self.aim_path:
            raise ValueError("aim_path is only for a custom evaluation")
        return self


class EvaluationPublic(BaseModel):
    """An evaluation: its status and where its report is."""

    training_id: int | None
    repo_id: int | None
    type: str = Field(description="custom, standard or compare")
    aim_path: str | None
    status: EvaluationStatus
    error: str | None
    url: str = Field(description="Aim's UI for this evaluation, a path on this server.")
    report_url: str = Field(description="The report: Aim's metrics explorer charting every "
                            "tracked metric (what 'View report' opens).")
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime | None = Field(description="When an unused report stops.")


class MetricSeriesPublic(BaseModel):
    """One metric of one run."""

    run: str
    name: str
    context: dict[str, Any]
    steps: list[int]
    values: list[float | None]
    epochs: list[int | None]


class RunPublic(BaseModel):
    """A run's name and parameters."""

    name: str
    params: dict[str, Any]


class MetricsPublic(BaseModel):
    """A training's metric series, from its Aim repository or its log."""

    training_id: int
    status: str
    source: Literal["aim", "log", "none"]
    aim_repo: str | None = Field(description="The training's own Aim repository (the folder "
                                 "holding .aim), relative to its workspace, when it has one.")
    runs: list[RunPublic]
    series: list[MetricSeriesPublic]
