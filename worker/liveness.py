"""The worker's main process: one heartbeat for the whole worker, and a reconciler copy.

Both run as threads of Celery's main process, not of the pool children that run the
trainings: when the worker's process tree is killed, the heartbeat stops with it, and the
reconciler (here or in any other process) ends the worker's trainings as Abnormal.
"""

from __future__ import annotations

import logging
from typing import Any

from app.config import get_settings
from app.workers import registry
from app.workers.periodic import Periodic
from app.workers.reconciler import Reconciler

log = logging.getLogger(__name__)

_running: list[Periodic | Reconciler] = []
_identity: list[registry.WorkerIdentity] = []


def identity_of(consumer: Any) -> registry.WorkerIdentity:
    """Name, queues and slots of the Celery worker that `consumer` belongs to."""
    queues = sorted(consumer.app.amqp.queues.consume_from or {})
    slots = int(getattr(consumer.controller, "concurrency", 0) or consumer.pool.num_processes)
    return registry.WorkerIdentity(name=str(consumer.hostname), queues=queues, slots=slots)


def start(consumer: Any) -> None:
    """Register the worker, then beat and run the reconciler until `stop`."""
    me = identity_of(consumer)
    try:
        registry.register(me)
    except Exception:  # the database is away: the first heartbeat that gets through registers
        log.exception("could not register worker %s yet", me.name)
    _identity.append(me)
    settings = get_settings()
    _running.append(Periodic("heartbeat", settings.heartbeat_s, lambda: registry.beat(me))
                    .start())
    if settings.run_reconciler:
        _running.append(Reconciler().start())
    log.info("worker %s serves %s with %d slots", me.name, ",".join(me.queues), me.slots)


def stop() -> None:
    """Stop beating, hand the reconciler lease over, and record the clean stop."""
    while _running:
        _running.pop().stop()
    while _identity:
        try:
            registry.sign_off(_identity.pop())
        except Exception:
            log.exception("could not record the worker's stop")
