"""simulation.metrics: a run's figures from hand-built records (signed transactions from
`Scenario`, real signed bills from assets.bill)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets import (
    Asset,
    AssetKind,
    Eca,
    Epa,
    Fa,
    Issue,
    Keypair,
    Outpoint,
    Output,
    Regulate,
    Transaction,
    Transfer,
    bill_id,
    bill_to_wire,
    canonical_json,
    close_bill,
    decode_bill,
    genesis_to_wire,
    sign_bill,
    tx_to_wire,
    txid,
)
from simulation.metrics import (
    baseline_amount,
    compute_metrics,
    sets_by_kind,
    trace_ledger,
)
from simulation.record import (
    Forecast,
    HomeRecord,
    LedgerEntry,
    MixRound,
    RunRecord,
    Submission,
    Trade,
)
from simulation.scenario import Scenario, pay

SCENARIO = Scenario(dso=Keypair(bytes([100]) * 32), sequencer=Keypair(bytes([101]) * 32))
METERS = {f"m{n}": Keypair(bytes([n]) * 32) for n in range(1, 5)}
OWNERS = [Keypair(bytes([n]) * 32) for n in range(10, 18)]
S = SCENARIO.interval_s  # 900
PRICE_CONSUMPTION = 200_000  # micro-units per kWh
PRICE_PRODUCTION = 100_000


class Nonces:
    """Increasing nonces per meter, as a meter issues them."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def issue(self, meter: str, *outputs: Output) -> Issue:
        self.last[meter] = self.last.get(meter, 0) + 1
        return SCENARIO.issue(meter, METERS[meter], self.last[meter], outputs)


def op(tx: Transaction, index: int) -> Outpoint:
    return Outpoint(txid(tx), index)


def entries(txs: Sequence[Transaction], interval: int = 0) -> list[LedgerEntry]:
    """One block per transaction, all timed in `interval`."""
    return [
        LedgerEntry(height=n + 1, time=SCENARIO.time_in(interval, n), tx=tx_to_wire(tx))
        for n, tx in enumerate(txs)
    ]


def home(
    name: str, meter: str, load: list[float], pv: list[float], battery: list[float]
) -> HomeRecord:
    return HomeRecord(name, meter, OWNERS[0].public_key.hex(), "trader", load, pv, battery)


def record(
    txs: Sequence[Transaction] = (),
    *,
    homes: Iterable[HomeRecord] = (),
    bills: Iterable[dict[str, Any]] = (),
    last_interval: int = 1,
    **fields: Any,
) -> RunRecord:
    base: dict[str, Any] = {
        "name": "test",
        "mode": "in-process",
        "seed": 7,
        "genesis": genesis_to_wire(SCENARIO.genesis),
        "first_interval": 0,
        "last_interval": last_interval,
        "price_consumption": PRICE_CONSUMPTION,
        "price_production": PRICE_PRODUCTION,
        "mix_pool": 0,
        "tor": False,
        "wall_s": 10.0,
        "homes": list(homes),
        "ledger": entries(txs),
        "bills": list(bills),
    }
    return RunRecord(**(base | fields))


def bill(
    meter: str,
    interval: int,
    measured_j: int,
    *,
    issued_epa_w: int = 0,
    deposited_epa_w: int = 0,
    fa_issued: int = 0,
    fa_deposited: int = 0,
    issues: Iterable[bytes] = (),
    deposits: Iterable[Outpoint] = (),
    energy_j: int | None = None,
) -> dict[str, Any]:
    """A signed bill's wire object; `energy_j` overrides the formula's E_t (a broken bill)."""
    closed = close_bill(
        chain=SCENARIO.chain,
        meter=meter,
        interval=interval,
        closed_height=10,
        interval_s=S,
        measured_j=measured_j,
        issued_epa_w=issued_epa_w,
        deposited_epa_w=deposited_epa_w,
        fa_issued=fa_issued,
        fa_deposited=fa_deposited,
        price_consumption=PRICE_CONSUMPTION,
        price_production=PRICE_PRODUCTION,
        issues=issues,
        deposits=deposits,
    )
    if energy_j is not None:
        closed = dataclasses.replace(closed, energy_j=energy_j)
    return bill_to_wire(sign_bill(closed, METERS[meter]))


