"""The wallet's autopilot: DESIGN.md section 1's advice that "a prosumer who does not trade
should still withdraw, mix and deposit, so that inactivity leaks nothing", as a routine.

For every interval t it runs one cycle, `lead` intervals ahead:

1. before t (when t - lead begins): withdraw the same cover every interval (`Cover`: EPA and
   ECA watts covering t, FA micro-units), each output to a fresh address, trading or not;
2. mix what it withdrew (a failed or absent mixer is not fatal: the coins stay as they are,
   are not offered on the market, and are deposited unmixed; the journal says so);
3. optionally trade (`Strategy`): from a forecast of the owner's net power in t (fixed, or the
   mean measured energy of the last bills) ask the surplus or bid the deficit, within what the
   cover holds, then take the wallet's step on its trades until t begins;
4. once t has begun (the bid store ends every trade for t then, so nothing covering t can be
   sold any more), deposit every unspent EPA and ECA whose last interval is t or earlier and
   every unspent FA no later cycle holds, so the meter's bill for t, which closes a short
   delay after t ends, counts W_EPA - D_EPA as what was actually sold.

Every step's failure is reported and journaled and the loop goes on. The loop holds the wallet
file's lock only inside a step's own edits, so the command line works alongside it; it stops
between steps once `stop` is set (the command line sets it on SIGINT and SIGTERM). What it does
to the world goes through `Operations`, so the schedule is tested with fakes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol, TypeVar

from assets.model import Asset, Eca, Epa, Fa
from assets.money import format_price
from bidstore.orders import JOULES_PER_KWH, OrderSide
from service.clock import now as ledger_now
from service.clock import wall_seconds_until
from wallet.wallet import Coin, Wallet, WalletError, asset_text

JOURNAL_KIND = "autopilot"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Cover:
    """What is withdrawn for every interval, trading or not: EPA and ECA in watts, FA in
    micro-units (0 leaves a kind out). Values of the 1-2-5 series mix as one coin each."""

    epa_w: int = 1_000
    eca_w: int = 1_000
    fa: int = 100_000

    def assets(self, interval: int) -> list[Asset]:
        assets: list[Asset] = []
        if self.epa_w:
            assets.append(Epa(self.epa_w, interval, interval))
        if self.eca_w:
            assets.append(Eca(self.eca_w, interval, interval))
        if self.fa:
            assets.append(Fa(self.fa))
        return assets


@dataclass(frozen=True, slots=True)
class Strategy:
    """When to trade. The forecast is the owner's net power in an interval in watts,
    consumption positive: `forecast_w` if given, else the mean measured energy of the last
    `history` bills. A surplus (negative) is asked at `ask_price`, a deficit bid at
    `bid_price` (micro-units per kWh); without that price the side is not traded. `pricing`,
    if given, prices each order instead: `pricing(side, interval, forecast_w)` is the price
    for that side in that interval, or None for no order (a simulated agent's strategy)."""

    ask_price: int | None = None
    bid_price: int | None = None
    forecast_w: int | None = None
    history: int = 4
    min_order_w: int = 1
    pricing: Callable[[OrderSide, int, int], int | None] | None = None

    @property
    def trades(self) -> bool:
        return self.ask_price is not None or self.bid_price is not None or self.pricing is not None

    def price(self, side: OrderSide, interval: int, forecast_w: int) -> int | None:
        """The price of an order on `side` for `interval`, micro-units per kWh; None: none."""
        if self.pricing is not None:
            return self.pricing(side, interval, forecast_w)
        return self.ask_price if side is OrderSide.ASK else self.bid_price


@dataclass(frozen=True, slots=True)
class Settings:
    cover: Cover = Cover()
    strategy: Strategy = Strategy()
    lead: int = 1  # withdraw for t when t - lead begins
    poll_s: float = 5.0  # seconds between looks at the wallet's trades
    # offer the cover unmixed when no mixer is configured: its trades are then linkable to
    # the meter from the ledger alone (a simulation measures what mixing buys this way)
    trade_unmixed: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the cycle for `interval`: `name` is withdraw, mix, order, trade or deposit;
    `outcome` done, skipped (by design: no mixer, nothing to trade) or failed; `code` says
    why it was not done; `text` one sentence."""

    interval: int
    name: str
    outcome: str
    text: str
    code: str | None = None


@dataclass
class Cycle:
    """What the autopilot holds for one interval: the coins it withdrew (as mixing left them)
    and whether they may go to the market."""

    interval: int
    coins: list[Coin] = field(default_factory=list)
    mixed: bool = False
    ordered: bool = False


class Operations(Protocol):
    """What the autopilot does to the wallet, the meter, the mixer and the bid store."""

    @property
    def interval_s(self) -> int: ...

    def interval_now(self) -> int: ...

    def withdraw(self, assets: Sequence[Asset]) -> list[Coin]:
        """Withdraw `assets`, each to a fresh address: the coins."""
        ...

    def has_mixer(self) -> bool: ...

    def mix(
        self, coins: Sequence[Coin], replaced: Callable[[Coin, list[Coin]], None]
    ) -> list[WalletError]:
        """Mix `coins`, calling `replaced(coin, by)` each time a coin becomes others (split)
        or another (a round); the failures."""
        ...

    def measured_j(self, first: int, last: int) -> list[int]:
        """M_t of each interval from `first` to `last` the meter has billed, joules."""
        ...

    def place_order(self, side: OrderSide, interval: int, price: int, power: int) -> str:
        """Post an order; its id."""
        ...

    def step_trades(self) -> int:
        """Take the wallet's step on every trade that needs one; how many."""
        ...

    def settle_orders(self) -> None:
        """Learn from the bid store which orders ended, freeing their coins."""
        ...

    def unspent(self) -> list[Coin]:
        """The wallet's unspent coins, after asking the ledger."""
        ...

    def deposit(self, coins: Sequence[Coin]) -> int:
        """Deposit `coins` to the meter, one transfer each; how many were deposited."""
        ...

    def journal(self, text: str, **fields: Any) -> None: ...


class WalletOperations:
    """`Operations` on a real wallet, its meter, mixer and bid store."""

    def __init__(self, wallet: Wallet, *, rounds: int = 2, mix_timeout_s: float = 600.0) -> None:
        self.wallet, self.rounds, self.mix_timeout_s = wallet, rounds, mix_timeout_s

    @property
    def interval_s(self) -> int:
        return self.wallet.genesis.interval_s

    def interval_now(self) -> int:
        return self.wallet.interval_now()

    def withdraw(self, assets: Sequence[Asset]) -> list[Coin]:
        answer = self.wallet.withdraw(assets)
        issued = {o["address"] for o in answer["outputs"]}
        return [c for c in self.wallet.coins() if c.output.address.hex() in issued]

    def has_mixer(self) -> bool:
        return self.wallet.services.mixer is not None

    def mix(
        self, coins: Sequence[Coin], replaced: Callable[[Coin, list[Coin]], None]
    ) -> list[WalletError]:
        from wallet.mixing import mix

        lock = threading.Lock()  # rounds end on the mixing threads

        def after_round(before: Coin, after: Coin, _: int) -> None:
            with lock:
                replaced(before, [after])

        _, failed = mix(
            self.wallet,
            coins,
            self.rounds,
            timeout_s=self.mix_timeout_s,
            progress=after_round,
            on_split=replaced,
        )
        return failed

    def measured_j(self, first: int, last: int) -> list[int]:
        return [b["measured_j"] for b in self.wallet.bill_history(first, last)["bills"]]

    def place_order(self, side: OrderSide, interval: int, price: int, power: int) -> str:
        from wallet.market import place_order

        return str(place_order(self.wallet, side, interval, price, power)["id"])

    def step_trades(self) -> int:
        from wallet.market import accept

        return len(accept(self.wallet))

    def settle_orders(self) -> None:
        from wallet.market import proposals

        proposals(self.wallet)

    def unspent(self) -> list[Coin]:
        self.wallet.refresh()
        return self.wallet.coins()

    def deposit(self, coins: Sequence[Coin]) -> int:
        return len(self.wallet.deposit(coins))

    def journal(self, text: str, **fields: Any) -> None:
        with self.wallet.edit() as contents:
            self.wallet.note(contents, JOURNAL_KIND, text, **fields)


def forecast_w(measured_j: Sequence[int], interval_s: int) -> int | None:
    """The mean net power of the intervals measured (joules each), watts, rounded half to
    even; None without any."""
    if not measured_j:
        return None
    return round(Fraction(sum(measured_j), len(measured_j) * interval_s))


def affordable_w(fa: int, interval_s: int, price: int) -> int:
    """The most watts held `interval_s` seconds that `fa` micro-units pay for at `price`
    micro-units per kWh (`bidstore.orders.payment` of it is at most `fa`)."""
    return fa * JOULES_PER_KWH // (interval_s * price)


class Autopilot:
    """The routine over `ops`, clocked by `clock` (ledger unix seconds, `service.clock`) and
    `sleep` (wall seconds), which must return early once `stop` is set (the default,
    `stop.wait`, does); `report` hears every step."""

    def __init__(
        self,
        ops: Operations,
        settings: Settings,
        *,
        epoch: int,
        report: Callable[[Step], None] = lambda _: None,
        clock: Callable[[], float] = ledger_now,
        sleep: Callable[[float], Any] | None = None,
        stop: threading.Event | None = None,
        currency: str = "EUR",
    ) -> None:
        self.ops, self.settings, self.epoch = ops, settings, epoch
        self.currency = currency  # the chain's, for the money in the steps' sentences
        self.report, self.clock = report, clock
        self.stop = stop or threading.Event()
        self.sleep = sleep or self.stop.wait
        self.cycles: dict[int, Cycle] = {}

    # ------------------------------------------------------------ the loop

    def run(self, *, once: bool = False) -> None:
        """Run cycles until `stop` is set; with `once`, the cycle of the interval `lead`
        ahead only, returning once it is deposited."""
        opened = self.ops.interval_now() + self.settings.lead
        self.open_cycle(opened)
        while not self.stop.is_set():
            now = self.ops.interval_now()
            for t in sorted(t for t in self.cycles if t <= now):
                if self.stop.is_set():
                    return
                self.close_cycle(t)
            if once and not self.cycles:
                return
            if not once and now + self.settings.lead > opened and not self.stop.is_set():
                opened = now + self.settings.lead  # after a pause, skipped intervals stay skipped
                self.open_cycle(opened)
            self.trade_until(self.epoch + (now + 1) * self.ops.interval_s)

    def open_cycle(self, t: int) -> Cycle:
        """Steps 1 to 3 for interval `t`: withdraw the cover, mix it, place the order."""
        cycle = self.cycles.setdefault(t, Cycle(t))
        assets = self.settings.cover.assets(t)
        if not assets:
            return cycle
        coins = self._attempt(t, "withdraw", lambda: self.ops.withdraw(assets))
        if coins is None:
            return cycle
        cycle.coins = list(coins)
        withdrew = ", ".join(asset_text(a, self.currency) for a in assets)
        self._done(t, "withdraw", f"withdrew {withdrew}")
        if not self.stop.is_set():
            self._mix(cycle)
        if not self.stop.is_set() and self.settings.strategy.trades:
            self._order(cycle)
        return cycle

    def trade_until(self, deadline: float) -> None:
        """Step on the open cycles' trades every `poll_s` (wall seconds) until `deadline` (ledger
        unix seconds)."""
        while not self.stop.is_set():
            now = self.ops.interval_now()
            trading = sorted(t for t, c in self.cycles.items() if c.ordered and t > now)
            if trading:
                stepped = self._attempt(trading[0], "trade", self.ops.step_trades)
                if stepped:
                    text = f"took the wallet's step on {stepped} trade(s)"
                    self._done(trading[0], "trade", text)
            left = wall_seconds_until(deadline, self.clock)
            if left <= 0:
                return
            self.sleep(min(self.settings.poll_s, left))

    def close_cycle(self, t: int) -> None:
        """Step 4 for interval `t`, which has begun: deposit what can no longer be sold."""
        cycle = self.cycles.pop(t)
        if cycle.ordered:
            self._attempt(t, "deposit", self.ops.settle_orders)
        unspent = self._attempt(t, "deposit", self.ops.unspent)
        if unspent is None:
            return
        held = {c.key for later in self.cycles.values() for c in later.coins}
        due = [
            c
            for c in unspent
            if (c.asset.kind == "FA" and c.key not in held)
            or (not isinstance(c.asset, Fa) and c.asset.end <= t)
        ]
        if not due:
            self._done(t, "deposit", "nothing to deposit")
            return
        done = self._attempt(t, "deposit", lambda: self.ops.deposit(due))
        if done is not None:
            unmixed = "" if cycle.mixed else " (not mixed)"
            self._done(t, "deposit", f"deposited {done} coin(s){unmixed}")

    # ------------------------------------------------------------ steps

    def _mix(self, cycle: Cycle) -> None:
        t = cycle.interval
        if not self.ops.has_mixer():
            self._skip(t, "mix", "no_mixer", "no mixer is configured: the cover stays unmixed")
            return

        def replaced(coin: Coin, by: list[Coin]) -> None:
            cycle.coins = [c for c in cycle.coins if c.key != coin.key] + by

        failed = self._attempt(t, "mix", lambda: self.ops.mix(list(cycle.coins), replaced))
        if failed is None:
            return
        if failed:
            codes = ", ".join(sorted({e.code for e in failed}))
            text = f"{len(failed)} piece(s) not mixed ({codes}): they go to the deposit unmixed"
            self._fail(t, "mix", codes, f"{text}, not to the market")
            return
        cycle.mixed = True
        self._done(t, "mix", f"mixed {len(cycle.coins)} piece(s)")

    def _order(self, cycle: Cycle) -> None:
        t, strategy = cycle.interval, self.settings.strategy
        unmixed_allowed = self.settings.trade_unmixed and not self.ops.has_mixer()
        if not cycle.mixed and not unmixed_allowed:
            self._skip(t, "order", "not_mixed", "no order: the cover is not mixed")
            return
        forecast = strategy.forecast_w
        if forecast is None:
            now = self.ops.interval_now()
            first = max(0, now - strategy.history - 2)  # intervals are numbered from 0
            found = self._attempt(t, "order", lambda: self.ops.measured_j(first, now - 1))
            if found is None:
                return
            forecast = forecast_w(found[-strategy.history :], self.ops.interval_s)
            if forecast is None:
                self._skip(t, "order", "no_forecast", "no order: the meter has no bill yet")
                return
        side, price, power = self._terms(t, forecast)
        if side is None or price is None or power < strategy.min_order_w:
            self._done(t, "order", f"no order for a forecast of {forecast:,} W")
            return
        placed = self._attempt(t, "order", lambda: self.ops.place_order(side, t, price, power))
        if placed is not None:
            cycle.ordered = True
            text = (
                f"{side} {power:,} W at {format_price(price, self.currency)}, "
                f"forecast {forecast:,} W"
            )
            self._done(t, "order", f"{text} (order {placed[:16]})")

    def _terms(self, t: int, forecast: int) -> tuple[OrderSide | None, int | None, int]:
        """The order a forecast of `forecast` W for interval `t` calls for: (side, price,
        watts)."""
        strategy, cover = self.settings.strategy, self.settings.cover
        if forecast < 0 and (price := strategy.price(OrderSide.ASK, t, forecast)) is not None:
            return OrderSide.ASK, price, min(-forecast, cover.epa_w)
        if forecast > 0 and (price := strategy.price(OrderSide.BID, t, forecast)) is not None:
            paid = affordable_w(cover.fa, self.ops.interval_s, price)
            return OrderSide.BID, price, min(forecast, cover.eca_w, paid)
        return None, None, 0

    def _attempt(self, t: int, name: str, action: Callable[[], T]) -> T | None:
        """`action()`, or None once its failure is reported and journaled."""
        try:
            return action()
        except WalletError as exc:
            self._fail(t, name, exc.code, exc.message)
        except Exception as exc:  # a step's surprise must not end the routine
            self._fail(t, name, "unexpected", f"{type(exc).__name__}: {exc}")
        return None

    def _done(self, t: int, name: str, text: str) -> None:
        self.report(Step(t, name, "done", text))

    def _skip(self, t: int, name: str, code: str, text: str) -> None:
        self._journal(t, name, code, text)
        self.report(Step(t, name, "skipped", text, code))

    def _fail(self, t: int, name: str, code: str, message: str) -> None:
        # the step's outcome says it failed: its text says why, once
        self._journal(t, name, code, f"{name} failed: {message}")
        self.report(Step(t, name, "failed", message, code))

    def _journal(self, t: int, name: str, code: str, text: str) -> None:
        try:
            self.ops.journal(f"interval {t}: {text}", step=name, code=code, interval=t)
        except Exception as exc:  # the journal's failure is reported with the step's
            self.report(Step(t, "journal", "failed", f"cannot journal: {exc}", "journal"))
