"""A daemon thread that calls a service's `tick` at a fixed period: the timeouts, expiries and
gates of the mixer coordinator and the bid store."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("petra.service.ticker")


class Ticker:
    """Calls `tick()` every `every_s` seconds from `start()` until `stop()`; a tick that
    raises is logged (as `what`) and the next one runs all the same."""

    def __init__(self, tick: Callable[[], None], every_s: float, what: str) -> None:
        self.tick = tick
        self.every_s = every_s
        self.what = what
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{what}-ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.tick()
            except Exception:  # one failed tick must not stop every later one
                log.exception("a tick of the %s failed", self.what)
