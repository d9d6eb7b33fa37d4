"""Every table, on one metadata (import this package to register them all)."""

from app.db import Base
from app.models.evaluation import Evaluation
from app.models.registry import Dataset, Model
from app.models.repo import Repository
from app.models.training import UNFINISHED, Training, TrainingStatus
from app.models.user import ApiToken, User
from app.models.worker import Lease, Worker

__all__ = ["UNFINISHED", "ApiToken", "Base", "Dataset", "Evaluation", "Lease", "Model",
           "Repository", "Training", "TrainingStatus", "User", "Worker"]
