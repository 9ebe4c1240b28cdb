"""The DSO's grid controller: a load forecast from the ledger and the order book, and a price
signal that answers it (Laszka et al., IoT 2017; DESIGN.md sections 1, 3 and 5).

Pure: no I/O. The caller reads issued and deposited energy assets off the ledger and the open
orders off the bid store, and turns a `PriceProposal` into a `regulate` transaction whose `time`
is `proposal.regulation_time`, since a regulation takes effect strictly after its time.

Power is in whole watts, intervals are indices (ranges inclusive, as in assets), prices are
whole micro-units of the chain's currency per kWh. Prices never pass through a float.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from fractions import Fraction
from itertools import accumulate
from typing import Literal

from assets import AssetKind, EnergyAsset

MAX_FORECAST_INTERVALS = 100_000  # about 2.9 years of 15-minute intervals in one call
PPM = 1_000_000


@dataclass(frozen=True, slots=True)
class IssuedPower:
    """One energy asset as the controller sees it: `power` W in each interval from `start` to
    `end`, inclusive; EPA injects into the microgrid, ECA withdraws from it."""

    kind: AssetKind
    power: int
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.kind not in (AssetKind.EPA, AssetKind.ECA):
            raise ValueError(f"an issued energy asset is EPA or ECA, not {self.kind}")
        if self.power < 1:
            raise ValueError(f"an issued energy asset has power of at least 1 W, not {self.power}")
        if self.start > self.end:
            raise ValueError(
                f"an issued energy asset ends ({self.end}) before it starts ({self.start})"
            )

    @classmethod
    def of(cls, asset: EnergyAsset) -> IssuedPower:
        """The controller's view of an EPA or ECA from the ledger."""
        return cls(asset.kind, asset.power, asset.start, asset.end)


@dataclass(frozen=True, slots=True)
class BookEntry:
    """An open order on the bid store's book: an ask sells `power` W of EPA, a bid buys `power` W
    with ECA, in each interval from `start` to `end` inclusive, at `price` micro-units per kWh."""

    side: Literal["ask", "bid"]
    power: int
    start: int
    end: int
    price: int

    def __post_init__(self) -> None:
        if self.side not in ("ask", "bid"):
            raise ValueError(f"an order's side is 'ask' or 'bid', not {self.side!r}")
        if self.power < 1:
            raise ValueError(f"an order has power of at least 1 W, not {self.power}")
        if self.start > self.end:
            raise ValueError(f"an order ends ({self.end}) before it starts ({self.start})")


@dataclass(frozen=True, slots=True)
class IntervalForecast:
    """What the ledger and the book say about one interval, in watts.

    `net_load_w` = `consumption_w` - `production_w`: positive when the microgrid is expected to
    draw from the upstream grid, negative when it is expected to export. Deposits and open
    orders are shown, not netted: issued assets already promise the energy they stand for.
    """

    interval: int
    production_w: int  # EPA issued covering the interval
    consumption_w: int  # ECA issued covering the interval
    deposited_production_w: int  # EPA deposited to meters covering the interval
    open_asks_w: int  # asks on the book covering the interval, not yet matched
    open_bids_w: int  # bids on the book covering the interval, not yet matched
    net_load_w: int


def forecast(
    first: int,
    last: int,
    issued: Iterable[IssuedPower],
    deposited: Iterable[IssuedPower] = (),
    book: Iterable[BookEntry] = (),
) -> list[IntervalForecast]:
    """The forecast for each interval from `first` to `last` inclusive, powers in watts.

    Assets and orders may reach outside the range; only the part inside counts. Deposited ECA
    is ignored: billing counts deposited EPA only (DESIGN.md section 7). Time and memory grow
    with the number of assets plus the number of intervals, never with their product.
    Raises ValueError for an empty range or one over MAX_FORECAST_INTERVALS intervals.
    """
    if last < first:
        raise ValueError(
            f"the forecast range is empty: last interval {last} is before first {first}"
        )
    count = last - first + 1
    if count > MAX_FORECAST_INTERVALS:
        raise ValueError(
            f"the forecast range {first}..{last} has {count} intervals; at most "
            f"{MAX_FORECAST_INTERVALS} are forecast at once, so split it into smaller ranges"
        )
    production = _Coverage(first, last)
    consumption = _Coverage(first, last)
    deposited_production = _Coverage(first, last)
    asks = _Coverage(first, last)
    bids = _Coverage(first, last)
    for asset in issued:
        target = production if asset.kind == AssetKind.EPA else consumption
        target.add(asset.power, asset.start, asset.end)
    for asset in deposited:
        if asset.kind == AssetKind.EPA:
            deposited_production.add(asset.power, asset.start, asset.end)
    for order in book:
        (asks if order.side == "ask" else bids).add(order.power, order.start, order.end)
    return [
        IntervalForecast(first + i, p, c, d, a, b, c - p)
        for i, (p, c, d, a, b) in enumerate(
            zip(
                production.totals(),
                consumption.totals(),
                deposited_production.totals(),
                asks.totals(),
                bids.totals(),
                strict=True,
            )
        )
    ]


