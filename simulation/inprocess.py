"""`--in-process` mode: a whole community in one process, no HTTP, no threads, for scale.

The same rules, billing, mixing protocol and matching as the multi-process harness, called
directly: the real ledger (`ledger.ledger.Ledger` over an in-memory SQLite store),
the real CoinShuffle peers (`mixer.protocol.Peer`, their messages passed in memory), the real
order checks, book and call auction (`bidstore.orders`, `bidstore.book`), the real bill
(`assets.bill.bill_of_interval`) and the DSO's own reconciliation (`dso.reconcile.reconcile`).
Ledger time is the simulated clock: every block is stamped with a time inside the interval the
step belongs to, nothing sleeps.

Each home runs the wallet autopilot's cycle (wallet/autopilot.py) one interval ahead:

1. while t-1 runs, its meter issues the cover for t (EPA and ECA covering t, FA) to fresh
   addresses of its owner;
2. if mixing, every kind of the cover is mixed: the homes (all hold the same cover) are shuffled
   with the run's seed and cut into pools of `mix_pool` (a lone last peer joins the pool before
   it), one CoinShuffle run each; each pool's transfer is committed;
3. the home's agent decides an order from its forecast (the mean M_t of its last bills, as the
   autopilot's); the wallet's preparation transfer gathers exactly the order's assets at a fresh
   `trade` address (wallet/market.py), the order is signed, checked against the ledger as the
   bid store checks it and booked; the interval's call auction clears, and each match becomes
   one transfer signed by both parties (`trade_terms`, `check_proposal`, `leftovers` for an
   order in several matches);
4. once t begins, every unspent EPA and ECA ending at t or earlier and every unspent FA go to
   fresh deposit addresses of the home's meter (`smartmeter.deposits.deposit_key`), one
   transfer per coin as the wallet deposits;
5. once t has ended, the meter closes and signs t's bill with M_t = the profile's net power
   times `interval_s` in whole joules (rounded half to even), and the DSO reconciles it.

Decisions where the brief left room (docs/architecture.md repeats them):

- **One cover for the community.** Every home withdraws the same cover, so every coin of a kind
  mixes with every other home's: EPA the largest surplus of any home in the run, ECA the largest
  deficit, each rounded up in the 1-2-5 series (one coin mixes as one denomination), FA what the
  ECA cover costs at the consumption tariff, rounded up likewise. A cover sized per home would
  tell the homes apart by size. Each meter is authorized with MAXEPA and MAXECA 1 W above
  the larger of the cover and its own peak.
- **Mixing off still trades.** The autopilot does not order with unmixed coins; with `mixing`
  off this mode trades them anyway, since that run is the privacy metric's baseline.
- **One round.** Each coin is mixed once per interval (the wallet's default is two).
- **No forecast.** The record's `forecasts` stays empty: the DSO controller forecasts from the
  issued covers and the book, which here are the same for every interval.
- **Deterministic.** Every key (DSO, sequencer, meters, owners, fresh addresses, deposit
  addresses) and every shuffle is drawn from the config's seed, so the same config gives the
  same ledger, transaction for transaction; only wall times differ. (The CoinShuffle peers'
  ephemeral Curve25519 keys are random, but they never reach the ledger.)
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from threading import Event
from typing import Any

import numpy as np

from assets import (
    Asset,
    Authorization,
    Bill,
    DepositFact,
    Eca,
    Epa,
    Fa,
    Issue,
    IssuedFact,
    Keypair,
    Outpoint,
    Output,
    Regulate,
    Transaction,
    Transfer,
    bill_id,
    bill_of_interval,
    bill_to_wire,
    encode_transaction,
    genesis_to_wire,
    sign_bill,
    sign_transfer,
    txid,
)
from bidstore.book import Book, leftovers, trade_terms
from bidstore.book import check_proposal as check_trade_proposal
from bidstore.orders import (
    RELAY,
    Challenges,
    Listing,
    Order,
    OrderSide,
    check_order,
    decode_order,
    encode_order,
    payment,
    sign_order,
)
from dso import reconcile as reconciling
from ledger.ledger import Ledger
from ledger.store import Store
from mixer.protocol import Done, Input, Kind, Message, Peer, Session
from simulation.agents import Market, OrderIntent, Policy, forecast_from_history, policy_for
from simulation.config import SimConfig, config_to_wire
from simulation.profiles import HomePlan
from simulation.record import HomeRecord, LedgerEntry, MixRound, RunRecord, Submission, Trade
from simulation.scenario import Scenario
from smartmeter.deposits import deposit_key
from wallet.autopilot import Cover, Strategy

SERIES = (1, 2, 5)
MIX_ROUNDS = 1
HISTORY = Strategy().history  # bills the forecast averages, as the autopilot's
# Seconds into the current interval at which each step's block is stamped, in cycle order.
DEPOSIT_AT, ISSUE_AT, MIX_AT, PREPARE_AT, TRADE_AT = 1, 2, 3, 4, 5
REGULATION_LEAD = 2  # the regulation's block is this many intervals before the first one
MAX_AUTHORIZE = 1024  # meters one regulation may authorize (assets.MAX_REGULATED_METERS)

Progress = Callable[[int], None]


class InProcessFailed(Exception):
    """The ledger refused a transaction the simulation built: a bug, never the agents' doing."""


