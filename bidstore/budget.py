"""Request budgets of the bid store's HTTP API: token buckets keyed by who is asking."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable


class TokenBuckets:
    """A token bucket per client: `rate` tokens a second, at most `burst`; clients idle long
    enough to be full again are forgotten, so memory follows the active clients only."""

    def __init__(self, clock: Callable[[], float], rate: float, burst: int) -> None:
        self._clock, self._rate, self._burst = clock, rate, float(burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """0 if `client` may make a request now (and it is counted); else seconds to wait."""
        now = self._clock()
        with self._lock:
            self._forget_full(now)
            tokens, when = self._buckets.pop(client, (self._burst, now))
            tokens = min(self._burst, tokens + (now - when) * self._rate)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                return (1 - tokens) / self._rate
            self._buckets[client] = (tokens - 1, now)
            return 0.0

    def _forget_full(self, now: float) -> None:
        full_after = self._burst / self._rate
        while self._buckets and now - next(iter(self._buckets.values()))[1] > full_after:
            self._buckets.popitem(last=False)
