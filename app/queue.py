"""The Celery app both sides share: the API sends task names, the worker runs them."""

from __future__ import annotations

import uuid
from functools import lru_cache

from celery import Celery

from app.broker import task_id_for
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
    """Queue a training (only after its transaction committed); raises if Redis is down.

    One attempt on a fresh connection with short timeouts: a request must not hang on an
    outage, and a training that could not be sent stays in the outbox for the reconciler.
    """
    celery = get_celery()
    timeout = get_settings().broker_timeout_s
    options = {"max_retries": 0, "socket_connect_timeout": timeout, "socket_timeout": timeout}
    with celery.connection_for_write(transport_options=options, connect_timeout=timeout) as conn:
        celery.send_task(RUN_TRAINING, args=[training_id], queue=queue, retry=False,
                         connection=conn, task_id=task_id_for(training_id, uuid.uuid4().hex[:12]))
