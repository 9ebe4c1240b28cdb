"""A daemon thread that calls a service's `tick` at a fixed period, and sooner when the service
says a ledger time it waits for comes sooner: the timeouts, expiries and gates of the mixer
coordinator and the bid store."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("petra.service.ticker")


class Ticker:
    """Calls `tick()` every `every_s` seconds from `start()` until `stop()`; a tick that
    raises is logged (as `what`) and the next one runs all the same. `due_in`, if given,
    returns the wall seconds until the service next has something due (an interval start, an
    auction's gate: ledger times, which come sooner on an accelerated clock); the ticker then
    waits no longer than that."""

    def __init__(
        self,
        tick: Callable[[], None],
        every_s: float,
        what: str,
        *,
        due_in: Callable[[], float] | None = None,
    ) -> None:
        self.tick = tick
        self.every_s = every_s
        self.what = what
        self.due_in = due_in
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{what}-ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _wait_s(self) -> float:
        if self.due_in is None:
            return self.every_s
        try:
            return min(self.every_s, max(0.0, self.due_in()))
        except Exception:  # a failing estimate must not stop the ticks
            log.exception("the %s could not say when its next tick is due", self.what)
            return self.every_s

    def _loop(self) -> None:
        while not self._stop.wait(self._wait_s()):
            try:
                self.tick()
            except Exception:  # one failed tick must not stop every later one
                log.exception("a tick of the %s failed", self.what)