def series_up(value: int) -> int:
    """The smallest value of the 1-2-5 series (1, 2, 5, 10, 20, ...) at least `value` (>= 1)."""
    if value < 1:
        raise ValueError(f"the 1-2-5 series starts at 1, not {value}")
    decade = 1
    while True:
        for step in SERIES:
            if step * decade >= value:
                return step * decade
        decade *= 10


def community_cover(plans: Sequence[HomePlan], market: Market) -> Cover:
    """The one cover every home withdraws each interval (see the module docstring): watts and
    micro-units of the 1-2-5 series, 0 for a kind no home needs."""
    surplus = max((float(np.max(-p.net_w, initial=0.0)) for p in plans), default=0.0)
    deficit = max((float(np.max(p.net_w, initial=0.0)) for p in plans), default=0.0)
    epa = series_up(math.ceil(surplus)) if surplus >= 1 else 0
    eca = series_up(math.ceil(deficit)) if deficit >= 1 else 0
    cost = payment(eca, market.interval_s, market.price_consumption)
    return Cover(epa_w=epa, eca_w=eca, fa=series_up(cost) if cost >= 1 else 0)


def run_epoch(config: SimConfig) -> tuple[int, int]:
    """(epoch, first interval): the genesis epoch is the UTC midnight at or before the run's
    start (the start itself if it is not an interval boundary counted from there)."""
    start = config.start.astimezone(UTC)
    epoch = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp())
    if (config.start_unix - epoch) % config.interval_s:
        epoch = config.start_unix
    return epoch, config.first_interval(epoch)


class Keys:
    """Every key of a run, drawn in order from one stream seeded by the run's seed."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng([seed, 0x6B657973])  # "keys"

    def fresh(self) -> Keypair:
        return Keypair(self._rng.bytes(32))


@dataclass
class Meter:
    """What a home's meter knows: its key, its deposit addresses and the ledger facts its
    bills count (pruned once no later bill can count them)."""

    meter_id: str
    key: Keypair
    nonce: int = 0
    deposits_made: int = 0
    deposit_addresses: set[bytes] = field(default_factory=set)
    issued: list[IssuedFact] = field(default_factory=list)
    deposited: list[DepositFact] = field(default_factory=list)


@dataclass
class Home:
    """A home: its plan, its meter, its wallet's keys and unspent coins, and its agent."""

    plan: HomePlan
    policy: Policy
    meter: Meter
    owner: Keypair
    rng: np.random.Generator
    measured_j: list[int]  # M_t of each run interval, whole joules
    keys: dict[bytes, Keypair] = field(default_factory=dict)
    coins: dict[Outpoint, Output] = field(default_factory=dict)
    cycle: dict[str, Outpoint] = field(default_factory=dict)  # kind -> the cover coin of t
    mixed_kinds: set[str] = field(default_factory=set)  # kinds of the cover mixed this cycle
    mixed: bool = False  # every kind of the cover mixed
    billed_j: list[int] = field(default_factory=list)  # M_t of the bills closed so far


