"""The Celery app both sides share: the API sends task names, the worker runs them."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from app.config import Settings, get_settings

RUN_TRAINING = "trainyard.run_training"
DEFAULT_QUEUE = "trainings.cpu"


def make_celery(settings: Settings) -> Celery:
    """A Celery app on the configured Redis broker, set up for long, idempotent tasks."""
    if not settings.redis_url:
        raise RuntimeError("TRAINYARD_REDIS_URL is not set (trainyard up sets it for its "
                           "children; set it when running the API or a worker on their own)")
    celery = Celery("trainyard", broker=settings.redis_url)
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=DEFAULT_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # Unacknowledged long trainings must not be redelivered while still running.
        broker_transport_options={"visibility_timeout": settings.training_timeout_s + 3600},
        worker_hijack_root_logger=False,
        task_ignore_result=True,
    )
    return celery


@lru_cache
def get_celery() -> Celery:
    """The process-wide Celery app."""
    return make_celery(get_settings())


def send_run_training(training_id: int, *, queue: str) -> None:
    """Queue a training (call only after the transaction that created it committed)."""
    get_celery().send_task(RUN_TRAINING, args=[training_id], queue=queue)