def trade(
    epa: Outpoint, fa: Outpoint, seller: Keypair, buyer: Keypair, power: int = 500
) -> Transfer:
    """The seller's EPA (power W in interval 0) to the buyer, 1000 micro-units to the seller."""
    return SCENARIO.transfer(
        [epa, fa], [pay(Epa(power, 0, 0), buyer), pay(Fa(1000), seller)], seller, buyer
    )


# ---------------------------------------------------------------- privacy


def test_a_seller_trading_straight_from_its_issue_is_linkable() -> None:
    seller, buyer = OWNERS[0], OWNERS[1]
    nonces = Nonces()
    epa = nonces.issue("m1", pay(Epa(500, 0, 0), seller))
    fa = nonces.issue("m2", pay(Fa(1000), buyer))
    sale = trade(op(epa, 0), op(fa, 0), seller, buyer)
    metrics = compute_metrics(record([epa, fa, sale]))
    assert trace_ledger(entries([epa, fa, sale])).anonymity_set(op(sale, 0)) == {"m1"}
    assert metrics.privacy.trades == 1
    assert metrics.privacy.traded_outputs == 1
    assert metrics.privacy.anonymity_sets == (1,)
    assert metrics.privacy.linkable_trades == 1
    assert metrics.privacy.linkable_trade_fraction == 1.0
    assert metrics.conservation.problems == ()


def test_a_three_peer_mix_hides_the_seller_among_three_meters() -> None:
    peers = OWNERS[:3]
    fresh = OWNERS[3:6]
    buyer = OWNERS[6]
    nonces = Nonces()
    issues = [
        nonces.issue(meter, pay(Epa(500, 0, 0), peer))
        for meter, peer in zip(["m1", "m2", "m3"], peers, strict=True)
    ]
    mix = SCENARIO.transfer(
        [op(i, 0) for i in issues], [pay(Epa(500, 0, 0), f) for f in reversed(fresh)], *peers
    )
    fa = nonces.issue("m4", pay(Fa(1000), buyer))
    sale = trade(op(mix, 2), op(fa, 0), fresh[0], buyer)
    deposit_address = Keypair(bytes([77]) * 32)
    deposit = SCENARIO.transfer(
        [op(sale, 0)], [Output(Epa(500, 0, 0), deposit_address.public_key)], buyer
    )
    txs: list[Transaction] = [*issues, mix, fa, sale, deposit]
    bills = [
        bill("m4", 0, 450_000, deposited_epa_w=500, deposits=[op(deposit, 0)]),
    ]
    metrics = compute_metrics(record(txs, bills=bills))
    trace = trace_ledger(entries(txs))
    assert trace.anonymity_set(op(sale, 0)) == {"m1", "m2", "m3"}
    assert metrics.privacy.anonymity_sets == (3,)
    assert metrics.privacy.linkable_trades == 0
    assert metrics.privacy.linkable_trade_fraction == 0.0
    assert metrics.privacy.min_anonymity == 3
    assert metrics.privacy.median_anonymity == 3
    assert metrics.privacy.deposits == 1
    assert metrics.privacy.linkable_deposits == 0
    assert metrics.conservation.problems == ()


def test_a_deposit_straight_from_an_issue_is_linkable() -> None:
    owner = OWNERS[0]
    nonces = Nonces()
    fa = nonces.issue("m1", pay(Fa(700), owner))
    deposit = SCENARIO.transfer([op(fa, 0)], [pay(Fa(700), Keypair(bytes([78]) * 32))], owner)
    bills = [bill("m1", 0, 0, fa_issued=700, fa_deposited=700, deposits=[op(deposit, 0)])]
    metrics = compute_metrics(record([fa, deposit], bills=bills))
    assert metrics.privacy.deposits == 1
    assert metrics.privacy.linkable_deposits == 1
    assert metrics.privacy.linkable_deposit_fraction == 1.0
    assert metrics.conservation.fa_deposited == 700
    assert metrics.conservation.fa_held == 0


