"""Metrics of a community run, computed from what the nodes recorded (issue 16).

Everything here is read from a `RunRecord`: the ledger's transactions in order, the DSO's bills
and their reconciliation, the submissions, the mixing rounds, the bid store's trades, the DSO's
forecasts and the devices' profiles; never from an agent's claim about itself. Pure: no I/O.

Units as DESIGN.md section 3: watts, joules, micro-units, prices in micro-units per kWh; energy
totals are reported in kWh, fractions in [0, 1], and null (None) stands where there is nothing
to measure (a ratio over nothing, a percentile of no samples, a home without bills).

Decisions where the brief was open (kept in one place so the report can cite them):

- Energy. Per interval, community production = sum of PV, community consumption = sum of
  load + battery (charging consumes, discharging is negative consumption), self-consumed =
  max(0, min(production, consumption)). Grid import and export are summed over each home's own
  net (load - pv + battery): import the positive nets, export the negative ones, both reported
  as positive kWh. Profiles shorter than the run count for the intervals they have.
- Trades on the ledger: a transfer whose inputs hold both EPA and FA and that has two distinct
  signers or more. Its traded outputs are its EPA outputs; they share one anonymity set, so a
  trade is linkable exactly when its traded outputs' set has one meter.
- Prices: an interval's clearing price and the market's mean price are power-weighted means
  over the bid store's settled trades (a call auction gives them all one price anyway).
- Deposits: the distinct outpoints the bills list (an EPA deposit is listed by every bill of an
  interval it covers, counted once here). A smart meter never spends from its deposit
  addresses (smartmeter/ only derives them and watches for payments), so every deposited
  output must exist and be unspent at the end of the run.
- Community energy identity, per interval t: sum_i M_it = sum_i E_it + interval_s * (D_t - W_t)
  where D_t and W_t are the EPA power covering t of the deposits and issues the bills of t list,
  read from the ledger, not from the bills: it ties the bills' figures to the ledger.
- Latency and mixing times use the nearest-rank percentile; mixing times are of rounds that
  ended `done`. Rejected submissions are those answered with any code but `committed`.
  `tps_committed` counts the ledger's transactions, `tps_submitted` the submissions.
- The forecast error counts an interval when the DSO forecast it and every home has a bill
  for it (a partial sum would not be the community's net).
- Sharing agreements (`sharing`): the same homes' profiles shared by each agreement of
  `community`, beside the run's trading; simulation/sharing.py states its model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from assets import (
    Asset,
    AssetKind,
    Bill,
    BillRejected,
    Epa,
    Fa,
    Issue,
    Outpoint,
    Regulate,
    Rejected,
    Transfer,
    bill_amount,
    bill_id,
    canonical_json,
    decode_bill,
    encode_parsed,
    epa_power,
    interval_energy_j,
    tx_from_wire,
)
from simulation.record import HomeRecord, LedgerEntry, MixRound, RunRecord, Submission, Trade
from simulation.sharing import PeerToPeer, SharingFigures, sharing_figures

JOULES_PER_KWH = 3_600_000
MICRO_UNITS = 1_000_000  # per unit of the chain's currency
RECONCILED = "reconciled"
COMMITTED = "committed"
MIX_DONE = "done"


# ---------------------------------------------------------------- the figures


@dataclass(frozen=True, slots=True)
class RunFigures:
    name: str
    mode: str
    seed: int
    currency: str  # the genesis's: the report formats money in it
    homes: int
    intervals: int
    interval_s: int
    first_interval: int
    last_interval: int
    wall_s: float
    seconds_per_interval: float | None
    complete: bool
    mixing: bool
    mix_pool: int
    tor: bool


@dataclass(frozen=True, slots=True)
class EnergyFigures:
    """Community energy in kWh over the run; the two rates are fractions in [0, 1]."""

    consumption_kwh: float
    production_kwh: float
    self_consumed_kwh: float
    self_consumption: float | None
    self_sufficiency: float | None
    traded_kwh: float
    grid_import_kwh: float
    grid_export_kwh: float


@dataclass(frozen=True, slots=True)
class IntervalFigures:
    """One interval: community mean powers in W, the mean clearing price in micro-units per kWh,
    the DSO's forecast in W and the transactions committed in blocks timed in it."""

    interval: int
    start: str
    load_w: float
    pv_w: float
    net_w: float
    traded_w: int
    clearing_price: float | None
    forecast_w: int | None
    committed_tx: int


