"""The worker's Celery app: the shared configuration, the task modules, start-up hooks."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init, worker_ready

from app.db import reset_engine
from app.queue import get_celery

celery = get_celery()
celery.conf.include = ["worker.tasks"]


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_engine(**_: Any) -> None:
    # A forked pool process must not share the parent's database connections.
    reset_engine()


@worker_ready.connect  # type: ignore[untyped-decorator]
def _mark_lost(sender: Any, **_: Any) -> None:
    from worker.jobs import mark_lost_trainings

    mark_lost_trainings(str(sender.hostname))
    reset_engine()