def test_a_single_owner_split_keeps_the_set() -> None:
    seller, buyer = OWNERS[0], OWNERS[1]
    nonces = Nonces()
    epa = nonces.issue("m1", pay(Epa(600, 0, 0), seller))
    split = SCENARIO.transfer(
        [op(epa, 0)], [pay(Epa(200, 0, 0), OWNERS[2]), pay(Epa(400, 0, 0), OWNERS[3])], seller
    )
    fa = nonces.issue("m2", pay(Fa(1000), buyer))
    sale = trade(op(split, 0), op(fa, 0), OWNERS[2], buyer, power=200)
    txs: list[Transaction] = [epa, split, fa, sale]
    trace = trace_ledger(entries(txs))
    assert trace.anonymity_set(op(split, 0)) == trace.anonymity_set(op(split, 1)) == {"m1"}
    assert compute_metrics(record(txs)).privacy.linkable_trades == 1


def test_sets_flow_only_within_a_kind() -> None:
    seller, b1, b2 = OWNERS[0], OWNERS[1], OWNERS[2]
    nonces = Nonces()
    epa = nonces.issue("m1", pay(Epa(500, 0, 0), seller))
    fa2 = nonces.issue("m2", pay(Fa(500), b1))
    fa3 = nonces.issue("m3", pay(Fa(500), b2))
    fa_mix = SCENARIO.transfer(
        [op(fa2, 0), op(fa3, 0)], [pay(Fa(500), OWNERS[3]), pay(Fa(500), OWNERS[4])], b1, b2
    )
    # the seller's EPA and the two mixed FA in one trade: the FA's two meters stay with the FA
    sale = SCENARIO.transfer(
        [op(epa, 0), op(fa_mix, 0), op(fa_mix, 1)],
        [pay(Epa(500, 0, 0), OWNERS[3]), pay(Fa(1000), seller)],
        seller,
        OWNERS[3],
        OWNERS[4],
    )
    txs: list[Transaction] = [epa, fa2, fa3, fa_mix, sale]
    trace = trace_ledger(entries(txs))
    assert trace.anonymity_set(op(sale, 0)) == {"m1"}
    assert trace.anonymity_set(op(sale, 1)) == {"m2", "m3"}
    metrics = compute_metrics(record(txs))
    assert metrics.privacy.anonymity_sets == (1,)
    assert metrics.privacy.linkable_trades == 1


def test_sets_by_kind_unions_each_kind_apart() -> None:
    got = sets_by_kind([(AssetKind.EPA, 0b001), (AssetKind.FA, 0b010), (AssetKind.EPA, 0b100)])
    assert got == {AssetKind.EPA: 0b101, AssetKind.FA: 0b010}


def test_a_one_signer_transfer_of_epa_and_fa_is_no_trade() -> None:
    owner = OWNERS[0]
    nonces = Nonces()
    issue = nonces.issue("m1", pay(Epa(500, 0, 0), owner), pay(Fa(10), owner))
    merge = SCENARIO.transfer(
        [op(issue, 0), op(issue, 1)], [pay(Epa(500, 0, 0), OWNERS[1]), pay(Fa(10), owner)], owner
    )
    assert compute_metrics(record([issue, merge])).privacy.trades == 0


# ---------------------------------------------------------------- random ledgers


def _split(asset: Asset, draw: st.DrawFn) -> list[Asset]:
    """`asset` whole, or in two parts (FA by amount, EPA and ECA by power)."""
    if isinstance(asset, Fa):
        if asset.amount < 2 or not draw(st.booleans()):
            return [asset]
        part = draw(st.integers(1, asset.amount - 1))
        return [Fa(part), Fa(asset.amount - part)]
    if asset.power < 2 or not draw(st.booleans()):
        return [asset]
    part = draw(st.integers(1, asset.power - 1))
    return [
        dataclasses.replace(asset, power=part),
        dataclasses.replace(asset, power=asset.power - part),
    ]


def _random_asset(draw: st.DrawFn) -> Asset:
    kind = draw(st.sampled_from(["EPA", "ECA", "FA"]))
    if kind == "FA":
        return Fa(draw(st.integers(1, 1000)))
    start = draw(st.integers(0, 3))
    end = draw(st.integers(start, 4))
    power = draw(st.integers(1, 900))
    return Epa(power, start, end) if kind == "EPA" else Eca(power, start, end)