@dataclass(frozen=True, slots=True)
class HomeFigures:
    """One home: money in micro-units (negative: a credit), energy in kWh."""

    name: str
    meter_id: str
    strategy: str
    bill: int | None
    baseline: int | None
    saving: int | None
    bills: int
    reconciled: int
    measured_kwh: float | None
    pv_kwh: float


@dataclass(frozen=True, slots=True)
class PrivacyFigures:
    trades: int  # added to the brief's shape: the denominator of linkable_trade_fraction
    traded_outputs: int
    linkable_trades: int
    linkable_trade_fraction: float | None
    deposits: int
    linkable_deposits: int
    linkable_deposit_fraction: float | None
    anonymity_sets: tuple[int, ...]  # meters in the set of each traded output, ledger order
    min_anonymity: int | None
    median_anonymity: float | None


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds from submitting a transaction to the ledger's answer that it committed."""

    p50: float | None
    p95: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class LedgerFigures:
    transactions: int
    blocks: int
    submitted: int
    committed: int
    rejected: int
    tps_submitted: float | None
    tps_committed: float | None
    latency_ms: Latency


@dataclass(frozen=True, slots=True)
class MixSeconds:
    p50: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class MixingFigures:
    rounds: int
    done: int
    failed: int
    seconds: MixSeconds


@dataclass(frozen=True, slots=True)
class MarketFigures:
    """The bid store's book: its orders and trades, the settled energy in kWh and the mean
    price in micro-units per kWh."""

    orders: int
    trades: int
    settled: int
    traded_kwh: float
    mean_price: float | None


@dataclass(frozen=True, slots=True)
class ForecastFigures:
    intervals: int
    mae_w: float | None


@dataclass(frozen=True, slots=True)
class ConservationFigures:
    """FA in micro-units as the ledger holds it; `problems` one sentence per violation."""

    fa_issued: int
    fa_unspent: int
    fa_deposited: int
    fa_held: int
    energy_identity_ok: bool
    ok: bool
    problems: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Metrics:
    """Every figure of a run; `to_wire` gives the metrics.json object."""

    run: RunFigures
    energy: EnergyFigures
    per_interval: tuple[IntervalFigures, ...]
    homes: tuple[HomeFigures, ...]
    privacy: PrivacyFigures
    ledger: LedgerFigures
    mixing: MixingFigures
    market: MarketFigures
    forecast: ForecastFigures
    conservation: ConservationFigures
    sharing: SharingFigures  # p2p trading against sharing agreements (simulation.sharing)

    def to_wire(self) -> dict[str, Any]:
        """The plain JSON object of metrics.json (lists for tuples, null for None)."""
        wire = _lists(dataclasses.asdict(self))
        assert isinstance(wire, dict)
        return wire


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


# ---------------------------------------------------------------- the ledger, read once


@dataclass(frozen=True, slots=True)
class LedgerTrace:
    """What an outside reader learns from the whole ledger in one forward pass.

    Anonymity sets are bitsets (Python ints): bit n stands for `meters[n]`. Outputs of one
    transfer and kind share one int, so memory grows with outputs, not with outputs x meters.
    """

    meters: tuple[str, ...]  # every meter that issued, in order of its first issue
    assets: Mapping[OutpointKey, Asset]  # every output on the ledger
    sets: Mapping[OutpointKey, int]  # each output's anonymity set as a bitset
    spent: frozenset[OutpointKey]
    unspent: tuple[Asset, ...]  # the assets of the outputs no transfer spent, at the end
    issues: Mapping[bytes, Issue]  # issue transactions by txid
    trades: tuple[tuple[Outpoint, ...], ...]  # each trade's traded (EPA) outputs
    faults: tuple[str, ...]  # the ledger breaking its own rules, one sentence each

    def asset(self, outpoint: Outpoint) -> Asset | None:
        """The asset of `outpoint`, None if the ledger has no such output."""
        return self.assets.get(key_of(outpoint))

    def is_spent(self, outpoint: Outpoint) -> bool:
        return key_of(outpoint) in self.spent

    def traded_epa(self) -> list[Epa]:
        """The EPA of every traded output, in ledger order."""
        return [a for trade in self.trades for op in trade if isinstance(a := self.asset(op), Epa)]

    def anonymity_set(self, outpoint: Outpoint) -> frozenset[str]:
        """The meters whose issued outputs can reach `outpoint` (empty if it is unknown)."""
        return meters_of(self.sets.get(key_of(outpoint), 0), self.meters)

    def anonymity_size(self, outpoint: Outpoint) -> int:
        """How many meters are in the anonymity set of `outpoint`."""
        return self.sets.get(key_of(outpoint), 0).bit_count()


