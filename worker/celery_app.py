"""The worker's Celery app: the shared configuration, the task modules, start-up hooks."""

from __future__ import annotations

from typing import Any

from celery.signals import (
    celeryd_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from app.db import reset_engine
from app.queue import get_celery

celery = get_celery()
celery.conf.include = ["worker.tasks"]


@celeryd_init.connect  # type: ignore[untyped-decorator]
def _claim_name(sender: str, **_: Any) -> None:
    # Before anything is consumed, and before _mark_lost could end another live worker's
    # trainings: a name a live worker holds is refused (SystemExit is not caught by Celery).
    import logging
    import sys

    from app.workers import registry

    try:
        registry.claim_name(str(sender))
    except registry.NameInUse as exc:
        print(f"trainyard worker: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None
    except Exception:  # the database is away: the first heartbeat that gets through claims it
        logging.getLogger(__name__).exception("could not check the worker name %s", sender)
    finally:
        reset_engine()


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_engine(**_: Any) -> None:
    # A forked pool process must not share the parent's database connections.
    reset_engine()


@worker_ready.connect  # type: ignore[untyped-decorator]
def _mark_lost(sender: Any, **_: Any) -> None:
    from worker.jobs import mark_lost_trainings

    mark_lost_trainings(str(sender.hostname))
    reset_engine()


@worker_ready.connect  # type: ignore[untyped-decorator]
def _start_liveness(sender: Any, **_: Any) -> None:
    # After _mark_lost: the heartbeat and the reconciler threads live in the main process.
    from worker import liveness

    liveness.start(sender)


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_liveness(**_: Any) -> None:
    from worker import liveness

    liveness.stop()


@worker_shutting_down.connect  # type: ignore[untyped-decorator]
def _abandon_trainings(sender: Any, **_: Any) -> None:
    # A warm shutdown would wait for trainings that may run for hours: stop them now and
    # record them as Abnormal, so the worker exits promptly and nothing is left running.
    from worker.jobs import abandon_trainings

    abandon_trainings(str(sender))