@dataclass(frozen=True, slots=True)
class Created:
    """An output as the ledger created it: the block's height and the interval of its time."""

    output: Output
    height: int
    interval: int


class InProcessRun:
    """One in-process run of `config` over `plans`; `run()` returns its record."""

    def __init__(self, config: SimConfig, plans: Sequence[HomePlan]) -> None:
        if not plans:
            raise ValueError("a community has at least one home")
        if config.interval_s < 1:
            raise ValueError("an interval is at least 1 s")
        self.config = config
        self.plans = list(plans)
        self.market = Market(config.price_consumption, config.price_production, config.interval_s)
        self.cover = community_cover(self.plans, self.market)
        self.keys = Keys(config.seed)
        epoch, self.first = run_epoch(config)
        self.last = self.first + config.intervals - 1
        self.scenario = Scenario(
            dso=self.keys.fresh(),
            sequencer=self.keys.fresh(),
            name=config.name,
            interval_s=config.interval_s,
            epoch=epoch,
        )
        self.chain = self.scenario.chain
        # in memory: the run's ledger is scratch (the record keeps every transaction), and
        # a durable file's fsync per block would double the wall time
        self.store = Store("sqlite://")
        self.ledger = Ledger(self.store, self.scenario.genesis, self.scenario.sequencer)
        self.shuffles = random.Random(config.seed)  # pools, and the peers' permutations
        self.homes = [self._home(plan, n) for n, plan in enumerate(self.plans)]
        self.by_meter = {h.meter.meter_id: h for h in self.homes}
        if len(self.by_meter) != len(self.homes):
            raise ValueError("two homes share a meter id")
        self.owner_of: dict[bytes, Home] = {}  # address -> the home whose wallet holds its key
        self.meter_of: dict[bytes, Home] = {}  # deposit address -> the home of its meter
        for home in self.homes:
            self._adopt(home, home.owner)
        self.created: dict[Outpoint, Created] = {}
        self.unspent: set[Outpoint] = set()
        self.dso_issues: dict[str, list[IssuedFact]] = {h.meter.meter_id: [] for h in self.homes}
        self.claims: dict[Outpoint, list[tuple[str, int]]] = {}
        self.challenges = Challenges(self._now, random_bytes=lambda n: self.keys.fresh().seed[:n])
        self.book = Book()
        self.clock = self.scenario.time_in(self.first - REGULATION_LEAD)
        self.record = RunRecord(
            name=config.name,
            mode="in-process",
            seed=config.seed,
            genesis=genesis_to_wire(self.scenario.genesis),
            first_interval=self.first,
            last_interval=self.last,
            price_consumption=config.price_consumption,
            price_production=config.price_production,
            mix_pool=config.mix_pool if config.mixing else 0,
            tor=False,
            wall_s=0.0,
            homes=[HomeRecord.of_plan(h.plan, h.owner.public_key.hex()) for h in self.homes],
            config=config_to_wire(config),
        )

    def _home(self, plan: HomePlan, n: int) -> Home:
        net = np.asarray(plan.net_w, dtype=float)
        if len(net) < self.config.intervals:
            raise ValueError(
                f"home {plan.name} has a profile of {len(net)} intervals, the run "
                f"{self.config.intervals}"
            )
        measured = [int(j) for j in np.rint(net[: self.config.intervals] * self.config.interval_s)]
        return Home(
            plan=plan,
            policy=policy_for(plan.strategy),
            meter=Meter(plan.meter_id, self.keys.fresh()),
            owner=self.keys.fresh(),
            rng=np.random.default_rng([self.config.seed, n]),
            measured_j=measured,
        )

    def _adopt(self, home: Home, key: Keypair) -> bytes:
        home.keys[key.public_key] = key
        self.owner_of[key.public_key] = home
        return key.public_key

    def _fresh(self, home: Home) -> bytes:
        """A fresh address of `home`'s wallet."""
        return self._adopt(home, self.keys.fresh())

    def _now(self) -> float:
        return float(self.clock)

    # ------------------------------------------------------------ the run

    def run(self, progress: Progress | None = None, stop: Event | None = None) -> RunRecord:
        began = time.perf_counter()
        self._regulate()
        for now in range(self.first - 1, self.last + 2):
            if stop is not None and stop.is_set():  # the record so far, marked incomplete
                self.record.complete = False
                break
            if self.first <= now <= self.last:
                self._deposit(now)
            if self.first <= now - 1 <= self.last:
                self._bill(now - 1)
                if progress is not None:
                    progress(now - self.first)
            if self.first <= now + 1 <= self.last:
                self._open_cycle(now, now + 1)
        self.record.wall_s = time.perf_counter() - began
        return self.record

    def _at(self, interval: int, offset: int) -> int:
        """The block time `offset` seconds into `interval`, kept inside it."""
        return self.scenario.time_in(interval, min(offset, self.config.interval_s - 1))

    def _regulate(self) -> None:
        at = self.first - REGULATION_LEAD
        authorizations = [
            Authorization(
                h.meter.meter_id,
                h.meter.key.public_key,
                max(self.cover.epa_w, _peak(-h.plan.net_w)) + 1,
                max(self.cover.eca_w, _peak(h.plan.net_w)) + 1,
            )
            for h in self.homes
        ]
        regulations: list[Transaction] = []
        for n in range(0, len(authorizations), MAX_AUTHORIZE):
            first_batch = n == 0
            regulations.append(
                self.scenario.regulate(
                    at,
                    authorizations[n : n + MAX_AUTHORIZE],
                    price_consumption=self.config.price_consumption if first_batch else None,
                    price_production=self.config.price_production if first_batch else None,
                )
            )
        self._commit("regulate", regulations, self._at(at, 0))

    def _open_cycle(self, now: int, t: int) -> None:
        """Steps 1 to 3 of the cycle for `t`, during `now`."""
        self._issue(now, t)
        if self.config.mixing:
            self._mix(now)
        self._trade(now, t)

    # ------------------------------------------------------------ 1. withdraw

    def _issue(self, now: int, t: int) -> None:
        assets = self.cover.assets(t)
        if not assets:
            return
        issues: list[Transaction] = []
        for home in self.homes:
            home.cycle.clear()
            home.mixed_kinds.clear()
            home.mixed = False
            home.meter.nonce += 1
            outputs = [Output(a, self._fresh(home)) for a in assets]
            issues.append(
                self.scenario.issue(home.meter.meter_id, home.meter.key, home.meter.nonce, outputs)
            )
        ids = self._commit("issue", issues, self._at(now, ISSUE_AT))
        for home, tx_id in zip(self.homes, ids, strict=True):
            home.cycle = {a.kind: Outpoint(tx_id, n) for n, a in enumerate(assets)}

    # ------------------------------------------------------------ 2. mix

    def _mix(self, now: int) -> None:
        jobs: list[MixJob] = []
        pools: list[tuple[str, list[Home], list[bytes]]] = []
        for kind in sorted({k for h in self.homes for k in h.cycle}):
            holders = [h for h in self.homes if kind in h.cycle]
            self.shuffles.shuffle(holders)
            for number, pool in enumerate(_pools(holders, self.config.mix_pool)):
                outputs = [self._fresh(h) for h in pool]
                coins = [self.created[h.cycle[kind]].output for h in pool]
                jobs.append(
                    MixJob(
                        chain=self.chain,
                        pool=f"{now}/{kind}/{number}",
                        asset=coins[0].asset,
                        peers=tuple(
                            (h.cycle[kind], h.keys[c.address].seed, out)
                            for h, c, out in zip(pool, coins, outputs, strict=True)
                        ),
                        seed=self.shuffles.getrandbits(64),
                    )
                )
                pools.append((kind, pool, outputs))
        transfers: list[Transaction] = []
        mixed_pools: list[tuple[str, list[Home], list[bytes]]] = []
        for (kind, pool, outputs), (mixed, began, ended) in zip(
            pools, map(mix_pool, jobs), strict=True
        ):
            outcome = "done" if mixed is not None else "blame"
            self.record.mix_rounds.append(MixRound(len(pool), began, ended, outcome))
            if mixed is not None:
                transfers.append(mixed)
                mixed_pools.append((kind, pool, outputs))
        ids = self._commit("transfer", transfers, self._at(now, MIX_AT))
        for tx_id, tx, (kind, pool, outputs) in zip(ids, transfers, mixed_pools, strict=True):
            assert isinstance(tx, Transfer)
            where = {o.address: n for n, o in enumerate(tx.outputs)}
            for home, output in zip(pool, outputs, strict=True):
                home.cycle[kind] = Outpoint(tx_id, where[output])
                home.mixed_kinds.add(kind)
        for home in self.homes:
            home.mixed = bool(home.cycle) and home.mixed_kinds == set(home.cycle)

    # ------------------------------------------------------------ 3. trade

    def _trade(self, now: int, t: int) -> None:
        self.clock = self._at(now, PREPARE_AT)
        wanted: list[tuple[Home, OrderIntent]] = []
        for home in self.homes:
            if self.config.mixing and not home.mixed:
                continue  # the autopilot orders only with mixed coins
            forecast = forecast_from_history(home.billed_j[-HISTORY:], self.config.interval_s)
            intent = home.policy.decide(forecast, self.market, self.cover, home.rng)
            if intent is not None:
                wanted.append((home, intent))
        prepared = [self._prepare(home, intent, t) for home, intent in wanted]
        moves = [p[1] for p in prepared if p[1] is not None]
        ids = iter(self._commit("transfer", moves, self.clock))
        listings: list[tuple[Listing, Keypair]] = []
        for (home, intent), (owner, move, count) in zip(wanted, prepared, strict=True):
            if move is not None:
                tx_id = next(ids)
                assets = tuple(Outpoint(tx_id, n) for n in range(count))
            else:
                kind = "EPA" if intent.side is OrderSide.ASK else "ECA"
                assets = (home.cycle[kind],)
            listings.append((self._order(home, intent, t, owner, assets, now), owner))
        keys = {listing.order.owner: key for listing, key in listings}
        self._clear(now, t, keys)

    def _prepare(
        self, home: Home, intent: OrderIntent, t: int
    ) -> tuple[Keypair, Transaction | None, int]:
        """The order's owner key and the wallet's transfer gathering exactly the order's
        assets at it (None when the cover coin already is them), with how many of its first
        outputs the order spends (wallet/market.py `prepare`)."""
        s = self.config.interval_s
        if intent.side is OrderSide.ASK:
            coin = home.cycle["EPA"]
            held = self.created[coin].output
            assert isinstance(held.asset, Epa)
            if held.asset.power == intent.power_w:
                return home.keys[held.address], None, 1
            trade = self.keys.fresh()
            self._adopt(home, trade)
            outputs = [
                Output(Epa(intent.power_w, t, t), trade.public_key),
                Output(Epa(held.asset.power - intent.power_w, t, t), self._fresh(home)),
            ]
            return trade, self._signed(home, [coin], outputs), 1
        due = max(1, payment(intent.power_w, s, intent.price))
        eca, fa = home.cycle["ECA"], home.cycle["FA"]
        eca_asset = self.created[eca].output.asset
        fa_asset = self.created[fa].output.asset
        assert isinstance(eca_asset, Eca) and isinstance(fa_asset, Fa)
        trade = self.keys.fresh()
        self._adopt(home, trade)
        outputs = [
            Output(Eca(intent.power_w, t, t), trade.public_key),
            Output(Fa(due), trade.public_key),
        ]
        rest: list[Asset] = []
        if eca_asset.power > intent.power_w:
            rest.append(Eca(eca_asset.power - intent.power_w, t, t))
        if fa_asset.amount > due:
            rest.append(Fa(fa_asset.amount - due))
        if rest:
            change = self._fresh(home)
            outputs += [Output(a, change) for a in rest]
        return trade, self._signed(home, [eca, fa], outputs), 2

    def _signed(
        self, home: Home, inputs: Sequence[Outpoint], outputs: Sequence[Output]
    ) -> Transfer:
        owners = {self.created[i].output.address for i in inputs}
        keys = sorted((home.keys[a] for a in owners), key=lambda k: k.public_key)
        return sign_transfer(Transfer(self.chain, tuple(inputs), tuple(outputs)), keys)

    def _order(
        self,
        home: Home,
        intent: OrderIntent,
        t: int,
        owner: Keypair,
        assets: tuple[Outpoint, ...],
        now: int,
    ) -> Listing:
        """Sign the order and put it through the bid store's checks into the book."""
        order = Order(
            side=intent.side,
            interval=t,
            price=intent.price,
            assets=assets,
            contact=RELAY,
            receive=self._fresh(home),
            owner=owner.public_key,
            challenge=self.challenges.issue(),
        )
        received = decode_order(encode_order(sign_order(order, owner)))
        listing = check_order(
            received,
            self._lookup,
            interval_s=self.config.interval_s,
            now_interval=now,
            challenge_ok=self.challenges.redeem,
        )
        self.book.add(listing)
        self.record.orders += 1
        return listing

    def _lookup(self, outpoint: Outpoint) -> tuple[Output, bool] | None:
        found = self.created.get(outpoint)
        return None if found is None else (found.output, outpoint not in self.unspent)

    def _clear(self, now: int, t: int, keys: dict[bytes, Keypair]) -> None:
        """Clear `t`'s call auction; every match one transfer signed by both parties, an
        order in several matches settling them one after another within the block."""
        clearing = self.book.call_auction(t)
        current: dict[bytes, Listing] = {}
        trades: list[Transaction] = []
        made: list[tuple[int, int]] = []
        for match in clearing.matches:
            assert match.ask_id is not None and match.bid_id is not None
            ask = current.get(match.ask_id) or self.book.get(match.ask_id)
            bid = current.get(match.bid_id) or self.book.get(match.bid_id)
            assert ask is not None and bid is not None
            terms = trade_terms(match, ask, bid, self.config.interval_s)
            unsigned = terms.transfer(self.chain)
            check_trade_proposal(unsigned, terms, ask, bid)
            signers = sorted(
                (keys[ask.order.owner], keys[bid.order.owner]), key=lambda k: k.public_key
            )
            signed = sign_transfer(unsigned, signers)
            left_ask, left_bid = leftovers(terms, ask, bid, signed, txid(signed))
            for old, left in ((ask, left_ask), (bid, left_bid)):
                if left is not None:
                    current[old.order_id] = left
            trades.append(signed)
            made.append((terms.power_w, terms.price))
        settled = self._commit("transfer", trades, self._at(now, TRADE_AT), strict=False)
        for (power, price), tx_id in zip(made, settled, strict=True):
            self.record.trades.append(Trade(t, power, price, tx_id is not None))
        self.book.drop_passed(t)

    # ------------------------------------------------------------ 4. deposit

    def _deposit(self, t: int) -> None:
        """Every unspent EPA and ECA ending at `t` or earlier and every unspent FA to a fresh
        deposit address of the home's meter, one transfer per coin."""
        deposits: list[Transaction] = []
        for home in self.homes:
            for outpoint, output in sorted(home.coins.items(), key=_outpoint_order):
                asset = output.asset
                if not isinstance(asset, Fa) and asset.end > t:
                    continue
                meter = home.meter
                address = deposit_key(meter.key.seed, meter.deposits_made).public_key
                meter.deposits_made += 1
                meter.deposit_addresses.add(address)
                self.meter_of[address] = home
                deposits.append(self._signed(home, [outpoint], [Output(asset, address)]))
        self._commit("transfer", deposits, self._at(t, DEPOSIT_AT))

    # ------------------------------------------------------------ 5. bill

    def _bill(self, t: int) -> None:
        """Close, sign and reconcile every meter's bill of `t`."""
        height = 0 if self.ledger.head is None else self.ledger.head.header.height
        s = self.config.interval_s
        for home in self.homes:
            meter = home.meter
            meter.issued = [f for f in meter.issued if _issue_may_count(f, t)]
            meter.deposited = [f for f in meter.deposited if _deposit_may_count(f, t)]
            measured = home.measured_j[t - self.first]
            bill = sign_bill(
                bill_of_interval(
                    chain=self.chain,
                    meter=meter.meter_id,
                    interval=t,
                    interval_s=s,
                    closed_height=height,
                    measured_j=measured,
                    issues=meter.issued,
                    deposits=meter.deposited,
                    price_consumption=self.config.price_consumption,
                    price_production=self.config.price_production,
                ),
                meter.key,
            )
            home.billed_j.append(measured)
            self.record.bills.append(bill_to_wire(bill))
            self.record.reconciled[bill_id(bill).hex()] = self._reconcile(bill)

    def _reconcile(self, bill: Bill) -> str:
        """The DSO's status of `bill`: its own facts, read from the ledger's transactions."""
        t = bill.interval
        issues = self.dso_issues[bill.meter] = [
            f for f in self.dso_issues[bill.meter] if _issue_may_count(f, t)
        ]
        deposits: dict[Outpoint, DepositFact | None] = {}
        for outpoint in bill.deposits:
            found = self.created.get(outpoint)
            deposits[outpoint] = (
                None
                if found is None
                else DepositFact(outpoint, found.output.asset, found.height, found.interval)
            )
        claimed = {o: list(self.claims.get(o, ())) for o in bill.deposits}
        found_wrong = reconciling.reconcile(
            bill,
            interval_s=self.config.interval_s,
            issues=issues,
            deposits=deposits,
            claimed_elsewhere=claimed,
            price_consumption=self.config.price_consumption,
            price_production=self.config.price_production,
        )
        for outpoint in bill.deposits:
            self.claims.setdefault(outpoint, []).append((bill.meter, t))
        return "flagged" if found_wrong else "reconciled"

    # ------------------------------------------------------------ the ledger

    def _commit(
        self, kind: str, txs: Sequence[Transaction], at: int, *, strict: bool = True
    ) -> list[bytes]:
        """Commit `txs` as one block at time `at` and take what they created and spent into
        the wallets, the meters and the DSO's index; their ids (None for a refused one when not
        `strict`; `strict` makes a refusal InProcessFailed)."""
        if not txs:
            return []
        self.clock = at
        raws = [encode_transaction(tx) for tx in txs]
        sent = time.time()
        result = self.ledger.append_block(raws, at)
        answered = time.time()
        head = result.head
        ids: list[Any] = []
        interval = self.scenario.genesis.interval_at(at)
        for tx, raw, outcome in zip(txs, raws, result.outcomes, strict=True):
            code = "committed" if outcome.accepted else str(outcome.code)
            self.record.submissions.append(Submission(kind, sent, answered, code))
            if not outcome.accepted:
                if strict:
                    raise InProcessFailed(
                        f"the ledger refused a {kind} the simulation built: {outcome.code}: "
                        f"{outcome.message}"
                    )
                ids.append(None)
                continue
            assert head is not None and outcome.txid is not None
            self.record.ledger.append(LedgerEntry(head.header.height, at, json.loads(raw)))
            self._apply(tx, outcome.txid, head.header.height, interval)
            ids.append(outcome.txid)
        return ids

    def _apply(self, tx: Transaction, tx_id: bytes, height: int, interval: int) -> None:
        if isinstance(tx, Regulate):
            return
        if isinstance(tx, Transfer):
            for spent in tx.inputs:
                self.unspent.discard(spent)
                holder = self.owner_of.get(self.created[spent].output.address)
                if holder is not None:
                    holder.coins.pop(spent, None)
        else:
            assert isinstance(tx, Issue)
            self.dso_issues[tx.meter].append(IssuedFact(tx_id, height, interval, tx.outputs))
            self.by_meter[tx.meter].meter.issued.append(
                IssuedFact(tx_id, height, interval, tx.outputs)
            )
        for n, output in enumerate(tx.outputs):
            outpoint = Outpoint(tx_id, n)
            self.created[outpoint] = Created(output, height, interval)
            self.unspent.add(outpoint)
            holder = self.owner_of.get(output.address)
            if holder is not None:
                holder.coins[outpoint] = output
            meter_home = self.meter_of.get(output.address) if isinstance(tx, Transfer) else None
            if meter_home is not None:
                meter_home.meter.deposited.append(
                    DepositFact(outpoint, output.asset, height, interval)
                )

    def close(self) -> None:
        self.store.close()