OutpointKey = tuple[bytes, int]  # (txid, index): hashed in C, five times faster than Outpoint


def key_of(outpoint: Outpoint) -> OutpointKey:
    return (outpoint.txid, outpoint.index)


def meters_of(bits: int, meters: Sequence[str]) -> frozenset[str]:
    """The meter names a bitset of anonymity stands for (bit n is `meters[n]`)."""
    return frozenset(name for n, name in enumerate(meters) if bits >> n & 1)


def sets_by_kind(inputs: Iterable[tuple[AssetKind, int]]) -> dict[AssetKind, int]:
    """DESIGN.md section 12: the anonymity set a transfer gives its outputs of each kind.

    `inputs` are (kind, anonymity bitset) of the transfer's inputs. Any input may be the source
    of any output of its kind, so each kind's outputs get the union of that kind's input sets;
    sets never flow from one kind to another.
    """
    union: dict[AssetKind, int] = defaultdict(int)
    for kind, bits in inputs:
        union[kind] |= bits
    return dict(union)


def is_trade(input_assets: Iterable[Asset], signers: int) -> bool:
    """A transfer is a trade when its inputs hold both EPA and FA and it has at least two
    distinct signers: the seller's EPA goes to the buyer, the buyer's FA (+ ECA) to the seller."""
    kinds = {asset.kind for asset in input_assets}
    return AssetKind.EPA in kinds and AssetKind.FA in kinds and signers >= 2


def trace_ledger(entries: Iterable[LedgerEntry]) -> LedgerTrace:
    """Read the ledger in order once: every output, what was spent, the anonymity sets, the
    trades, and the faults (entries that are not transactions, unknown or spent inputs)."""
    meter_bit: dict[str, int] = {}
    assets: dict[OutpointKey, Asset] = {}
    sets: dict[OutpointKey, int] = {}
    spent: set[OutpointKey] = set()
    issues: dict[bytes, Issue] = {}
    trades: list[tuple[Outpoint, ...]] = []
    faults: list[str] = []
    for entry in entries:
        try:
            tx = tx_from_wire(entry.tx)
        except Rejected as rejected:
            faults.append(
                f"An entry in block {entry.height} is not a transaction: {rejected.message}."
            )
            continue
        if isinstance(tx, Regulate):
            continue
        tx_id = wire_txid(entry.tx)
        if (tx_id, 0) in assets:
            faults.append(f"Transaction {tx_id.hex()} is on the ledger twice.")
            continue
        if isinstance(tx, Issue):
            issues[tx_id] = tx
            bit = 1 << meter_bit.setdefault(tx.meter, len(meter_bit))
            for n, output in enumerate(tx.outputs):
                assets[tx_id, n] = output.asset
                sets[tx_id, n] = bit
            continue
        inputs = _spend(tx, tx_id, assets, spent, faults)
        given = sets_by_kind((assets[key].kind, sets[key]) for key in inputs)
        for n, output in enumerate(tx.outputs):
            assets[tx_id, n] = output.asset
            sets[tx_id, n] = given.get(output.asset.kind, 0)
        signers = len({s.public_key for s in tx.signatures})
        if is_trade((assets[key] for key in inputs), signers):
            trades.append(
                tuple(
                    Outpoint(tx_id, n)
                    for n, output in enumerate(tx.outputs)
                    if isinstance(output.asset, Epa)
                )
            )
    return LedgerTrace(
        meters=tuple(meter_bit),
        assets=assets,
        sets=sets,
        spent=frozenset(spent),
        unspent=tuple(asset for key, asset in assets.items() if key not in spent),
        issues=issues,
        trades=tuple(trades),
        faults=tuple(faults),
    )