@st.composite
def ledgers(draw: st.DrawFn) -> list[Transaction]:
    """Issues by four meters and balanced transfers (mixes, splits) among eight owners."""
    nonces = Nonces()
    owner_of = {o.public_key: o for o in OWNERS}
    unspent: list[tuple[Outpoint, Asset, bytes]] = []
    txs: list[Transaction] = []
    for _ in range(draw(st.integers(1, 14))):
        if not unspent or draw(st.integers(0, 2)) == 0:
            meter = draw(st.sampled_from(sorted(METERS)))
            owner = draw(st.sampled_from(OWNERS))
            issued = [_random_asset(draw) for _ in range(draw(st.integers(1, 2)))]
            tx: Transaction = nonces.issue(meter, *(pay(a, owner) for a in issued))
            made = [(op(tx, n), a, owner.public_key) for n, a in enumerate(issued)]
        else:
            picks = draw(
                st.lists(st.integers(0, len(unspent) - 1), min_size=1, max_size=4, unique=True)
            )
            spent = [unspent[i] for i in picks]
            unspent = [u for i, u in enumerate(unspent) if i not in picks]
            parts = [part for _, asset, _ in spent for part in _split(asset, draw)]
            outputs = [pay(a, draw(st.sampled_from(OWNERS))) for a in draw(st.permutations(parts))]
            signers = {owner_of[address] for _, _, address in spent}
            tx = SCENARIO.transfer([o for o, _, _ in spent], outputs, *signers)
            made = [(op(tx, n), o.asset, o.address) for n, o in enumerate(outputs)]
        txs.append(tx)
        unspent.extend(made)
    return txs


def _reachable_meters(txs: Sequence[Transaction]) -> dict[Outpoint, frozenset[str]]:
    """The definition read backwards, naively: the meters whose issues reach each output
    through same-kind inputs of the transfers that made it."""
    made_by = {txid(tx): tx for tx in txs}
    memo: dict[Outpoint, frozenset[str]] = {}

    def reach(outpoint: Outpoint) -> frozenset[str]:
        if outpoint not in memo:
            tx = made_by[outpoint.txid]
            if isinstance(tx, Issue):
                memo[outpoint] = frozenset({tx.meter})
            else:
                assert isinstance(tx, Transfer)
                kind = tx.outputs[outpoint.index].asset.kind
                memo[outpoint] = frozenset().union(
                    *(reach(i) for i in tx.inputs if _kind_of(made_by, i) == kind)
                )
        return memo[outpoint]

    return {
        Outpoint(txid(tx), n): reach(Outpoint(txid(tx), n))
        for tx in txs
        if not isinstance(tx, Regulate)
        for n in range(len(tx.outputs))
    }


def _kind_of(made_by: dict[bytes, Transaction], outpoint: Outpoint) -> AssetKind:
    tx = made_by[outpoint.txid]
    assert isinstance(tx, Issue | Transfer)
    return tx.outputs[outpoint.index].asset.kind


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(txs=ledgers())
def test_random_ledgers_conserve_fa_and_keep_sets_within_earlier_issuers(
    txs: list[Transaction],
) -> None:
    metrics = compute_metrics(record(txs))
    assert metrics.conservation.fa_issued == metrics.conservation.fa_unspent
    assert metrics.conservation.problems == ()
    trace = trace_ledger(entries(txs))
    issued_before: dict[AssetKind, set[str]] = {kind: set() for kind in AssetKind}
    expected = _reachable_meters(txs)
    for tx in txs:
        assert isinstance(tx, Issue | Transfer)
        if isinstance(tx, Issue):
            for output in tx.outputs:
                issued_before[output.asset.kind].add(tx.meter)
        for n, output in enumerate(tx.outputs):
            found = trace.anonymity_set(op(tx, n))
            assert found <= issued_before[output.asset.kind]
            assert found == expected[op(tx, n)]


# ---------------------------------------------------------------- conservation


def test_a_bill_whose_identity_does_not_hold_is_a_problem() -> None:
    bills = [bill("m1", 0, 90_000, energy_j=80_000)]
    conservation = compute_metrics(record(bills=bills)).conservation
    assert not conservation.energy_identity_ok
    assert not conservation.ok
    assert any("breaks E_t" in p and "m1" in p for p in conservation.problems)


