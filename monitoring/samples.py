"""What a sample is and when one is refused: pure checks every ingestion path runs first
(emoncms HTTP input, MQTT, the Modbus poller, Datadis, distributor CSV files).

A sample is one value of one feed at one time: the feed is named by its node (a device, a
gateway, a supply point) and its name (an emoncms input key), the time is whole unix seconds
in UTC, the value a finite float in the feed's unit. Each refusal carries a stable reason code
(counted by the store) and a sentence a person can act on."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # emoncms node and input names, safe in MQTT topics
EARLIEST_S = 946_684_800  # 2000-01-01T00:00:00Z: no meter data is older
FUTURE_SLACK_S = 86_400  # a device clock may run ahead, not a day ahead
MAX_ABS_VALUE = 1e15  # beyond any real reading; catches overflowed registers and typos
# Feed kinds: how a feed's values become energy (DESIGN.md section 13).
POWER = "power"  # W, an average over time; energy = mean power x duration
ENERGY = "energy"  # kWh in the interval the sample opens; energies add up
COUNTER = "counter"  # a cumulative kWh register; energy = difference of readings
OTHER = "other"  # volts, temperatures, states: shown, never turned into energy
KINDS = (POWER, ENERGY, COUNTER, OTHER)


class Refused(Exception):
    """A sample or message no ingestion path stores: `reason` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of feed `name` of node `node` at `t` (unix seconds, UTC); `estimated` marks
    a distributor's estimate rather than a reading."""

    node: str
    name: str
    t: int
    value: float
    estimated: bool = False


def check_name(name: str, what: str) -> str:
    """`name` as a node or feed name, or Refused(`bad_name`)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        shown = repr(name)[:70]
        raise Refused(
            "bad_name",
            f"{what} {shown} must be 1 to 64 letters, digits, '_', '-', '.' or ':'",
        )
    return name


def check_time(t: float, now: float) -> int:
    """`t` (unix seconds) as whole seconds, or Refused(`bad_time`) when it is not a time a
    reading can have: before 2000, a day or more after `now`, not finite."""
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise Refused("bad_time", f"time {t!r} is not a number of unix seconds")
    if t < EARLIEST_S:
        raise Refused("bad_time", f"time {t!r} is before 2000: send unix seconds, in UTC")
    if t > now + FUTURE_SLACK_S:
        raise Refused(
            "bad_time", f"time {t!r} is more than a day ahead of this server: check the clock"
        )
    return int(t)


def check_value(value: object, what: str) -> float:
    """`value` as a finite float, or Refused(`bad_value`)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused("bad_value", f"{what} is {str(value)[:40]!r}, not a number")
    number = float(value)
    if not math.isfinite(number) or abs(number) > MAX_ABS_VALUE:
        raise Refused("bad_value", f"{what} is {value!r}: send a finite reading")
    return number


def sample(node: str, name: str, t: float, value: object, now: float) -> Sample:
    """A checked sample (every ingestion path builds its samples here)."""
    return Sample(
        check_name(node, "node"),
        check_name(name, "input name"),
        check_time(t, now),
        check_value(value, f"input {name!r}"),
    )