def wire_txid(wire: Mapping[str, Any]) -> bytes:
    """The txid of a transaction's wire object that `tx_from_wire` accepted (so it holds no
    floats): SHA-256 of its canonical JSON without the signature field, as `assets.txid`
    computes it, without encoding the decoded transaction again (a third of the read)."""
    field = "signatures" if wire["type"] == "transfer" else "signature"
    return hashlib.sha256(encode_parsed({k: v for k, v in wire.items() if k != field})).digest()


def _spend(
    tx: Transfer,
    tx_id: bytes,
    assets: Mapping[OutpointKey, Asset],
    spent: set[OutpointKey],
    faults: list[str],
) -> list[OutpointKey]:
    """Mark the transfer's inputs spent; the known ones, noting unknown and double spends."""
    known = []
    for outpoint in tx.inputs:
        key = key_of(outpoint)
        where = f"output {outpoint.txid.hex()}:{outpoint.index}"
        if key not in assets:
            faults.append(f"Transfer {tx_id.hex()} spends {where}, which is not on the ledger.")
            continue
        if key in spent:
            faults.append(f"Transfer {tx_id.hex()} spends {where} a second time.")
        spent.add(key)
        known.append(key)
    return known


# ---------------------------------------------------------------- energy rules


def energy_kwh(watts: float, interval_s: int) -> float:
    """kWh of a sum of mean powers in W, each held for one interval of `interval_s` seconds."""
    return watts * interval_s / JOULES_PER_KWH


def self_consumed_w(production_w: float, consumption_w: float) -> float:
    """W of the community's production consumed inside it in an interval: the smaller of the
    two, never below 0 (batteries discharging more than the homes load consume nothing)."""
    return max(0.0, min(production_w, consumption_w))


def ratio(part: float, whole: float) -> float | None:
    """part / whole, or None when whole is 0 (nothing to measure)."""
    return part / whole if whole else None


def traded_energy_j(asset: Epa, interval_s: int) -> int:
    """Joules a traded EPA delivers: its power in W for each of its intervals, inclusive."""
    return asset.power * interval_s * (asset.end - asset.start + 1)


def power_steps(assets: Iterable[Asset], kind: AssetKind) -> Counter[int]:
    """Breakpoints of the power in W of the `kind` assets per interval: +power at start,
    -power after end (ledger/rules.py's rule 3, no loop over intervals)."""
    steps: Counter[int] = Counter()
    for asset in assets:
        if not isinstance(asset, Fa) and asset.kind == kind:
            steps[asset.start] += asset.power
            steps[asset.end + 1] -= asset.power
    return steps


def power_by_interval(steps: Counter[int], intervals: range) -> list[int]:
    """The power in W the breakpoints `steps` give each interval of `intervals`."""
    level = sum(p for k, p in steps.items() if k <= intervals.start)
    powers = []
    for k in intervals:
        if k != intervals.start:
            level += steps.get(k, 0)
        powers.append(level)
    return powers


def first_power_difference(a: Counter[int], b: Counter[int]) -> int | None:
    """The first interval where two breakpoint series give different power, or None."""
    diff = Counter(a)
    diff.subtract(b)
    return min((k for k, p in diff.items() if p), default=None)


# ---------------------------------------------------------------- money rules


def baseline_amount(bill: Bill) -> int:
    """Micro-units the bill's measured energy would cost with no trading and no issuing: M_t at
    the consumption price if M_t >= 0 else at the production price (prices of the bill, per
    kWh), rounded once, half to even, like a bill line."""
    return bill_amount(0, 0, bill.measured_j, bill.price_consumption, bill.price_production)


def weighted_price(trades: Iterable[Trade]) -> float | None:
    """Power-weighted mean price in micro-units per kWh of `trades`, None if there are none."""
    watts = 0
    money = 0
    for trade in trades:
        watts += trade.power_w
        money += trade.power_w * trade.price
    return float(Fraction(money, watts)) if watts else None


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-quantile (0 < q <= 1) of `values`, None if there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# ---------------------------------------------------------------- bills


