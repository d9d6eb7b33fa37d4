"""Every table, on one metadata (import this package to register them all)."""

from app.db import Base
from app.models.evaluation import Evaluation
from app.models.registry import Dataset, Model
from app.models.repo import Repository
from app.models.service import Service
from app.models.training import Training
from app.models.user import ApiToken, User, WebSession
from app.models.worker import Lease, Worker
from app.statuses import (
    EVALUATION_ACTIVE,
    EVALUATION_FINISHED,
    FINISHED,
    SERVICE_LIVE,
    UNFINISHED,
    EvaluationStatus,
    ServiceKind,
    ServiceState,
    TrainingStatus,
)

__all__ = ["EVALUATION_ACTIVE", "EVALUATION_FINISHED", "FINISHED", "SERVICE_LIVE", "UNFINISHED",
           "ApiToken", "Base", "Dataset", "Evaluation", "EvaluationStatus", "Lease", "Model",
           "Repository", "Service", "ServiceKind", "ServiceState", "Training", "TrainingStatus",
           "User", "WebSession", "Worker"]