def test_a_bill_claiming_epa_the_ledger_lacks_breaks_the_community_identity() -> None:
    # the bill's own arithmetic holds, but no deposit it lists carries the 500 W it counts
    bills = [bill("m1", 0, 900_000, deposited_epa_w=500), bill("m2", 0, -450_000)]
    conservation = compute_metrics(record(bills=bills)).conservation
    assert not conservation.energy_identity_ok
    assert [p for p in conservation.problems if "Interval 0" in p]
    assert not [p for p in conservation.problems if "breaks E_t" in p]


def test_a_deposited_outpoint_that_does_not_exist_is_a_problem() -> None:
    ghost = Outpoint(bytes([9]) * 32, 0)
    bills = [bill("m1", 0, 0, fa_deposited=5, deposits=[ghost])]
    conservation = compute_metrics(record(bills=bills)).conservation
    assert any("does not exist" in p and ghost.txid.hex() in p for p in conservation.problems)
    assert conservation.fa_deposited == 0


def test_a_spent_deposit_is_a_problem() -> None:
    owner = OWNERS[0]
    nonces = Nonces()
    fa = nonces.issue("m1", pay(Fa(100), owner))
    onward = SCENARIO.transfer([op(fa, 0)], [pay(Fa(100), OWNERS[1])], owner)
    bills = [bill("m1", 0, 0, fa_issued=100, fa_deposited=100, deposits=[op(fa, 0)])]
    problems = compute_metrics(record([fa, onward], bills=bills)).conservation.problems
    assert any("was spent" in p for p in problems)


def test_a_transfer_creating_fa_breaks_conservation() -> None:
    owner = OWNERS[0]
    nonces = Nonces()
    fa = nonces.issue("m1", pay(Fa(100), owner))
    forged = SCENARIO.transfer([op(fa, 0)], [pay(Fa(150), owner)], owner)
    conservation = compute_metrics(record([fa, forged])).conservation
    assert conservation.fa_issued == 100
    assert conservation.fa_unspent == 150
    assert any("FA issued (100) differs from FA unspent (150)" in p for p in conservation.problems)


def test_a_transfer_spending_an_unknown_output_is_a_problem() -> None:
    owner = OWNERS[0]
    ghost = Outpoint(bytes([8]) * 32, 3)
    stray = SCENARIO.transfer([ghost], [pay(Fa(5), owner)], owner)
    problems = compute_metrics(record([stray])).conservation.problems
    assert any("not on the ledger" in p for p in problems)


# ---------------------------------------------------------------- money


def test_baseline_rounds_each_interval_half_to_even_and_saving_is_its_difference() -> None:
    # 9 J at 200,000 per kWh is 0.5 micro-units: each rounds to 0 (their sum would round to 1);
    # -54 J at 100,000 per kWh is -1.5: rounds to -2
    bills = [
        bill("m1", 0, 9),
        bill("m1", 1, 9),
        bill("m1", 2, -54, issued_epa_w=1, fa_deposited=1000),
    ]
    homes = [home("h1", "m1", [0.0] * 3, [0.0] * 3, [0.0] * 3)]
    figures = compute_metrics(record(homes=homes, bills=bills, last_interval=2)).homes[0]
    # interval 2 bills E = -54 + 1 W * 900 s = 846 J: 47 micro-units, less 1000 deposited
    assert [b["amount"] for b in bills] == [0, 0, -953]
    assert figures.bill == -953
    assert figures.baseline == -2
    assert figures.saving == 951
    assert figures.bills == 3
    assert figures.measured_kwh == pytest.approx(-36 / 3_600_000)


def test_baseline_amount_of_one_bill() -> None:
    one = decode_bill(canonical_json(bill("m1", 0, 27)))
    assert baseline_amount(one) == 2  # 1.5 rounds half to even


def test_reconciled_counts_the_dsos_status() -> None:
    bills = [bill("m1", 0, 0), bill("m1", 1, 0)]
    first = bill_id(decode_bill(canonical_json(bills[0]))).hex()
    homes = [home("h1", "m1", [0.0, 0.0], [0.0, 0.0], [0.0, 0.0])]
    run = record(homes=homes, bills=bills, reconciled={first: "reconciled"})
    assert compute_metrics(run).homes[0].reconciled == 1


