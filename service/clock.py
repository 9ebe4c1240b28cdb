"""The ledger clock: the one time every service reads for interval time (DESIGN.md section 12).

Ledger time is what intervals, the chain's epoch, block times, bill closings, regulation times,
auction gates and meter readings are measured in. A simulated community runs it faster than
the wall clock: from `start` at wall time `origin`, `speed` ledger seconds pass per wall second,
so a 15-minute interval still holds 900 s of energy and prices while a day passes in minutes.
Durations that are about the machines and the people rather than the intervals (protocol
timeouts, challenge lifetimes, the freshness of a signed request, rate limits, retry backoffs,
poll periods, the stamps a store keeps) stay on the wall or monotonic clock.

A process takes its clock once from `PETRA_CLOCK` (`start=<unix s>,speed=<factor>` and
optionally `,origin=<unix s>`, the origin being the moment it is read when not given);
unset or empty, it is the wall clock itself. Processes of one community share an origin, or
each one's clock starts where it was first read.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

CLOCK_ENV = "PETRA_CLOCK"
FORMAT = "start=<unix s>,speed=<factor>[,origin=<unix s>]"
_FIELDS = ("start", "speed", "origin")


@dataclass(frozen=True, slots=True)
class LedgerClock:
    """Ledger time that reads `start` (unix seconds) when the wall clock reads `origin` (unix
    seconds) and runs `speed` times as fast as the wall clock (`speed` > 0)."""

    start: float
    origin: float
    speed: float = 1.0

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.start, self.origin, self.speed)):
            raise ValueError("a ledger clock's start, origin and speed must be finite numbers")
        if self.speed <= 0:
            raise ValueError(f"a ledger clock's speed must be above 0, not {self.speed}")

    def at(self, wall_time: float) -> float:
        """The ledger time (unix seconds) when the wall clock reads `wall_time` (unix s)."""
        return self.start + (wall_time - self.origin) * self.speed

    def now(self) -> float:
        """The ledger time now, unix seconds."""
        return self.at(time.time())

    def wall_seconds(self, ledger_seconds: float) -> float:
        """How many wall seconds a duration of `ledger_seconds` ledger seconds lasts."""
        return ledger_seconds / self.speed

    def seconds_until(self, ledger_time: float) -> float:
        """Wall seconds until this clock reads `ledger_time` (unix seconds); 0 if it has."""
        return max(0.0, self.wall_seconds(ledger_time - self.now()))


WALL_CLOCK = LedgerClock(start=0.0, origin=0.0, speed=1.0)  # ledger time is wall time


def parse_clock(text: str | None, read_at: float) -> LedgerClock:
    """The clock `PETRA_CLOCK` = `text` describes, its origin `read_at` (wall unix seconds)
    unless it names one; the wall clock when `text` is None or blank. ValueError, in one
    sentence naming the variable, if it is malformed."""
    if text is None or not text.strip():
        return WALL_CLOCK
    values: dict[str, float] = {}
    for part in text.split(","):
        name, equals, value = (s.strip() for s in part.partition("="))
        if not equals or name not in _FIELDS:
            _malformed(text, f"{part.strip()!r} is not one of start=, speed= or origin=")
        if name in values:
            _malformed(text, f"it gives {name} twice")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            _malformed(text, f"{name} must be a finite number, not {value!r}")
        values[name] = number
    for name in ("start", "speed"):
        if name not in values:
            _malformed(text, f"it has no {name}")
    if values["speed"] <= 0:
        _malformed(text, f"speed must be above 0, not {values['speed']:g}")
    return LedgerClock(values["start"], values.get("origin", read_at), values["speed"])


def _malformed(text: str, problem: str) -> NoReturn:
    raise ValueError(f"{CLOCK_ENV}={text!r} is malformed ({problem}): write {FORMAT}")


_lock = threading.Lock()
_process_clock: LedgerClock | None = None


def ledger_clock() -> LedgerClock:
    """This process's ledger clock, read from `PETRA_CLOCK` on the first call (ValueError if
    it is malformed; the next call reads it again)."""
    global _process_clock
    found = _process_clock
    if found is not None:  # the common case, read by every reading and request: no lock
        return found
    with _lock:
        if _process_clock is None:
            _process_clock = parse_clock(os.environ.get(CLOCK_ENV), time.time())
        return _process_clock


def now() -> float:
    """The ledger time now by this process's clock, unix seconds: what services read for
    interval time by default."""
    return ledger_clock().now()


def wall_seconds_until(ledger_time: float, clock: Callable[[], float] = now) -> float:
    """Wall seconds until `clock` (ledger unix seconds) reads `ledger_time`; 0 if it has. The
    distance is turned into wall seconds at this process's speed, so with the default `clock`
    this is `ledger_clock().seconds_until(ledger_time)`, and a clock a test injects is taken
    to run at that speed too."""
    return max(0.0, ledger_clock().wall_seconds(ledger_time - clock()))


def next_boundary(after: float, origin: float, period_s: float) -> float:
    """The first time later than `after` of the form `origin + k * period_s` (k an integer):
    the next interval start with `origin` the epoch, the next bill closing with `origin` the
    epoch plus the closing delay. Seconds, any epoch."""
    return origin + (math.floor((after - origin) / period_s) + 1) * period_s