def decode_bills(wires: Iterable[Mapping[str, Any]]) -> tuple[list[Bill], list[str]]:
    """The bills in the DSO's wire objects, and one sentence for each that does not decode."""
    bills = []
    problems = []
    for n, wire in enumerate(wires):
        try:
            bills.append(decode_bill(canonical_json(wire)))
        except (BillRejected, Rejected, TypeError, ValueError) as exc:
            problems.append(f"Bill number {n} of the DSO does not decode: {exc}.")
    return bills, problems


def bill_identity_holds(bill: Bill, interval_s: int) -> bool:
    """E_t = M_t - D_EPA * interval_s + W_EPA * interval_s with the bill's own figures (J, W)."""
    return bill.energy_j == interval_energy_j(
        bill.measured_j, bill.issued_epa_w, bill.deposited_epa_w, interval_s
    )


def bill_amount_holds(bill: Bill) -> bool:
    """B_t = FA issued - FA deposited + the energy charge of E_t, with the bill's own figures."""
    return bill.amount == bill_amount(
        bill.fa_issued,
        bill.fa_deposited,
        bill.energy_j,
        bill.price_consumption,
        bill.price_production,
    )


def community_identity_gap(bills: Iterable[Bill], trace: LedgerTrace, interval_s: int) -> int:
    """Joules by which sum M - sum E of one interval's bills misses interval_s * (D - W), where
    D and W are the EPA power (W) covering the interval of the deposits and issues the bills
    list, as the ledger holds them; 0 when the community identity holds."""
    measured = energy = deposited = issued = 0
    for bill in bills:
        measured += bill.measured_j
        energy += bill.energy_j
        deposited += sum(epa_power(asset, bill.interval) for asset in _deposited(bill, trace))
        issued += sum(
            epa_power(o.asset, bill.interval)
            for tx_id in bill.issues
            if tx_id in trace.issues
            for o in trace.issues[tx_id].outputs
        )
    return measured - energy - interval_s * (deposited - issued)


def _deposited(bill: Bill, trace: LedgerTrace) -> list[Asset]:
    """The assets of the bill's deposits the ledger has."""
    return [a for d in bill.deposits if (a := trace.asset(d)) is not None]


def deposited_outpoints(bills: Iterable[Bill]) -> list[Outpoint]:
    """Every outpoint some bill lists as deposited, once, in order of first listing."""
    return list(dict.fromkeys(d for bill in bills for d in bill.deposits))


def bill_problems(bills: Sequence[Bill], trace: LedgerTrace, interval_s: int) -> list[str]:
    """One sentence per bill breaking the billing formula or naming what the ledger lacks."""
    problems = []
    seen: set[tuple[str, int]] = set()
    for bill in bills:
        who = f"The bill of meter {bill.meter} for interval {bill.interval}"
        if (bill.meter, bill.interval) in seen:
            problems.append(f"{who} is there twice.")
        seen.add((bill.meter, bill.interval))
        if not bill_identity_holds(bill, interval_s):
            problems.append(f"{who} breaks E_t = M_t - D_EPA*interval_s + W_EPA*interval_s.")
        if not bill_amount_holds(bill):
            problems.append(f"{who} has an amount its own figures do not give.")
        for tx_id in bill.issues:
            issue = trace.issues.get(tx_id)
            if issue is None or issue.meter != bill.meter:
                problems.append(
                    f"{who} lists {tx_id.hex()}, no issue of its meter's on the ledger."
                )
    return problems


def deposit_problems(deposits: Iterable[Outpoint], trace: LedgerTrace) -> list[str]:
    """Every deposited outpoint must exist and, as a meter never spends them, be unspent."""
    problems = []
    for d in deposits:
        where = f"Deposited output {d.txid.hex()}:{d.index}"
        if trace.asset(d) is None:
            problems.append(f"{where} does not exist on the ledger.")
        elif trace.is_spent(d):
            problems.append(f"{where} was spent, though a meter never spends its deposits.")
    return problems