class _Coverage:
    """Power covering each interval of [first, last], kept as a difference array so that adding
    an asset costs two updates however many intervals it spans."""

    def __init__(self, first: int, last: int) -> None:
        self._first = first
        self._last = last
        self._steps = [0] * (last - first + 2)

    def add(self, power: int, start: int, end: int) -> None:
        low = max(start, self._first)
        high = min(end, self._last)
        if low <= high:
            self._steps[low - self._first] += power
            self._steps[high - self._first + 1] -= power

    def totals(self) -> list[int]:
        return list(accumulate(self._steps[:-1]))


@dataclass(frozen=True, slots=True)
class ForecastSummary:
    """The extremes and mean of a forecast range's net load, watts, for display."""

    first: int
    last: int
    peak_net_load_w: int  # highest net load: the most drawn from the upstream grid
    peak_interval: int  # the earliest interval with the peak
    lowest_net_load_w: int  # lowest net load: the most exported when negative
    lowest_interval: int  # the earliest interval with the lowest
    mean_net_load_w: int  # rounded half to even to a watt


def summary(forecasts: Sequence[IntervalForecast]) -> ForecastSummary:
    """Peak, lowest and mean net load (W) over `forecasts`; ValueError if there are none."""
    if not forecasts:
        raise ValueError("there is no forecast to summarise: the range has no intervals")
    peak = max(forecasts, key=lambda f: f.net_load_w)  # max and min keep the first of equals
    lowest = min(forecasts, key=lambda f: f.net_load_w)
    mean = round(Fraction(sum(f.net_load_w for f in forecasts), len(forecasts)))
    return ForecastSummary(
        first=forecasts[0].interval,
        last=forecasts[-1].interval,
        peak_net_load_w=peak.net_load_w,
        peak_interval=peak.interval,
        lowest_net_load_w=lowest.net_load_w,
        lowest_interval=lowest.interval,
        mean_net_load_w=mean,
    )


@dataclass(frozen=True, slots=True)
class PricePolicy:
    """How the DSO turns a net load forecast into prices.

    The DSO wants the net load within [`low_w`, `high_w`] watts. Outside it, both prices move by
    `change_ppm(deviation_w)` parts per million of their size: `gain_ppm` per band width of
    deviation beyond the band, at most `max_change_ppm`. The band width is the unit, so moving
    the band does not change how hard the controller pushes; a zero-width band (a set point)
    counts 1 W as the unit. Prices stay within [`min_price`, `max_price`] micro-units per kWh;
    a price the DSO never set starts at `default_price`.
    """

    low_w: int
    high_w: int
    gain_ppm: int
    max_change_ppm: int
    min_price: int
    max_price: int
    default_price: int

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if type(value) is not int:  # a float or bool from a config file is a mistake here
                raise ValueError(
                    f"the price policy's {field.name} must be an integer, not {value!r}"
                )
        if self.low_w > self.high_w:
            raise ValueError(
                f"the net load band is upside down: low_w {self.low_w} W is above "
                f"high_w {self.high_w} W; swap them"
            )
        if self.gain_ppm < 1:
            raise ValueError(
                f"gain_ppm must be at least 1 (got {self.gain_ppm}); with no gain the prices "
                f"would only creep by 1 micro-unit per proposal"
            )
        if not 1 <= self.max_change_ppm <= PPM:
            raise ValueError(
                f"max_change_ppm must be from 1 to {PPM} (a proposal moves a price by at most "
                f"its own size), got {self.max_change_ppm}"
            )
        if self.min_price > self.max_price:
            raise ValueError(
                f"min_price {self.min_price} is above max_price {self.max_price} "
                f"micro-units per kWh; swap them"
            )
        if not self.min_price <= self.default_price <= self.max_price:
            raise ValueError(
                f"default_price {self.default_price} must lie within min_price "
                f"{self.min_price} and max_price {self.max_price} micro-units per kWh"
            )

    @property
    def unit_w(self) -> int:
        """The deviation, in watts, that counts as 100%: the band width, at least 1 W."""
        return max(self.high_w - self.low_w, 1)

    def deviation_w(self, net_load_w: int) -> int:
        """How far `net_load_w` lies beyond the band, watts: positive above, negative below,
        zero inside (the edges are inside)."""
        if net_load_w > self.high_w:
            return net_load_w - self.high_w
        if net_load_w < self.low_w:
            return net_load_w - self.low_w
        return 0

    def change_ppm(self, deviation_w: int) -> Fraction:
        """The relative price change, parts per million (exact), for `deviation_w` watts beyond
        the band in either direction: min(gain_ppm * |deviation_w| / unit_w, max_change_ppm)."""
        uncapped = Fraction(self.gain_ppm * abs(deviation_w), self.unit_w)
        return min(uncapped, Fraction(self.max_change_ppm))

    def next_price(self, current: int | None, deviation_w: int) -> int:
        """The price, micro-units per kWh, that answers `deviation_w` watts beyond the band.

        The current price (`default_price` if None) is first brought within the bounds. Outside
        the band it moves up for a positive deviation and down for a negative one, by its size
        times `change_ppm`, rounded once half to even, and by at least 1 micro-unit so the
        controller never stalls; then it is clamped to [min_price, max_price].
        """
        price = self._clamp(self.default_price if current is None else current)
        if deviation_w == 0:
            return price
        step = max(round(abs(price) * self.change_ppm(deviation_w) / PPM), 1)
        return self._clamp(price + step if deviation_w > 0 else price - step)

    def _clamp(self, price: int) -> int:
        return min(max(price, self.min_price), self.max_price)


