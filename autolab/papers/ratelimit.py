"""A rate limiter shared by every client of one service (arXiv asks for one request per 3 s)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Spaces calls at least ``interval`` seconds apart, across threads and instances.

    ``clock`` and ``sleep`` are injectable so tests run without waiting.
    """

    def __init__(
        self,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self._next = float("-inf")
        self._lock = threading.Lock()

    def wait(self) -> float:
        """Block until a request may go; return how long it waited."""
        with self._lock:
            now = self.clock()
            start = max(now, self._next)
            delay = start - now
            if delay > 0:
                self.sleep(delay)
            self._next = start + self.interval
            return delay


_shared: dict[str, RateLimiter] = {}
_shared_lock = threading.Lock()


def shared_limiter(key: str, interval: float) -> RateLimiter:
    """The process-wide limiter for ``key`` (e.g. a host name), created on first use."""
    with _shared_lock:
        limiter = _shared.get(key)
        if limiter is None:
            limiter = _shared[key] = RateLimiter(interval)
        else:  # two sources on one host: the stricter interval wins
            limiter.interval = max(limiter.interval, interval)
        return limiter