def community_problems(bills: Sequence[Bill], trace: LedgerTrace, interval_s: int) -> list[str]:
    """One sentence per interval whose bills break the community energy identity."""
    by_interval: dict[int, list[Bill]] = defaultdict(list)
    for bill in bills:
        by_interval[bill.interval].append(bill)
    problems = []
    for interval in sorted(by_interval):
        gap = community_identity_gap(by_interval[interval], trace, interval_s)
        if gap:
            problems.append(
                f"Interval {interval}: the bills' sum of M_t misses sum E_t + interval_s * "
                f"(D_EPA - W_EPA) on the ledger by {gap} J."
            )
    return problems


def asset_problems(trace: LedgerTrace) -> list[str]:
    """Issued assets must all still be on the ledger: FA in sum, EPA and ECA per interval."""
    unspent = trace.unspent
    issued = [o.asset for issue in trace.issues.values() for o in issue.outputs]
    problems = []
    fa_issued, fa_unspent = _fa_sum(issued), _fa_sum(unspent)
    if fa_issued != fa_unspent:
        problems.append(f"FA issued ({fa_issued}) differs from FA unspent ({fa_unspent}).")
    for kind in (AssetKind.EPA, AssetKind.ECA):
        first = first_power_difference(power_steps(issued, kind), power_steps(unspent, kind))
        if first is not None:
            problems.append(f"{kind} issued and unspent differ from interval {first} on.")
    return problems


def _fa_sum(assets: Iterable[Asset]) -> int:
    return sum(a.amount for a in assets if isinstance(a, Fa))


# ---------------------------------------------------------------- the sections


def compute_metrics(record: RunRecord) -> Metrics:
    """Every figure of `record`, from the ledger, the bills and the profiles it holds."""
    trace = trace_ledger(record.ledger)
    bills, undecoded = decode_bills(record.bills)
    per_interval = interval_figures(record, trace)
    billed: dict[str, list[Bill]] = defaultdict(list)
    for bill in bills:
        billed[bill.meter].append(bill)
    homes = tuple(home_figures(home, billed[home.meter_id], record) for home in record.homes)
    privacy = privacy_figures(trace, bills)
    return Metrics(
        run=run_figures(record),
        energy=energy_figures(record, trace),
        per_interval=tuple(per_interval),
        homes=homes,
        privacy=privacy,
        ledger=ledger_figures(record.ledger, record.submissions, record.wall_s),
        mixing=mixing_figures(record.mix_rounds),
        market=market_figures(record),
        forecast=forecast_figures(record, bills),
        conservation=conservation_figures(record, trace, bills, undecoded),
        sharing=sharing_figures(record, peer_to_peer(homes, per_interval, privacy, record)),
    )


def peer_to_peer(
    homes: Sequence[HomeFigures],
    per_interval: Sequence[IntervalFigures],
    privacy: PrivacyFigures,
    record: RunRecord,
) -> PeerToPeer:
    """What the run's trading came to, for the comparison with sharing agreements: each
    home's bills, the energy traded per interval (kWh), the bills the DSO got, the trades'
    anonymity."""
    return PeerToPeer(
        bills=tuple(home.bill for home in homes),
        traded_kwh=tuple(energy_kwh(row.traded_w, record.interval_s) for row in per_interval),
        bills_to_dso=sum(home.bills for home in homes),
        trades=privacy.trades,
        smallest_anonymity=privacy.min_anonymity,
    )


def run_figures(record: RunRecord) -> RunFigures:
    intervals = len(record.intervals)
    return RunFigures(
        name=record.name,
        mode=record.mode,
        seed=record.seed,
        currency=str(record.genesis.get("currency", "")),
        homes=len(record.homes),
        intervals=intervals,
        interval_s=record.interval_s,
        first_interval=record.first_interval,
        last_interval=record.last_interval,
        wall_s=record.wall_s,
        seconds_per_interval=ratio(record.wall_s, intervals),
        complete=record.complete,
        mixing=record.mix_pool > 0,
        mix_pool=record.mix_pool,
        tor=record.tor,
    )


def _profile(values: Sequence[float], k: int) -> float:
    """The k-th interval of a profile; 0 W past its end."""
    return values[k] if k < len(values) else 0.0