@dataclass(frozen=True, slots=True)
class PriceProposal:
    """Prices, micro-units per kWh, to be in force from `interval` on, answering a forecast
    net load of `net_load_w` watts; `reason` says why in one sentence."""

    interval: int
    price_consumption: int
    price_production: int
    net_load_w: int
    reason: str

    @property
    def regulation_time(self) -> int:
        """The `time` of the regulate transaction that puts these prices in force at `interval`:
        a regulation takes effect strictly after its time."""
        return self.interval - 1


def propose(
    policy: PricePolicy,
    forecast: IntervalForecast,
    current_consumption: int | None,
    current_production: int | None,
) -> PriceProposal:
    """The prices (micro-units per kWh) for `forecast.interval` that answer its net load.

    Above the band both prices rise: consuming costs more and producing earns more. Below it
    both fall. Inside it they hold. See `PricePolicy.next_price` for the arithmetic; a current
    price of None means the DSO never set it.
    """
    net = forecast.net_load_w
    deviation = policy.deviation_w(net)
    consumption = policy.next_price(current_consumption, deviation)
    production = policy.next_price(current_production, deviation)
    if deviation > 0:
        situation = (
            f"net load {_power(net)} is {_power(deviation)} above the band's top "
            f"{_power(policy.high_w)}, so prices rise {_rate(policy, deviation)}"
        )
    elif deviation < 0:
        situation = (
            f"net load {_power(net)} is {_power(-deviation)} below the band's bottom "
            f"{_power(policy.low_w)}, so prices fall {_rate(policy, deviation)}"
        )
    else:
        situation = (
            f"net load {_power(net)} is inside the band {_power(policy.low_w)} to "
            f"{_power(policy.high_w)}, so prices hold"
        )
    reason = (
        f"{situation}: consumption {_move(policy, current_consumption, consumption)}, "
        f"production {_move(policy, current_production, production)} micro-units per kWh"
    )
    return PriceProposal(forecast.interval, consumption, production, net, reason)


def proposals(
    policy: PricePolicy,
    forecasts: Iterable[IntervalForecast],
    current_consumption: int | None,
    current_production: int | None,
) -> list[PriceProposal]:
    """The price path (micro-units per kWh) over `forecasts`, each proposal starting from the
    previous one's prices as if it had been adopted. A what-if: the forecast does not react."""
    path: list[PriceProposal] = []
    consumption, production = current_consumption, current_production
    for interval_forecast in forecasts:
        proposal = propose(policy, interval_forecast, consumption, production)
        path.append(proposal)
        consumption, production = proposal.price_consumption, proposal.price_production
    return path


def _power(watts: int) -> str:
    """Watts for a person: "850 W", "12.3 kW" (rounded half to even to 0.1 kW)."""
    if abs(watts) < 1000:
        return f"{watts} W"
    tenths = round(Fraction(abs(watts), 100))
    sign = "-" if watts < 0 else ""
    return f"{sign}{tenths // 10}.{tenths % 10} kW"


def _rate(policy: PricePolicy, deviation_w: int) -> str:
    change = policy.change_ppm(deviation_w)
    tenths = round(change / 1000)  # tenths of a percent
    text = f"{tenths // 10}.{tenths % 10}%" if tenths else "under 0.1%"
    return f"{text} (the cap)" if change == policy.max_change_ppm else text


def _move(policy: PricePolicy, current: int | None, proposed: int) -> str:
    origin = f"unset (default {policy.default_price})" if current is None else str(current)
    if proposed == policy.max_price:
        bound = " (ceiling)"
    elif proposed == policy.min_price:
        bound = " (floor)"
    else:
        bound = ""
    return f"{origin} -> {proposed}{bound}"