@dataclass(frozen=True, slots=True)
class MixJob:
    """One CoinShuffle run to make: the pool's asset, each peer's input, the seed of its key
    and its fresh output address (in the pool's order), and the seed of the peers' shuffles."""

    chain: bytes
    pool: str
    asset: Asset
    peers: tuple[tuple[Outpoint, bytes, bytes], ...]
    seed: int


def mix_pool(job: MixJob) -> tuple[Transfer | None, float, float]:
    """Run `job`'s CoinShuffle with real `mixer.protocol` peers, every message relayed in memory
    as the coordinator relays it (a shuffle to the next peer only, the rest to all; nothing
    forges on the way, so each is taken as checked); the transfer every peer signed (None if
    the run ended in blame) and when it began and ended (wall seconds)."""
    began = time.time()
    keys = {Keypair(seed).public_key: (Keypair(seed), out) for _, seed, out in job.peers}
    inputs = [Input(outpoint, Keypair(seed).public_key) for outpoint, seed, _ in job.peers]
    session = Session.of(job.chain, job.pool, 0, job.asset, inputs)
    peers = [
        Peer(session, *keys[p.owner], rng=random.Random(job.seed + n))
        for n, p in enumerate(session.peers)
    ]
    queue: deque[Message] = deque(m for p in peers for m in p.start())
    while queue:
        message = queue.popleft()
        to = [peers[message.sender + 1]] if message.kind is Kind.SHUFFLE else peers
        for peer in to:
            if peer.index != message.sender:
                queue.extend(peer.receive(message))
    outcome = peers[0].outcome
    whole = isinstance(outcome, Done) and all(p.outcome == outcome for p in peers)
    return (outcome.transfer if isinstance(outcome, Done) and whole else None), began, time.time()


