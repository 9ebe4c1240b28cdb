"""What the DSO has put in force, per interval (DESIGN.md section 5, `regulate`).

A regulation takes effect for intervals strictly after its `time`. For interval t, the prices,
authorizations, bans and limits in force are those of the regulations on the ledger whose
time < t, later ones (in ledger order) overriding earlier ones field by field.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from assets import AssetKind, Regulate


@dataclass(frozen=True, slots=True)
class MeterStatus:
    """A meter's registration as in force at some interval."""

    public_key: bytes | None  # None: banned without ever having been authorized
    max_epa: int
    max_eca: int
    banned: bool

    def limit(self, kind: AssetKind) -> int:
        """MAXEPA or MAXECA in watts; issued power must stay strictly below it."""
        return self.max_epa if kind is AssetKind.EPA else self.max_eca


@dataclass(frozen=True, slots=True)
class _MeterEvent:
    time: int
    seq: int
    authorization: tuple[bytes, int, int] | None  # (public_key, max_epa, max_eca); None = ban


@dataclass(frozen=True, slots=True)
class _PriceEvent:
    time: int
    seq: int
    consumption: int | None
    production: int | None


@dataclass(frozen=True, slots=True)
class Prices:
    """Prices in force, micro-units per kWh; None where the DSO never set one."""

    consumption: int | None
    production: int | None


class RegulationSchedule:
    """Every regulation on the ledger, queried by the interval it is in force at."""

    def __init__(self) -> None:
        self._meters: dict[str, list[_MeterEvent]] = {}
        self._prices: list[_PriceEvent] = []

    def apply(self, regulation: Regulate, seq: int) -> None:
        """Record `regulation`, the transaction at log position `seq` (ledger order)."""
        for a in regulation.authorize:
            event = _MeterEvent(regulation.time, seq, (a.public_key, a.max_epa, a.max_eca))
            self._meters.setdefault(a.meter, []).append(event)
        for meter in regulation.ban:
            self._meters.setdefault(meter, []).append(_MeterEvent(regulation.time, seq, None))
        if regulation.price_consumption is not None or regulation.price_production is not None:
            self._prices.append(
                _PriceEvent(
                    regulation.time,
                    seq,
                    regulation.price_consumption,
                    regulation.price_production,
                )
            )

    def meter_at(self, meter: str, interval: int) -> MeterStatus | None:
        """The meter's status in force at `interval`, or None if it was never named before it."""
        status: MeterStatus | None = None
        for event in self._meters.get(meter, ()):  # ledger order: later events override
            if event.time >= interval:
                continue
            if event.authorization is None:
                status = (
                    MeterStatus(status.public_key, status.max_epa, status.max_eca, True)
                    if status is not None
                    else MeterStatus(None, 0, 0, True)
                )
            else:
                key, max_epa, max_eca = event.authorization
                status = MeterStatus(key, max_epa, max_eca, False)
        return status

    def meter_pieces(
        self, meter: str, start: int, end: int
    ) -> Iterator[tuple[int, int, MeterStatus | None]]:
        """(first, last, status) runs of intervals in [start, end] with one status each."""
        changes = sorted(
            {e.time + 1 for e in self._meters.get(meter, ()) if start < e.time + 1 <= end}
        )
        bounds = [start, *changes, end + 1]
        for first, following in itertools.pairwise(bounds):
            yield first, following - 1, self.meter_at(meter, first)

    def meters(self) -> list[str]:
        """Every meter any regulation named, sorted."""
        return sorted(self._meters)

    def prices_at(self, interval: int) -> Prices:
        """The consumption and production prices in force at `interval`."""
        consumption: int | None = None
        production: int | None = None
        for event in reversed(self._prices):  # the latest on the ledger wins, field by field
            if event.time >= interval:
                continue
            if consumption is None:
                consumption = event.consumption
            if production is None:
                production = event.production
            if consumption is not None and production is not None:
                break
        return Prices(consumption, production)
