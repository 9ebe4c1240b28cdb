"""The simulated prosumers' trading strategies: small pure policies, shared by both modes.

Each policy decides, for one delivery interval, the order a home posts on the bid store given a
forecast of its net power in that interval (W, consumption positive), the tariffs, what its
cover holds (`wallet.autopilot.Cover`: EPA and ECA watts, FA micro-units) and a seeded
`numpy.random.Generator`. It answers an `OrderIntent` or None. No I/O, no clock: the in-process
mode calls them directly and the multi-process harness through the wallet's autopilot.

- `forecast`: the autopilot's forecast trader (`wallet.autopilot.Strategy`): a surplus is asked
  at a fixed price, a deficit bid at a fixed price, both between the tariffs (by default the ask
  at 40 % and the bid at 60 % of the way from the production to the consumption tariff), so
  that asks and bids cross and trades clear.
- `zero_intelligence`: Gode and Sunder's (1993) zero-intelligence trader with a budget
  constraint (ZI-C): the same sides and sizes, at a price drawn uniformly, each interval, from
  the production tariff (what a seller gets from the DSO anyway) to the consumption tariff
  (what a buyer pays the DSO anyway), so it never trades at a loss against the grid.
- `passive`: never orders; it still withdraws, mixes and deposits (DESIGN.md section 1).

Sizes follow the autopilot (`Autopilot._terms`): an ask sells min(surplus, cover's EPA), a bid
buys min(deficit, cover's ECA, what the cover's FA pays for at the bid's price), so no intent
ever spends more than the cover holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np

from bidstore.orders import MAX_PRICE, MIN_PRICE, OrderSide
from wallet.autopilot import Cover, Strategy, affordable_w, forecast_w

FORECAST = "forecast"
ZERO_INTELLIGENCE = "zero_intelligence"
PASSIVE = "passive"
STRATEGIES = (FORECAST, ZERO_INTELLIGENCE, PASSIVE)
ASK_SHARE = Fraction(2, 5)  # the forecast trader's ask: production + 40 % of the spread
BID_SHARE = Fraction(3, 5)  # its bid: production + 60 % of the spread


@dataclass(frozen=True, slots=True)
class Market:
    """The tariffs in force (micro-units per kWh; consumption above production) and the
    chain's interval length in seconds."""

    price_consumption: int
    price_production: int
    interval_s: int

    def __post_init__(self) -> None:
        if not MIN_PRICE <= self.price_production < self.price_consumption <= MAX_PRICE:
            raise ValueError(
                f"the tariffs must satisfy {MIN_PRICE} <= production < consumption <= "
                f"{MAX_PRICE:,}, not production {self.price_production:,} and consumption "
                f"{self.price_consumption:,}"
            )
        if self.interval_s < 1:
            raise ValueError(f"an interval is at least 1 s, not {self.interval_s}")

    def between(self, share: Fraction) -> int:
        """The price `share` of the way from the production to the consumption tariff,
        rounded half to even."""
        spread = self.price_consumption - self.price_production
        return self.price_production + round(share * spread)


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """An order a home means to post: its side, its limit price (micro-units per kWh) and its
    power (W) in the delivery interval."""

    side: OrderSide
    price: int
    power_w: int


class Policy(Protocol):
    """A trading strategy: `decide` is pure but for the draws it takes from `rng`."""

    @property
    def name(self) -> str: ...

    def decide(
        self, forecast: int | None, market: Market, cover: Cover, rng: np.random.Generator
    ) -> OrderIntent | None:
        """The order for a forecast net power of `forecast` W (None: no forecast yet)."""
        ...


def sized(
    side: OrderSide, price: int, forecast: int, market: Market, cover: Cover
) -> OrderIntent | None:
    """The intent of `side` at `price` for a forecast of `forecast` W, within the cover: an
    ask sells at most the cover's EPA, a bid buys at most its ECA and what its FA pays for at
    `price`; None when that leaves nothing (or the forecast is on the other side)."""
    if side is OrderSide.ASK:
        power = min(-forecast, cover.epa_w)
    else:
        paid = affordable_w(cover.fa, market.interval_s, price)
        power = min(forecast, cover.eca_w, paid)
    return OrderIntent(side, price, power) if power >= 1 else None


@dataclass(frozen=True, slots=True)
class ForecastTrader:
    """Asks a forecast surplus at `ask_share` and bids a forecast deficit at `bid_share` of the
    way from the production to the consumption tariff."""

    ask_share: Fraction = ASK_SHARE
    bid_share: Fraction = BID_SHARE

    @property
    def name(self) -> str:
        return FORECAST

    def prices(self, market: Market) -> tuple[int, int]:
        """(ask price, bid price), micro-units per kWh."""
        return market.between(self.ask_share), market.between(self.bid_share)

    def strategy(self, market: Market) -> Strategy:
        """The same trader as the wallet autopilot's `Strategy`, for the multi-process mode."""
        ask, bid = self.prices(market)
        return Strategy(ask_price=ask, bid_price=bid)

    def decide(
        self, forecast: int | None, market: Market, cover: Cover, rng: np.random.Generator
    ) -> OrderIntent | None:
        if forecast is None or forecast == 0:
            return None
        ask, bid = self.prices(market)
        if forecast < 0:
            return sized(OrderSide.ASK, ask, forecast, market, cover)
        return sized(OrderSide.BID, bid, forecast, market, cover)


@dataclass(frozen=True, slots=True)
class ZeroIntelligence:
    """Gode and Sunder's ZI-C trader: a price drawn uniformly from the whole micro-units
    between the production and the consumption tariff (both included), anew each decision."""

    @property
    def name(self) -> str:
        return ZERO_INTELLIGENCE

    def decide(
        self, forecast: int | None, market: Market, cover: Cover, rng: np.random.Generator
    ) -> OrderIntent | None:
        if forecast is None or forecast == 0:
            return None
        # drawn before the side is known, so a home's draws do not depend on its forecast
        price = int(rng.integers(market.price_production, market.price_consumption, endpoint=True))
        side = OrderSide.ASK if forecast < 0 else OrderSide.BID
        return sized(side, price, forecast, market, cover)


@dataclass(frozen=True, slots=True)
class Passive:
    """Never orders: the paper's privacy routine alone (withdraw, mix, deposit)."""

    @property
    def name(self) -> str:
        return PASSIVE

    def decide(
        self, forecast: int | None, market: Market, cover: Cover, rng: np.random.Generator
    ) -> OrderIntent | None:
        return None


def policy_for(name: str) -> Policy:
    """The policy of strategy `name` (one of `STRATEGIES`), with its default parameters."""
    policies: dict[str, Policy] = {
        FORECAST: ForecastTrader(),
        ZERO_INTELLIGENCE: ZeroIntelligence(),
        PASSIVE: Passive(),
    }
    if name not in policies:
        raise ValueError(f"unknown strategy {name!r}: one of {', '.join(STRATEGIES)}")
    return policies[name]


def forecast_from_history(measured_j: Sequence[int], interval_s: int) -> int | None:
    """The autopilot's forecast: the mean net power of the measured intervals (joules each,
    as the meter billed them), watts, rounded half to even; None without any."""
    return forecast_w(measured_j, interval_s)