def _pools(holders: Sequence[Home], size: int) -> list[list[Home]]:
    """`holders` cut into pools of `size` (at least 2); a lone last peer joins the pool before
    it; nothing to mix with fewer than 2."""
    size = max(2, size)
    pools = [list(holders[n : n + size]) for n in range(0, len(holders), size)]
    if len(pools) > 1 and len(pools[-1]) == 1:
        pools[-2].extend(pools.pop())
    return [p for p in pools if len(p) >= 2]


def _peak(net_w: Any) -> int:
    """The largest value of a power series, whole watts rounded up, 0 if none is positive."""
    return max(0, math.ceil(float(np.max(net_w, initial=0.0))))


def _issue_may_count(fact: IssuedFact, t: int) -> bool:
    """Whether an issue can still count in the bill of `t` or a later one."""
    return fact.interval >= t or any(
        not isinstance(o.asset, Fa) and o.asset.end >= t for o in fact.outputs
    )


def _deposit_may_count(fact: DepositFact, t: int) -> bool:
    asset = fact.asset
    if isinstance(asset, Fa):
        return fact.interval >= t
    return isinstance(asset, Epa) and asset.end >= t


def _outpoint_order(item: tuple[Outpoint, Output]) -> tuple[bytes, int]:
    return (item[0].txid, item[0].index)


def run_in_process(
    config: SimConfig,
    plans: list[HomePlan],
    progress: Progress | None = None,
    stop: Event | None = None,
) -> RunRecord:
    """Run `config`'s community of `plans` in this process (see the module docstring);
    `progress(done)` hears how many simulated intervals have been billed; once `stop` is set
    the run ends between intervals, its record marked incomplete. The ledger lives in memory;
    the record holds everything it committed."""
    run = InProcessRun(config, plans)
    try:
        return run.run(progress, stop)
    finally:
        run.close()
