"""The simulated agents' strategies (simulation/agents.py): sides, sizes, price ranges."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bidstore.orders import OrderSide, payment
from simulation.agents import (
    STRATEGIES,
    ForecastTrader,
    Market,
    Passive,
    ZeroIntelligence,
    forecast_from_history,
    policy_for,
)
from wallet.autopilot import Cover

MARKET = Market(price_consumption=250_000, price_production=60_000, interval_s=900)
COVER = Cover(epa_w=2_000, eca_w=5_000, fa=1_000_000)


def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_the_forecast_trader_asks_a_surplus_and_bids_a_deficit_between_the_tariffs() -> None:
    trader = ForecastTrader()
    ask = trader.decide(-1_500, MARKET, COVER, rng())
    bid = trader.decide(3_000, MARKET, COVER, rng())
    assert ask is not None and ask.side is OrderSide.ASK and ask.power_w == 1_500
    assert bid is not None and bid.side is OrderSide.BID and bid.power_w == 3_000
    assert ask.price == 60_000 + 76_000  # 40 % of the spread
    assert bid.price == 60_000 + 114_000  # 60 %
    assert MARKET.price_production < ask.price < bid.price < MARKET.price_consumption


def test_sizes_stay_within_the_cover() -> None:
    trader = ForecastTrader()
    ask = trader.decide(-9_000, MARKET, COVER, rng())
    assert ask is not None and ask.power_w == COVER.epa_w
    poor = Cover(epa_w=2_000, eca_w=5_000, fa=10_000)
    bid = trader.decide(9_000, MARKET, poor, rng())
    assert bid is not None
    assert payment(bid.power_w, MARKET.interval_s, bid.price) <= poor.fa
    assert payment(bid.power_w + 1, MARKET.interval_s, bid.price) > poor.fa


@pytest.mark.parametrize("forecast", [None, 0])
def test_no_forecast_or_a_balanced_one_posts_nothing(forecast: int | None) -> None:
    for name in STRATEGIES:
        assert policy_for(name).decide(forecast, MARKET, COVER, rng()) is None


def test_an_empty_cover_posts_nothing() -> None:
    empty = Cover(0, 0, 0)
    assert ForecastTrader().decide(-1_000, MARKET, empty, rng()) is None
    assert ZeroIntelligence().decide(1_000, MARKET, empty, rng()) is None


def test_zero_intelligence_prices_are_uniform_over_the_tariff_range() -> None:
    generator = rng()
    prices = []
    for n in range(20_000):
        intent = ZeroIntelligence().decide(-100 if n % 2 else 100, MARKET, COVER, generator)
        assert intent is not None
        prices.append(intent.price)
    low, high = MARKET.price_production, MARKET.price_consumption
    assert low <= min(prices) and max(prices) <= high
    counts, _ = np.histogram(prices, bins=10, range=(low, high + 1))
    expected = len(prices) / 10
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 27.9  # chi-squared, 9 degrees of freedom, p = 0.001


def test_zero_intelligence_is_reproducible_from_its_seed() -> None:
    def draws() -> list[int | None]:
        generator = rng()
        return [
            None
            if (i := ZeroIntelligence().decide(500, MARKET, COVER, generator)) is None
            else i.price
            for _ in range(50)
        ]

    assert draws() == draws()


def test_passive_never_orders() -> None:
    generator = rng()
    for forecast in range(-10_000, 10_001, 250):
        assert Passive().decide(forecast, MARKET, COVER, generator) is None


def test_policies_by_name_and_unknown_names() -> None:
    assert [policy_for(n).name for n in STRATEGIES] == list(STRATEGIES)
    with pytest.raises(ValueError, match="unknown strategy"):
        policy_for("martingale")


def test_tariffs_must_leave_a_spread() -> None:
    with pytest.raises(ValueError, match="production < consumption"):
        Market(price_consumption=60_000, price_production=60_000, interval_s=900)


def test_the_forecast_from_history_is_the_autopilots_mean() -> None:
    assert forecast_from_history([], 900) is None
    assert forecast_from_history([900_000, 1_800_000], 900) == 1_500
    assert forecast_from_history([-450], 900) == 0  # -0.5 W rounds half to even


def test_shares_move_the_forecast_traders_prices() -> None:
    trader = ForecastTrader(ask_share=Fraction(0), bid_share=Fraction(1))
    assert trader.prices(MARKET) == (MARKET.price_production, MARKET.price_consumption)
    strategy = ForecastTrader().strategy(MARKET)
    assert (strategy.ask_price, strategy.bid_price) == ForecastTrader().prices(MARKET)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(STRATEGIES),
    forecast=st.integers(-50_000, 50_000),
    production=st.integers(1, 500_000),
    spread=st.integers(1, 500_000),
    interval_s=st.sampled_from([4, 60, 900, 3_600]),
    epa=st.integers(0, 20_000),
    eca=st.integers(0, 20_000),
    fa=st.integers(0, 5_000_000),
    seed=st.integers(0, 2**32),
)
def test_no_intent_spends_more_than_the_cover_holds(
    name: str,
    forecast: int,
    production: int,
    spread: int,
    interval_s: int,
    epa: int,
    eca: int,
    fa: int,
    seed: int,
) -> None:
    market = Market(production + spread, production, interval_s)
    cover = Cover(epa, eca, fa)
    intent = policy_for(name).decide(forecast, market, cover, np.random.default_rng(seed))
    if intent is None:
        return
    assert intent.power_w >= 1
    assert market.price_production <= intent.price <= market.price_consumption
    if intent.side is OrderSide.ASK:
        assert forecast < 0 and intent.power_w <= min(-forecast, epa)
    else:
        assert forecast > 0 and intent.power_w <= min(forecast, eca)
        assert payment(intent.power_w, interval_s, intent.price) <= fa
