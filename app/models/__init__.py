"""Every table, on one metadata (import this package to register them all)."""

from app.db import Base
from app.models.evaluation import (
           EVALUATION_ACTIVE,
           EVALUATION_FINISHED,
           Evaluation,
           EvaluationStatus,
)
from app.models.registry import Dataset, Model
from app.models.repo import Repository
from app.models.training import UNFINISHED, Training, TrainingStatus
from app.models.user import ApiToken, User, WebSession
from app.models.worker import Lease, Worker

__all__ = ["EVALUATION_ACTIVE", "EVALUATION_FINISHED", "UNFINISHED", "ApiToken", "Base", "Dataset",
           "Evaluation", "EvaluationStatus", "Lease", "Model", "Repository", "Training",
           "TrainingStatus", "User", "WebSession", "Worker"]