def energy_figures(record: RunRecord, trace: LedgerTrace) -> EnergyFigures:
    """Community energy in kWh from the device profiles; traded energy from the ledger."""
    production = consumption = self_consumed = imported = exported = 0.0
    for k in range(len(record.intervals)):
        pv = sum(_profile(h.pv_w, k) for h in record.homes)
        use = sum(_profile(h.load_w, k) + _profile(h.battery_w, k) for h in record.homes)
        production += pv
        consumption += use
        self_consumed += self_consumed_w(pv, use)
        for home in record.homes:
            net = _profile(home.load_w, k) - _profile(home.pv_w, k) + _profile(home.battery_w, k)
            imported += max(net, 0.0)
            exported += max(-net, 0.0)
    s = record.interval_s
    traded_j = sum(traded_energy_j(asset, s) for asset in trace.traded_epa())
    return EnergyFigures(
        consumption_kwh=energy_kwh(consumption, s),
        production_kwh=energy_kwh(production, s),
        self_consumed_kwh=energy_kwh(self_consumed, s),
        self_consumption=ratio(self_consumed, production),
        self_sufficiency=ratio(self_consumed, consumption),
        traded_kwh=traded_j / JOULES_PER_KWH,
        grid_import_kwh=energy_kwh(imported, s),
        grid_export_kwh=energy_kwh(exported, s),
    )


