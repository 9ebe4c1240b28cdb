"""The bid store's abuse control and its clock in intervals."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from assets import Genesis


@dataclass(frozen=True, slots=True)
class Limits:
    """Abuse control. Times in seconds. Request budgets (`bidstore.budget`): `requests_per_s`
    and `burst` per TCP connection (each Tor stream is one), `address_*` per client address
    other than loopback, `service_*` for all requests; `max_in_flight` handled at once.
    Challenges live `challenge_ttl_s` (wall seconds, whatever the ledger clock's speed);
    `redeemable` is how many can be redeemed in that time."""

    max_orders_per_owner: int = 16
    requests_per_s: float = 20.0
    burst: int = 100
    address_requests_per_s: float = 50.0
    address_burst: int = 200
    service_requests_per_s: float = 2000.0
    service_burst: int = 4000
    max_in_flight: int = 256
    challenge_ttl_s: float = 300.0
    max_trades: int = 100_000

    @property
    def redeemable(self) -> int:
        """The most challenges redeemed within one `challenge_ttl_s`: each costs a request
        (an order, a take or a trade fetch), so no more than the service budget allows."""
        return math.ceil(self.service_requests_per_s * self.challenge_ttl_s) + self.service_burst


@dataclass(frozen=True, slots=True)
class Intervals:
    """The intervals of `genesis` by `clock` (ledger Unix seconds; tests move it)."""

    genesis: Genesis
    clock: Callable[[], float]

    def now_interval(self) -> int:
        """The interval the clock is in."""
        return int(self.clock() - self.genesis.epoch) // self.genesis.interval_s

    def interval_start(self, interval: int) -> int:
        """Unix seconds interval `interval` starts at."""
        return self.genesis.epoch + interval * self.genesis.interval_s
