"""Failed operator tokens, counted per client address.

After `limit` failures within a window a client is refused (429 with Retry-After) without its
token being looked up, until the window ends. The log gets one line per client per window with
the count and the reasons, not one line per failure, so a flood of bad tokens cannot flood it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("petra.dso")

FAILURES_PER_WINDOW = 5
WINDOW_S = 60.0
MAX_CLIENTS = 10_000  # clients counted at once; beyond, they share one count
OTHER_CLIENTS = "other clients"
THROTTLED = "refused unchecked while throttled"


@dataclass
class _Window:
    start: float  # monotonic seconds of its first failure
    failures: int = 0  # tokens that failed, throttled attempts included
    reasons: Counter[str] = field(default_factory=Counter)


class TokenThrottle:
    """Failed token attempts per client address. `clock` gives monotonic seconds."""

    def __init__(
        self,
        limit: int = FAILURES_PER_WINDOW,
        window_s: float = WINDOW_S,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self.max_clients = max_clients
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int | None:
        """Whole seconds until `client` may present a token again (its attempt is counted),
        or None if it may now."""
        with self._lock:
            now = self._expire()
            window = self._windows.get(self._key(client))
            if window is None or window.failures < self.limit:
                return None
            window.failures += 1
            window.reasons[THROTTLED] += 1
            return max(1, math.ceil(window.start + self.window_s - now))

    def failed(self, client: str, reason: str) -> None:
        """Count a token from `client` that was refused because of `reason`."""
        with self._lock:
            now = self._expire()
            key = self._key(client)
            window = self._windows.setdefault(key, _Window(now))
            window.failures += 1
            window.reasons[reason] += 1

    def flush(self) -> None:
        """Log the windows that have ended (called now and then, and on shutdown)."""
        with self._lock:
            self._expire()

    def close(self) -> None:
        """Log every window, ended or not."""
        with self._lock:
            for client, window in self._windows.items():
                self._report(client, window)
            self._windows.clear()

    def _key(self, client: str) -> str:
        if client in self._windows or len(self._windows) < self.max_clients:
            return client
        return OTHER_CLIENTS

    def _expire(self) -> float:
        now = self.clock()
        ended = [c for c, w in self._windows.items() if now >= w.start + self.window_s]
        for client in ended:
            self._report(client, self._windows.pop(client))
        return now

    def _report(self, client: str, window: _Window) -> None:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(window.reasons.items()))
        log.warning(
            "operator tokens refused from %s: %d within %g s (%s)",
            client,
            window.failures,
            self.window_s,
            reasons,
        )
