"""Celery tasks: thin wrappers that take ids and call the job code."""

from __future__ import annotations

from typing import Any

from app.queue import RUN_TRAINING
from worker.celery_app import celery
from worker.jobs import run_training_job


@celery.task(name=RUN_TRAINING, bind=True, acks_late=True)  # type: ignore[untyped-decorator]
def run_training(self: Any, training_id: int) -> str:
    """Claim and run one training; a duplicate delivery finds it claimed and does nothing."""
    return run_training_job(training_id, worker_name=str(self.request.hostname or "worker"))
