"""Request budgets of the bid store's HTTP API: token buckets per connection, per address and
for the whole service, and a bound on the requests handled at once.

Behind Tor every request comes from the tor daemon on loopback, so a client address says
nothing there; each Tor stream is its own TCP connection, though, with its own source port.
A request is charged to its connection (host, port), to its host unless that is loopback, and
to the service; it is refused, and charged to none, if any of the three is spent. A request
that asks for N things at once (N challenges) costs N.
"""

from __future__ import annotations

import functools
import ipaddress
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

MAX_KEYS = 100_000  # buckets kept per kind; past it the least recently used is forgotten
SERVICE = "service"  # the key of the one service-wide bucket

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Rate:
    """`per_s` requests a second sustained, at most `burst` at once."""

    per_s: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_s <= 0 or self.burst < 1:
            raise ValueError(f"a rate needs per_s > 0 and burst >= 1, not {self}")


class Budget(StrEnum):
    """Whose budget a request is charged to."""

    CONNECTION = "connection"
    ADDRESS = "address"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class OverBudget:
    """A refused request: the budget that is spent and the seconds until it has a token."""

    budget: Budget
    wait_s: float


class TokenBuckets(Generic[Key]):
    """A token bucket per key at `rate`, not thread-safe (`RequestBudgets` holds the lock).

    Keys idle long enough to be full again are forgotten, so memory follows the active keys;
    past `capacity` keys the least recently used is forgotten even if not full (it starts
    again full: the price of bounded memory, which the service-wide bucket caps)."""

    def __init__(self, rate: Rate, capacity: int = MAX_KEYS) -> None:
        self._rate, self._burst, self._capacity = rate.per_s, float(rate.burst), capacity
        self._buckets: OrderedDict[Key, tuple[float, float]] = OrderedDict()  # tokens, when

    def __len__(self) -> int:
        return len(self._buckets)

    @property
    def burst(self) -> int:
        """The most tokens a bucket holds: the most one request may cost."""
        return int(self._burst)

    def wait(self, key: Key, now: float, cost: int = 1) -> float:
        """Seconds until `key` has `cost` tokens at `now` (seconds of the clock); 0 if it has
        them. `cost` is at most `burst`."""
        self._forget_full(now)
        tokens = self._tokens(key, now)
        return 0.0 if tokens >= cost else (cost - tokens) / self._rate

    def spend(self, key: Key, now: float, cost: int = 1) -> None:
        """Take `cost` tokens from `key`'s bucket (`wait` said it has them)."""
        tokens = self._tokens(key, now) - cost
        self._buckets.pop(key, None)
        if len(self._buckets) >= self._capacity:
            self._buckets.popitem(last=False)
        self._buckets[key] = (tokens, now)  # last: the most recently used

    def _tokens(self, key: Key, now: float) -> float:
        tokens, when = self._buckets.get(key, (self._burst, now))
        # max: a wall clock stepped back does not take tokens away
        return min(self._burst, tokens + max(0.0, now - when) * self._rate)

    def _forget_full(self, now: float) -> None:
        full_after = self._burst / self._rate
        while self._buckets and now - next(iter(self._buckets.values()))[1] > full_after:
            self._buckets.popitem(last=False)


@functools.lru_cache(maxsize=4096)  # every request asks, of few distinct hosts
def is_loopback(host: str) -> bool:
    """Whether `host` is 127.0.0.0/8 or ::1 (also IPv4-mapped); a name is not."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class RequestBudgets:
    """The three budgets a request is charged to; `clock` returns seconds. Thread-safe."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        connection: Rate,
        address: Rate,
        service: Rate,
        capacity: int = MAX_KEYS,
    ) -> None:
        self._clock = clock
        self._connections: TokenBuckets[tuple[str, int]] = TokenBuckets(connection, capacity)
        self._addresses: TokenBuckets[str] = TokenBuckets(address, capacity)
        self._service: TokenBuckets[str] = TokenBuckets(service, 1)
        self._lock = threading.Lock()

    @property
    def most(self) -> int:
        """The most one request may cost: the smallest burst of the three budgets."""
        return min(self._connections.burst, self._addresses.burst, self._service.burst)

    def charge(self, client: tuple[str, int] | None, cost: int = 1) -> OverBudget | None:
        """Charge `cost` (1 to `most`) to the budgets of the TCP connection `client` (host,
        port; None if unknown, all such being one connection). None if it may go ahead; else
        the budget that keeps it waiting longest, nothing being charged."""
        if not 1 <= cost <= self.most:
            raise ValueError(f"a request costs 1 to {self.most}, not {cost}")
        connection = client if client is not None else ("", 0)
        host = None if is_loopback(connection[0]) else connection[0]
        now = self._clock()
        with self._lock:
            waits = [(self._connections.wait(connection, now, cost), Budget.CONNECTION)]
            if host is not None:
                waits.append((self._addresses.wait(host, now, cost), Budget.ADDRESS))
            waits.append((self._service.wait(SERVICE, now, cost), Budget.SERVICE))
            wait_s, budget = max(waits, key=lambda wait: wait[0])
            if wait_s > 0:
                return OverBudget(budget, wait_s)
            self._connections.spend(connection, now, cost)
            if host is not None:
                self._addresses.spend(host, now, cost)
            self._service.spend(SERVICE, now, cost)
        return None


class InFlight:
    """At most `limit` requests handled at once. Thread-safe."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"an in-flight bound is at least 1, not {limit}")
        self._limit, self._count = limit, 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        """Count one more request being handled; False (and not counted) if at the bound."""
        with self._lock:
            if self._count >= self._limit:
                return False
            self._count += 1
            return True

    def leave(self) -> None:
        """A request `enter` admitted is done."""
        with self._lock:
            self._count -= 1
