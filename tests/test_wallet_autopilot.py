"""The autopilot's schedule and failure handling (wallet/autopilot.py) on a fake clock, with
fake operations in place of the wallet, the meter, the mixer and the bid store."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

from assets.model import Asset, Eca, Epa, Fa, Outpoint, Output
from bidstore.orders import OrderSide, payment
from wallet.autopilot import (
    Autopilot,
    Cover,
    Settings,
    Step,
    Strategy,
    affordable_w,
    forecast_w,
)
from wallet.wallet import Coin, WalletError

INTERVAL_S = 10
COVER = Cover(epa_w=1_000, eca_w=2_000, fa=50_000)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeOps:
    """The world as the autopilot sees it: a wallet whose coins are a dict."""

    def __init__(self, clock: Clock, *, mixer: bool = True) -> None:
        self.clock, self.mixer = clock, mixer
        self.held: dict[str, Coin] = {}
        self.serial = itertools.count(1)
        self.withdrawn: list[tuple[int, list[Asset]]] = []
        self.deposited: list[tuple[int, list[Coin]]] = []
        self.orders: list[tuple[OrderSide, int, int, int]] = []
        self.journaled: list[dict[str, Any]] = []
        self.stepped: list[int] = []
        self.settled: list[int] = []
        self.measured: list[int] = []
        self.asked: list[tuple[int, int]] = []  # the bill ranges asked for
        self.mix_fails = False
        self.fail: dict[str, Callable[[], None]] = {}  # operation -> what it does instead

    @property
    def interval_s(self) -> int:
        return INTERVAL_S

    def interval_now(self) -> int:
        return math.floor(self.clock.now / INTERVAL_S)

    def coin(self, asset: Asset, origin: str = "withdrawal") -> Coin:
        n = next(self.serial)
        made = Coin(Outpoint(n.to_bytes(32, "big"), 0), Output(asset, bytes(32)), "unspent", origin)
        self.held[made.key] = made
        return made

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail:
            self.fail[name]()

    def withdraw(self, assets: Sequence[Asset]) -> list[Coin]:
        self._maybe_fail("withdraw")
        self.withdrawn.append((self.interval_now(), list(assets)))
        return [self.coin(a) for a in assets]

    def has_mixer(self) -> bool:
        return self.mixer

    def mix(
        self, coins: Sequence[Coin], replaced: Callable[[Coin, list[Coin]], None]
    ) -> list[WalletError]:
        if self.mix_fails:
            return [WalletError("failed", "too few joined the pool")]
        for coin in coins:
            del self.held[coin.key]
            replaced(coin, [self.coin(coin.asset, "mix")])
        return []

    def measured_j(self, first: int, last: int) -> list[int]:
        self.asked.append((first, last))
        return list(self.measured)

    def place_order(self, side: OrderSide, interval: int, price: int, power: int) -> str:
        self._maybe_fail("place_order")
        self.orders.append((side, interval, price, power))
        return "ab" * 32

    def step_trades(self) -> int:
        self.stepped.append(self.interval_now())
        return 0

    def settle_orders(self) -> None:
        self.settled.append(self.interval_now())

    def unspent(self) -> list[Coin]:
        self._maybe_fail("unspent")
        return list(self.held.values())

    def deposit(self, coins: Sequence[Coin]) -> int:
        self._maybe_fail("deposit")
        self.deposited.append((self.interval_now(), list(coins)))
        for coin in coins:
            del self.held[coin.key]
        return len(coins)

    def journal(self, text: str, **fields: Any) -> None:
        self.journaled.append({"text": text, **fields})


def pilot(
    ops: FakeOps, clock: Clock, settings: Settings, steps: list[Step], until: float | None = None
) -> Autopilot:
    """An autopilot on `clock`, stopping once the clock passes `until`."""
    made: Autopilot

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if until is not None and clock.now >= until:
            made.stop.set()

    made = Autopilot(ops, settings, epoch=0, report=steps.append, clock=clock, sleep=sleep)
    return made


def kinds(coins: Sequence[Coin]) -> list[str]:
    return sorted(str(c.asset.kind) for c in coins)


def test_once_withdraws_for_the_next_interval_and_deposits_it_once_it_begins() -> None:
    clock = Clock(53.0)  # interval 5
    ops = FakeOps(clock, mixer=False)
    steps: list[Step] = []
    pilot(ops, clock, Settings(COVER), steps).run(once=True)

    assert ops.withdrawn == [(5, [Epa(1_000, 6, 6), Eca(2_000, 6, 6), Fa(50_000)])]
    assert [(t, kinds(c)) for t, c in ops.deposited] == [(6, ["ECA", "EPA", "FA"])]
    assert 60 <= clock.now < 70  # deposited as interval 6 began, not after
    assert ops.held == {}
    # no mixer: skipped, journaled, and the cover is deposited unmixed
    assert [j["code"] for j in ops.journaled] == ["no_mixer"]
    assert [(s.name, s.outcome) for s in steps] == [
        ("withdraw", "done"),
        ("mix", "skipped"),
        ("deposit", "done"),
    ]
    assert "not mixed" in steps[-1].text


def test_the_loop_withdraws_the_same_cover_every_interval_and_deposits_each_in_time() -> None:
    clock = Clock(10.0)
    ops = FakeOps(clock)
    steps: list[Step] = []
    pilot(ops, clock, Settings(COVER), steps, until=45.0).run()

    assert [t for t, _ in ops.withdrawn] == [1, 2, 3, 4]
    assert [assets for _, assets in ops.withdrawn] == [COVER.assets(t) for t in (2, 3, 4, 5)]
    assert [t for t, _ in ops.deposited] == [2, 3, 4]
    for t, coins in ops.deposited:
        assert all(c.origin == "mix" for c in coins)  # what mixing left, not the withdrawn coins
        assert {c.asset.end for c in coins if not isinstance(c.asset, Fa)} == {t}
    assert ops.journaled == []
    assert all(s.outcome == "done" for s in steps)


def test_a_failed_step_is_reported_and_journaled_and_the_loop_goes_on() -> None:
    clock = Clock(10.0)
    ops = FakeOps(clock)
    steps: list[Step] = []

    def refuse() -> None:
        if ops.interval_now() == 2:
            raise WalletError("credit_exceeded", "over the credit line")

    def unreachable() -> None:
        if ops.interval_now() == 4:
            raise ConnectionError("the ledger went away")

    ops.fail = {"withdraw": refuse, "deposit": unreachable}
    pilot(ops, clock, Settings(COVER), steps, until=55.0).run()

    assert [t for t, _ in ops.withdrawn] == [1, 3, 4, 5]  # interval 2's withdrawal refused
    failed = [(s.interval, s.name, s.code) for s in steps if s.outcome == "failed"]
    assert failed == [(3, "withdraw", "credit_exceeded"), (4, "deposit", "unexpected")]
    assert [j["code"] for j in ops.journaled] == ["credit_exceeded", "unexpected"]
    assert "the ledger went away" in ops.journaled[1]["text"]
    assert ("deposit", "nothing to deposit") in [(s.name, s.text) for s in steps if s.interval == 3]
    # what interval 4's deposit left behind is swept by the next one (its bill may be open)
    assert [t for t, _ in ops.deposited] == [2, 5]
    swept = ops.deposited[1][1]
    assert Epa(1_000, 4, 4) in [c.asset for c in swept]
    assert sum(isinstance(c.asset, Fa) for c in swept) == 2


def test_a_failed_mix_goes_to_the_deposit_unmixed_and_not_to_the_market() -> None:
    clock = Clock(10.0)
    ops = FakeOps(clock)
    steps: list[Step] = []
    ops.mix_fails = True
    strategy = Strategy(ask_price=100_000, forecast_w=-500)
    pilot(ops, clock, Settings(COVER, strategy), steps).run(once=True)

    assert ops.orders == []
    assert [(t, kinds(c)) for t, c in ops.deposited] == [(2, ["ECA", "EPA", "FA"])]
    codes = [j["code"] for j in ops.journaled]
    assert codes == ["failed", "not_mixed"]
    assert "deposit unmixed" in ops.journaled[0]["text"]


def test_a_surplus_is_asked_and_trades_are_stepped_on_until_the_interval_begins() -> None:
    clock = Clock(10.0)
    ops = FakeOps(clock)
    steps: list[Step] = []
    ops.measured = [-3_000 * INTERVAL_S, -700 * INTERVAL_S, -500 * INTERVAL_S]  # mean -1400 W
    strategy = Strategy(ask_price=120_000, bid_price=300_000, history=2)
    settings = Settings(COVER, strategy, poll_s=2.0)
    pilot(ops, clock, settings, steps).run(once=True)

    # the last 2 bills: -600 W; asked within the cover's 1000 W of EPA
    assert ops.orders == [(OrderSide.ASK, 2, 120_000, 600)]
    assert ops.stepped == [1] * 5  # every poll_s while interval 2 was ahead
    assert ops.settled == [2]  # the store's word before the deposit
    assert [t for t, _ in ops.deposited] == [2]


def test_a_deficit_is_bid_within_the_cover_s_eca_and_fa() -> None:
    clock = Clock(10.0)
    ops = FakeOps(clock)
    steps: list[Step] = []
    strategy = Strategy(bid_price=250_000, forecast_w=50_000)
    pilot(ops, clock, Settings(COVER, strategy), steps).run(once=True)
    affordable = affordable_w(COVER.fa, INTERVAL_S, 250_000)
    assert affordable == 72_000 and payment(affordable, INTERVAL_S, 250_000) <= COVER.fa
    assert ops.orders == [(OrderSide.BID, 2, 250_000, 2_000)]  # the ECA cover limits it

    clock = Clock(10.0)
    steps = []
    ops = FakeOps(clock)
    strategy = Strategy(ask_price=1, forecast_w=50)  # a deficit but only asks: no order
    pilot(ops, clock, Settings(COVER, strategy), steps).run(once=True)
    assert ops.orders == [] and any("no order" in s.text for s in steps)


def test_fa_a_later_cycle_holds_is_not_deposited() -> None:
    clock = Clock(10.0)
    ops = FakeOps(clock)
    steps: list[Step] = []
    received = ops.coin(Fa(7), "received")
    pilot(ops, clock, Settings(COVER, lead=2), steps, until=35.0).run()

    first = ops.deposited[0]
    assert first[0] == 3  # interval 3's cycle, withdrawn at 1
    fa_keys = {c.key for c in first[1] if isinstance(c.asset, Fa)}
    assert received.key in fa_keys and len(fa_keys) == 2  # not the FA withdrawn for 4 and 5
    assert sum(isinstance(c.asset, Fa) for c in ops.held.values()) == 2


def test_stop_ends_the_loop_between_steps() -> None:
    clock = Clock(10.0)
    ops = FakeOps(clock)
    steps: list[Step] = []
    made = pilot(ops, clock, Settings(COVER), steps)
    ops.fail = {"withdraw": made.stop.set}  # a signal arriving during the withdrawal
    made.run()
    assert [s.name for s in steps] == ["withdraw"]  # then nothing: not the mix, no deposit
    assert ops.deposited == [] and clock.now == 10.0


def test_the_forecast_is_the_mean_power_of_the_bills() -> None:
    assert forecast_w([], 900) is None
    assert forecast_w([900 * 100, 900 * 201], 900) == 150  # 150.5, half to even
    assert forecast_w([-900 * 7], 900) == -7


def test_a_pricing_strategy_prices_each_order_by_side_and_interval() -> None:
    clock = Clock(10.0)
    ops = FakeOps(clock)
    steps: list[Step] = []
    asked: list[tuple[OrderSide, int, int]] = []

    def pricing(side: OrderSide, interval: int, forecast: int) -> int | None:
        asked.append((side, interval, forecast))
        return 111_000 + interval if side is OrderSide.BID else None

    strategy = Strategy(pricing=pricing, forecast_w=400)
    assert strategy.trades
    pilot(ops, clock, Settings(COVER, strategy), steps).run(once=True)
    assert asked == [(OrderSide.BID, 2, 400)]
    assert ops.orders == [(OrderSide.BID, 2, 111_002, 400)]

    clock = Clock(10.0)
    ops = FakeOps(clock)
    strategy = Strategy(pricing=lambda side, t, f: None, forecast_w=-400)  # declines: no order
    pilot(ops, clock, Settings(COVER, strategy), steps).run(once=True)
    assert ops.orders == []


def test_early_in_a_chain_the_forecast_asks_for_bills_from_interval_0() -> None:
    """Near the epoch the history window would start before interval 0, which a meter refuses."""
    clock = Clock(10.0)  # interval 1
    ops = FakeOps(clock)
    ops.measured = [-900 * INTERVAL_S]
    steps: list[Step] = []
    strategy = Strategy(ask_price=120_000, history=4)
    pilot(ops, clock, Settings(COVER, strategy), steps).run(once=True)
    assert ops.asked == [(0, 0)]
    assert ops.orders == [(OrderSide.ASK, 2, 120_000, 900)]


def test_without_a_mixer_the_cover_is_traded_unmixed_only_when_told_to() -> None:
    strategy = Strategy(ask_price=120_000, forecast_w=-500)
    for trade_unmixed, orders in ((False, []), (True, [(OrderSide.ASK, 2, 120_000, 500)])):
        clock = Clock(10.0)
        ops = FakeOps(clock, mixer=False)
        steps: list[Step] = []
        settings = Settings(COVER, strategy, trade_unmixed=trade_unmixed)
        pilot(ops, clock, settings, steps).run(once=True)
        assert ops.orders == orders

    clock = Clock(10.0)
    ops = FakeOps(clock)  # a mixer that fails: never traded unmixed, whatever the setting
    ops.mix_fails = True
    pilot(ops, clock, Settings(COVER, strategy, trade_unmixed=True), []).run(once=True)
    assert ops.orders == []
