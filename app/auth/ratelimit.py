"""Failed sign-ins and bad Bearer tokens, counted per client address with `limits`."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from app.config import get_settings
from app.errors import TooManyRequests

log = logging.getLogger("trainyard.auth")
NAMESPACE = "trainyard-auth-failures"
T = TypeVar("T")


class FailureLimiter:
    """Refuses a client address with 429 once it used up its failed authentications."""

    def __init__(self, spec: str, storage_url: str | None) -> None:
        self.items: list[RateLimitItem] = parse_many(spec)
        self.spec = spec
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._shared: MovingWindowRateLimiter | None = None
        if storage_url and not storage_url.startswith("memory://"):
            # Short timeouts: a missing Redis must not hold a request for long.
            storage = storage_from_string(storage_url, socket_timeout=1,
                                          socket_connect_timeout=1)
            if not isinstance(storage, Storage):
                raise ValueError(f"{storage_url}: an asynchronous storage cannot be used here")
            self._shared = MovingWindowRateLimiter(storage)

    def _call(self, action: Callable[[MovingWindowRateLimiter], T]) -> T:
        if self._shared is not None:
            try:
                return action(self._shared)
            except Exception as exc:
                # Counting per process beats not counting while the shared store is away.
                log.warning("rate-limit storage failed (%s); counting in this process", exc)
        return action(self._memory)

    def check(self, client: str) -> None:
        """Raise a 429 when `client` has no failed attempts left."""
        def wait_s(limiter: MovingWindowRateLimiter) -> int:
            resets = [limiter.get_window_stats(item, NAMESPACE, client).reset_time
                      for item in self.items if not limiter.test(item, NAMESPACE, client)]
            return max(1, math.ceil(max(resets) - time.time())) if resets else 0

        retry_after = self._call(wait_s)
        if retry_after:
            log.warning("auth rate limit: %s refused for %s s (limit %s)", client,
                        retry_after, self.spec)
            raise TooManyRequests(f"too many failed sign-ins or invalid tokens from {client} "
                                  f"(limit {self.spec}); try again in {retry_after} s",
                                  retry_after_s=retry_after)

    def record_failure(self, client: str, *, what: str) -> None:
        """Count one failed authentication of `client` and log it."""
        log.warning("auth failure: %s from %s", what, client)

        def hit(limiter: MovingWindowRateLimiter) -> None:
            for item in self.items:
                limiter.hit(item, NAMESPACE, client)

        self._call(hit)


@lru_cache
def get_failure_limiter() -> FailureLimiter:
    """The process-wide limiter on the configured storage (Redis when there is one)."""
    settings = get_settings()
    return FailureLimiter(settings.auth_failure_limit,
                          settings.ratelimit_storage_url or settings.redis_url)
