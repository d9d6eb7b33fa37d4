"""Redis beside Celery: queue contents and depth, and the control channel to running trainings."""

from __future__ import annotations

import json
import logging
import re
from functools import lru_cache

import redis

from app.config import get_settings

log = logging.getLogger(__name__)

CONTROL_PREFIX = "trainyard:control:training:"
TERMINATE = "terminate"
_TASK_ID = re.compile(r"^training-(\d+)-[0-9a-f]+$")


@lru_cache
def redis_client() -> redis.Redis:
    """A client of the broker's Redis with short timeouts (redis-py reconnects after a fork)."""
    settings = get_settings()
    if not settings.redis_url:
        raise RuntimeError("TRAINYARD_REDIS_URL is not set")
    return redis.Redis.from_url(settings.redis_url, socket_connect_timeout=settings
                                .broker_timeout_s, socket_timeout=settings.broker_timeout_s)


def control_channel(training_id: int) -> str:
    """The pub/sub channel the worker running `training_id` listens on."""
    return f"{CONTROL_PREFIX}{training_id}"


def publish_terminate(training_id: int) -> bool:
    """Tell the worker running the training to stop it now; False if Redis is unreachable."""
    try:
        redis_client().publish(control_channel(training_id), TERMINATE)
    except redis.RedisError as exc:
        # The worker's slow database poll still finds the Terminating status.
        log.warning("could not publish terminate for training %s: %s", training_id, exc)
        return False
    return True


def task_id_for(training_id: int, nonce: str) -> str:
    """The Celery task id of one send of a training (the id is readable in the queue)."""
    return f"training-{training_id}-{nonce}"


def queued_training_ids(queue: str) -> list[int]:
    """The trainings whose messages wait in `queue`, the next one to be taken first."""
    ids: list[int] = []
    raw: list[bytes] = redis_client().lrange(queue, 0, -1)  # type: ignore[assignment]
    for item in reversed(raw):  # kombu LPUSHes and workers BRPOP: the tail goes first
        try:
            task_id = json.loads(item)["headers"]["id"]
        except (ValueError, KeyError, TypeError):
            continue
        match = _TASK_ID.match(str(task_id))
        if match:
            ids.append(int(match.group(1)))
    return ids


def server_run_id() -> str | None:
    """The Redis server's run id (it changes when Redis restarts); None if unreachable."""
    try:
        info: dict[str, object] = redis_client().info("server")  # type: ignore[assignment]
    except redis.RedisError:
        return None
    run_id = info.get("run_id")
    return str(run_id) if run_id else None


def queue_depths(queues: list[str]) -> dict[str, int | None]:
    """Messages waiting in each queue (None for all when Redis cannot be reached)."""
    try:
        pipe = redis_client().pipeline()
        for queue in queues:
            pipe.llen(queue)
        return dict(zip(queues, (int(n) for n in pipe.execute()), strict=True))
    except redis.RedisError:
        return dict.fromkeys(queues)