def interval_figures(record: RunRecord, trace: LedgerTrace) -> list[IntervalFigures]:
    """Per interval of the run: community powers (W), traded EPA power (W), clearing price,
    forecast (W) and transactions committed in blocks timed in it."""
    intervals = record.intervals
    traded = power_by_interval(power_steps(trace.traded_epa(), AssetKind.EPA), intervals)
    settled: dict[int, list[Trade]] = defaultdict(list)
    for trade in record.trades:
        if trade.settled:
            settled[trade.interval].append(trade)
    forecast = {f.interval: f.net_w for f in record.forecasts}
    committed = Counter((e.time - record.epoch) // record.interval_s for e in record.ledger)
    figures = []
    for k, interval in enumerate(intervals):
        load = sum(_profile(h.load_w, k) for h in record.homes)
        pv = sum(_profile(h.pv_w, k) for h in record.homes)
        battery = sum(_profile(h.battery_w, k) for h in record.homes)
        start = datetime.fromtimestamp(record.epoch + interval * record.interval_s, UTC)
        figures.append(
            IntervalFigures(
                interval=interval,
                start=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                load_w=load,
                pv_w=pv,
                net_w=load - pv + battery,
                traded_w=traded[k],
                clearing_price=weighted_price(settled.get(interval, [])),
                forecast_w=forecast.get(interval),
                committed_tx=committed.get(interval, 0),
            )
        )
    return figures


def home_figures(home: HomeRecord, own: Sequence[Bill], record: RunRecord) -> HomeFigures:
    """A home's own bills against their baseline (micro-units), measured and PV energy (kWh)."""
    billed = sum(b.amount for b in own)
    baseline = sum(baseline_amount(b) for b in own)
    pv_w = sum(_profile(home.pv_w, k) for k in range(len(record.intervals)))
    return HomeFigures(
        name=home.name,
        meter_id=home.meter_id,
        strategy=home.strategy,
        bill=billed if own else None,
        baseline=baseline if own else None,
        saving=baseline - billed if own else None,
        bills=len(own),
        reconciled=sum(record.reconciled.get(bill_id(b).hex()) == RECONCILED for b in own),
        measured_kwh=sum(b.measured_j for b in own) / JOULES_PER_KWH if own else None,
        pv_kwh=energy_kwh(pv_w, record.interval_s),
    )


def privacy_figures(trace: LedgerTrace, bills: Sequence[Bill]) -> PrivacyFigures:
    """Anonymity of traded outputs and deposits against a reader of the whole ledger."""
    sizes = tuple(trace.anonymity_size(op) for trade in trace.trades for op in trade)
    linkable = sum(1 for trade in trace.trades if trade and trace.anonymity_size(trade[0]) == 1)
    deposits = deposited_outpoints(bills)
    linkable_deposits = sum(1 for d in deposits if trace.anonymity_size(d) == 1)
    return PrivacyFigures(
        trades=len(trace.trades),
        traded_outputs=len(sizes),
        linkable_trades=linkable,
        linkable_trade_fraction=ratio(linkable, len(trace.trades)),
        deposits=len(deposits),
        linkable_deposits=linkable_deposits,
        linkable_deposit_fraction=ratio(linkable_deposits, len(deposits)),
        anonymity_sets=sizes,
        min_anonymity=min(sizes, default=None),
        median_anonymity=statistics.median(sizes) if sizes else None,
    )


def ledger_figures(
    entries: Sequence[LedgerEntry], submissions: Sequence[Submission], wall_s: float
) -> LedgerFigures:
    """Throughput in transactions per wall second and latency in ms of committed submissions."""
    committed = [s for s in submissions if s.code == COMMITTED]
    latencies = [(s.answered - s.sent) * 1000 for s in committed]
    return LedgerFigures(
        transactions=len(entries),
        blocks=len({e.height for e in entries}),
        submitted=len(submissions),
        committed=len(committed),
        rejected=len(submissions) - len(committed),
        tps_submitted=ratio(len(submissions), wall_s) if wall_s > 0 else None,
        tps_committed=ratio(len(entries), wall_s) if wall_s > 0 else None,
        latency_ms=Latency(
            p50=nearest_rank(latencies, 0.5),
            p95=nearest_rank(latencies, 0.95),
            max=max(latencies, default=None),
        ),
    )


def mixing_figures(rounds: Sequence[MixRound]) -> MixingFigures:
    """Mixing rounds and how long the ones that ended `done` took, in seconds."""
    done = [r.ended - r.began for r in rounds if r.outcome == MIX_DONE]
    return MixingFigures(
        rounds=len(rounds),
        done=len(done),
        failed=len(rounds) - len(done),
        seconds=MixSeconds(p50=nearest_rank(done, 0.5), max=max(done, default=None)),
    )


def market_figures(record: RunRecord) -> MarketFigures:
    """The bid store's orders and trades; energy (kWh) and mean price of the settled ones."""
    settled = [t for t in record.trades if t.settled]
    return MarketFigures(
        orders=record.orders,
        trades=len(record.trades),
        settled=len(settled),
        traded_kwh=energy_kwh(sum(t.power_w for t in settled), record.interval_s),
        mean_price=weighted_price(settled),
    )


def forecast_figures(record: RunRecord, bills: Sequence[Bill]) -> ForecastFigures:
    """Mean absolute error in W of the DSO's forecasts against the billed community net."""
    measured: dict[int, int] = defaultdict(int)
    billed: dict[int, set[str]] = defaultdict(set)
    for bill in bills:
        measured[bill.interval] += bill.measured_j
        billed[bill.interval].add(bill.meter)
    homes = {h.meter_id for h in record.homes}
    forecast = {f.interval: f.net_w for f in record.forecasts}
    errors = [
        abs(net_w - measured[k] / record.interval_s)
        for k, net_w in forecast.items()
        if homes and billed.get(k, set()) >= homes
    ]
    return ForecastFigures(
        intervals=len(errors), mae_w=statistics.fmean(errors) if errors else None
    )


def conservation_figures(
    record: RunRecord, trace: LedgerTrace, bills: Sequence[Bill], undecoded: Sequence[str]
) -> ConservationFigures:
    """FA as the ledger holds it (micro-units) and every conservation violation found."""
    deposits = deposited_outpoints(bills)
    fa_unspent = _fa_sum(trace.unspent)
    fa_deposited = _fa_sum(a for d in deposits if (a := trace.asset(d)) is not None)
    billing = bill_problems(bills, trace, record.interval_s)
    community = community_problems(bills, trace, record.interval_s)
    problems = [
        *trace.faults,
        *undecoded,
        *asset_problems(trace),
        *billing,
        *community,
        *deposit_problems(deposits, trace),
    ]
    if fa_unspent < fa_deposited:
        problems.append(f"FA deposited ({fa_deposited}) exceeds FA unspent ({fa_unspent}).")
    identity_ok = not community and all(bill_identity_holds(b, record.interval_s) for b in bills)
    return ConservationFigures(
        fa_issued=_fa_sum(o.asset for issue in trace.issues.values() for o in issue.outputs),
        fa_unspent=fa_unspent,
        fa_deposited=fa_deposited,
        fa_held=fa_unspent - fa_deposited,
        energy_identity_ok=identity_ok,
        ok=not problems,
        problems=tuple(problems),
    )
