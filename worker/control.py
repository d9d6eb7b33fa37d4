"""The control channel of a running training: a Redis pub/sub subscription, read without waiting."""

from __future__ import annotations

import logging
import weakref

import redis
from redis.client import PubSub

from app.broker import TERMINATE, control_channel, redis_client
from app.config import get_settings

log = logging.getLogger(__name__)


class Listener:
    """Subscribed to one training's channel; `told_to_stop` drains it without blocking."""

    def __init__(self, training_id: int) -> None:
        self.channel = control_channel(training_id)
        self.pubsub: PubSub | None = None
        self.reconnect()

    def reconnect(self) -> None:
        """Subscribe if not subscribed (at start, and after Redis was away)."""
        if self.pubsub is not None or not get_settings().control_pubsub:
            return
        try:
            pubsub = redis_client().pubsub(  # type: ignore[no-untyped-call]
                ignore_subscribe_messages=True)
            pubsub.subscribe(self.channel)
        except redis.RedisError as exc:
            log.warning("no control channel for %s (%s): polling only", self.channel, exc)
            return
        self.pubsub = pubsub
        weakref.finalize(self, pubsub.close)  # the connection ends with the run

    def told_to_stop(self) -> bool:
        """True once a terminate message arrived."""
        if self.pubsub is None:
            return False
        try:
            while (message := self.pubsub.get_message(timeout=0.0)) is not None:
                if message.get("type") == "message" and message.get("data") == TERMINATE.encode():
                    return True
        except redis.RedisError:
            self._drop()
        return False

    def _drop(self) -> None:
        if self.pubsub is not None:
            try:
                self.pubsub.close()
            except redis.RedisError:
                pass
        self.pubsub = None