def test_self_consumption_and_self_sufficiency_of_two_homes_over_two_intervals() -> None:
    # interval 0: production 3000 W, consumption 1000 + 1000 + 500 (charging) = 2500 W;
    # interval 1: production 0, consumption 500 + 2000 - 500 (discharging) = 2000 W
    homes = [
        home("a", "m1", [1000.0, 500.0], [3000.0, 0.0], [0.0, 0.0]),
        home("b", "m2", [1000.0, 2000.0], [0.0, 0.0], [500.0, -500.0]),
    ]
    metrics = compute_metrics(record(homes=homes))
    energy = metrics.energy
    kwh = S / 3_600_000  # one W over one interval
    assert energy.production_kwh == pytest.approx(3000 * kwh)
    assert energy.consumption_kwh == pytest.approx(4500 * kwh)
    assert energy.self_consumed_kwh == pytest.approx(2500 * kwh)
    assert energy.self_consumption == pytest.approx(2500 / 3000)
    assert energy.self_sufficiency == pytest.approx(2500 / 4500)
    # home nets: a -2000, 500; b 1500, 1500
    assert energy.grid_import_kwh == pytest.approx(3500 * kwh)
    assert energy.grid_export_kwh == pytest.approx(2000 * kwh)
    assert [i.net_w for i in metrics.per_interval] == [-500.0, 2000.0]
    assert [i.pv_w for i in metrics.per_interval] == [3000.0, 0.0]
    assert metrics.homes[0].pv_kwh == pytest.approx(3000 * kwh)


def test_traded_energy_and_power_come_from_the_ledger() -> None:
    seller, buyer = OWNERS[0], OWNERS[1]
    nonces = Nonces()
    epa = nonces.issue("m1", pay(Epa(400, 1, 3), seller))
    fa = nonces.issue("m2", pay(Fa(1000), buyer))
    sale = SCENARIO.transfer(
        [op(epa, 0), op(fa, 0)], [pay(Epa(400, 1, 3), buyer), pay(Fa(1000), seller)], seller, buyer
    )
    metrics = compute_metrics(record([epa, fa, sale], last_interval=2))
    assert metrics.energy.traded_kwh == pytest.approx(400 * S * 3 / 3_600_000)
    assert [i.traded_w for i in metrics.per_interval] == [0, 400, 400]
    assert [i.committed_tx for i in metrics.per_interval] == [3, 0, 0]
    assert metrics.per_interval[1].start == "2026-01-01T00:15:00Z"


# ---------------------------------------------------------------- operations


def test_ledger_market_mixing_and_forecast_figures() -> None:
    homes = [
        home("a", "m1", [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]),
        home("b", "m2", [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]),
    ]
    bills = [
        bill("m1", 0, 900_000),  # 1000 W
        bill("m2", 0, -450_000),  # -500 W
        bill("m1", 1, 900_000),  # interval 1 lacks m2's bill: not counted
    ]
    run = record(
        homes=homes,
        bills=bills,
        wall_s=4.0,
        submissions=[
            Submission("issue", 0.0, 0.010, "committed"),
            Submission("transfer", 0.0, 0.030, "committed"),
            Submission("transfer", 0.0, 0.020, "double_spend"),
            Submission("transfer", 0.0, 0.020, "committed"),
        ],
        mix_rounds=[MixRound(3, 0.0, 2.0, "done"), MixRound(3, 0.0, 9.0, "timeout")],
        orders=5,
        trades=[
            Trade(0, 300, 100_000, True),
            Trade(0, 100, 200_000, True),
            Trade(1, 100, 900_000, False),
        ],
        forecasts=[Forecast(0, 600), Forecast(1, 0)],
    )
    metrics = compute_metrics(run)
    assert metrics.ledger.submitted == 4
    assert metrics.ledger.committed == 3
    assert metrics.ledger.rejected == 1
    assert metrics.ledger.tps_submitted == 1.0
    assert metrics.ledger.latency_ms.p50 == pytest.approx(20.0)
    assert metrics.ledger.latency_ms.max == pytest.approx(30.0)
    assert metrics.mixing.rounds == 2
    assert metrics.mixing.done == 1
    assert metrics.mixing.failed == 1
    assert metrics.mixing.seconds.max == 2.0
    assert metrics.market.orders == 5
    assert metrics.market.trades == 3
    assert metrics.market.settled == 2
    assert metrics.market.traded_kwh == pytest.approx(400 * S / 3_600_000)
    assert metrics.market.mean_price == pytest.approx(125_000)
    assert metrics.per_interval[0].clearing_price == pytest.approx(125_000)
    assert metrics.per_interval[1].clearing_price is None
    assert metrics.per_interval[0].forecast_w == 600
    assert metrics.forecast.intervals == 1
    assert metrics.forecast.mae_w == pytest.approx(100.0)


