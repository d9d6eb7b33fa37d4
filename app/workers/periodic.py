"""A daemon thread that calls a function every few seconds until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Calls `fn` at once and then every `every_s` seconds in a daemon thread; errors are logged."""

    def __init__(self, name: str, every_s: float, fn: Callable[[], object]) -> None:
        self.name = name
        self.every_s = every_s
        self.fn = fn
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Periodic:
        """Start the thread; returns self."""
        self.thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the loop to end and wait for the current call to finish."""
        self.stopping.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout_s)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.fn()
            except Exception:  # a database or Redis outage must not end the loop
                log.exception("%s failed; trying again in %.0f s", self.name, self.every_s)
            self.stopping.wait(self.every_s)