# ---------------------------------------------------------------- shape


def test_an_empty_record_gives_nulls_not_exceptions() -> None:
    run = record(wall_s=0.0, last_interval=-1)
    metrics = compute_metrics(run)
    wire = json.loads(json.dumps(metrics.to_wire()))
    assert wire["energy"]["self_consumption"] is None
    assert wire["energy"]["self_sufficiency"] is None
    assert wire["privacy"]["linkable_trade_fraction"] is None
    assert wire["privacy"]["min_anonymity"] is None
    assert wire["privacy"]["median_anonymity"] is None
    assert wire["ledger"]["tps_committed"] is None
    assert wire["ledger"]["latency_ms"] == {"p50": None, "p95": None, "max": None}
    assert wire["mixing"]["seconds"] == {"p50": None, "max": None}
    assert wire["market"]["mean_price"] is None
    assert wire["forecast"] == {"intervals": 0, "mae_w": None}
    assert wire["run"]["seconds_per_interval"] is None
    assert wire["conservation"]["ok"] is True
    assert wire["per_interval"] == []


def test_metrics_json_has_the_agreed_shape() -> None:
    homes = [home("a", "m1", [100.0, 0.0], [0.0, 50.0], [0.0, 0.0])]
    wire = compute_metrics(record(homes=homes, bills=[bill("m1", 0, 5)])).to_wire()
    assert set(wire) == {
        "run",
        "energy",
        "per_interval",
        "homes",
        "privacy",
        "ledger",
        "mixing",
        "market",
        "forecast",
        "conservation",
        "sharing",  # its shape: tests/test_sim_sharing.py
    }
    assert set(wire["run"]) == {
        *[
            "name",
            "mode",
            "seed",
            "homes",
            "intervals",
            "interval_s",
            "first_interval",
            "last_interval",
        ],
        *["wall_s", "seconds_per_interval", "complete", "mixing", "mix_pool", "tor", "currency"],
    }
    assert set(wire["energy"]) == {
        *["consumption_kwh", "production_kwh", "self_consumed_kwh", "self_consumption"],
        *["self_sufficiency", "traded_kwh", "grid_import_kwh", "grid_export_kwh"],
    }
    assert set(wire["per_interval"][0]) == {
        *[
            "interval",
            "start",
            "load_w",
            "pv_w",
            "net_w",
            "traded_w",
            "clearing_price",
            "forecast_w",
        ],
        "committed_tx",
    }
    assert set(wire["homes"][0]) == {
        *["name", "meter_id", "strategy", "bill", "baseline", "saving", "bills", "reconciled"],
        *["measured_kwh", "pv_kwh"],
    }
    assert set(wire["privacy"]) == {
        *["trades", "traded_outputs", "linkable_trades", "linkable_trade_fraction", "deposits"],
        *["linkable_deposits", "linkable_deposit_fraction", "anonymity_sets"],
        *["min_anonymity", "median_anonymity"],
    }
    assert isinstance(wire["privacy"]["anonymity_sets"], list)
    assert set(wire["ledger"]) == {
        *["transactions", "blocks", "submitted", "committed", "rejected", "tps_submitted"],
        *["tps_committed", "latency_ms"],
    }
    assert set(wire["mixing"]) == {"rounds", "done", "failed", "seconds"}
    assert set(wire["market"]) == {"orders", "trades", "settled", "traded_kwh", "mean_price"}
    assert set(wire["conservation"]) == {
        *[
            "fa_issued",
            "fa_unspent",
            "fa_deposited",
            "fa_held",
            "energy_identity_ok",
            "ok",
            "problems",
        ],
    }
    assert isinstance(wire["conservation"]["problems"], list)
    assert json.loads(json.dumps(wire)) == wire
