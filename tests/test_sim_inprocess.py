"""The in-process community (simulation/inprocess.py): a small run, checked against the ledger's
rules replayed, the conservation of money, the bill's formula and the mixing's effect."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from assets import Genesis, canonical_json, genesis_from_wire
from ledger.ledger import Ledger
from ledger.store import Store
from simulation.agents import Market
from simulation.config import SimConfig
from simulation.inprocess import community_cover, run_in_process, series_up
from simulation.record import RunRecord

INTERVALS = 4


@dataclass(frozen=True)
class Plan:
    """A stand-in for simulation.profiles.HomePlan with the fields the run reads."""

    name: str
    meter_id: str
    strategy: str
    load_w: npt.NDArray[np.float64]
    pv_w: npt.NDArray[np.float64]
    battery_w: npt.NDArray[np.float64]
    annual_kwh: float = 3_500.0
    pv_kwp: float = 0.0
    battery_kwh: float = 0.0
    battery_kw: float = 0.0

    @property
    def net_w(self) -> npt.NDArray[np.float64]:
        return self.load_w - self.pv_w + self.battery_w


def plans() -> list[Any]:
    """A seller (PV surplus), a buyer and a passive neighbour, both traders forecasting."""
    flat = np.full(INTERVALS, 1.0)
    zero = np.zeros(INTERVALS)
    return [
        Plan("ana", "ES0021000000000001AA", "forecast", 500.0 * flat, 2_400.0 * flat, zero),
        Plan("ben", "ES0021000000000002AA", "forecast", 1_800.0 * flat, zero, 200.0 * flat),
        Plan("cruz", "ES0021000000000003AA", "passive", 700.3 * flat, zero, zero),
    ]


def config(mixing: bool, seed: int = 11) -> SimConfig:
    return SimConfig(
        name="test community", seed=seed, homes=3, intervals=INTERVALS, mixing=mixing, mix_pool=3
    )


@pytest.fixture(scope="module")
def mixed() -> RunRecord:
    return run_in_process(config(mixing=True), plans())


@pytest.fixture(scope="module")
def unmixed() -> RunRecord:
    return run_in_process(config(mixing=False), plans())


def test_the_run_completes_with_bills_for_every_home_and_interval(mixed: RunRecord) -> None:
    done: list[int] = []
    record = run_in_process(config(mixing=True), plans(), lambda n: done.append(n))
    assert done == list(range(1, INTERVALS + 1))
    assert record.mode == "in-process" and record.complete
    assert len(record.intervals) == INTERVALS and len(record.homes) == 3
    billed = Counter((b["meter"], b["interval"]) for b in record.bills)
    assert set(billed.values()) == {1} and len(billed) == 3 * INTERVALS
    assert set(record.reconciled.values()) == {"reconciled"}
    assert record.trades and all(t.settled for t in record.trades)
    assert record.orders >= len({t.interval for t in record.trades})
    assert all(r.outcome == "done" and r.peers == 3 for r in record.mix_rounds)
    assert {s.code for s in record.submissions} == {"committed"}
    assert record.config["seed"] == 11


def test_every_ledger_entry_revalidates_on_a_fresh_ledger(mixed: RunRecord, tmp_path: Path) -> None:
    genesis: Genesis = genesis_from_wire(mixed.genesis)
    ledger = Ledger(Store(f"sqlite:///{tmp_path / 'replay.sqlite'}"), genesis)
    blocks: dict[tuple[int, int], list[bytes]] = {}
    for entry in mixed.ledger:
        blocks.setdefault((entry.height, entry.time), []).append(canonical_json(entry.tx))
    assert [h for h, _ in blocks] == list(range(1, len(blocks) + 1))
    for (_, at), raws in blocks.items():
        result = ledger.append_block(raws, at)
        refused = [o for o in result.outcomes if not o.accepted]
        assert not refused, refused
    assert ledger.size == len(mixed.ledger)
    ledger.store.close()


def test_fa_issued_is_fa_unspent(mixed: RunRecord) -> None:
    issued = sum(
        o["asset"]["amount"]
        for e in mixed.ledger
        if e.tx["type"] == "issue"
        for o in e.tx["outputs"]
        if o["asset"]["kind"] == "FA"
    )
    spent = {(i["tx"], i["index"]) for e in mixed.ledger for i in e.tx.get("inputs", ())}
    unspent = sum(
        o["asset"]["amount"]
        for e in mixed.ledger
        if e.tx["type"] != "regulate"
        for n, o in enumerate(e.tx["outputs"])
        if o["asset"]["kind"] == "FA" and (_txid(e.tx), n) not in spent
    )
    assert issued > 0 and issued == unspent


def test_the_bills_energy_identity_holds(mixed: RunRecord) -> None:
    s = mixed.interval_s
    for bill in mixed.bills:
        assert bill["energy_j"] == (
            bill["measured_j"] - bill["deposited_epa_w"] * s + bill["issued_epa_w"] * s
        )
    # what a seller sold stays billed to it: issued EPA not deposited back
    sold = {b["meter"]: 0 for b in mixed.bills}
    for bill in mixed.bills:
        sold[bill["meter"]] += bill["issued_epa_w"] - bill["deposited_epa_w"]
    traded = sum(t.power_w for t in mixed.trades)
    assert sold["ES0021000000000001AA"] == traded
    assert sold["ES0021000000000002AA"] == -traded
    assert sold["ES0021000000000003AA"] == 0


def test_measured_energy_is_the_profiles_in_whole_joules(mixed: RunRecord) -> None:
    cruz = [b["measured_j"] for b in mixed.bills if b["meter"] == "ES0021000000000003AA"]
    assert cruz == [630_270] * INTERVALS  # 700.3 W for 900 s


def test_with_mixing_no_trade_spends_epa_straight_from_an_issue(mixed: RunRecord) -> None:
    assert _origins(mixed) and set(_origins(mixed)) == {"mix"}


def test_without_mixing_trades_spend_what_was_issued(unmixed: RunRecord) -> None:
    assert not unmixed.mix_rounds
    assert _origins(unmixed) and set(_origins(unmixed)) == {"issue"}


def test_the_same_seed_gives_the_same_run() -> None:
    first = run_in_process(config(mixing=True, seed=5), plans())
    again = run_in_process(config(mixing=True, seed=5), plans())
    assert len(first.trades) == len(again.trades)
    assert [b["measured_j"] for b in first.bills] == [b["measured_j"] for b in again.bills]
    assert [e.tx for e in first.ledger] == [e.tx for e in again.ledger]
    other = run_in_process(config(mixing=True, seed=6), plans())
    assert [e.tx for e in other.ledger] != [e.tx for e in first.ledger]


def test_the_community_cover_is_of_the_1_2_5_series() -> None:
    assert [series_up(v) for v in (1, 2, 3, 5, 6, 11, 20, 21, 999, 1_001)] == [
        1, 2, 5, 5, 10, 20, 20, 50, 1_000, 2_000,
    ]  # fmt: skip
    cover = community_cover(plans(), Market(250_000, 60_000, 900))
    assert (cover.epa_w, cover.eca_w) == (2_000, 2_000)  # 1,900 W surplus, 2,000 W deficit
    assert cover.fa == 200_000  # 2,000 W for 900 s at 0.25 EUR/kWh is 125,000 micro-units


def test_a_lone_home_runs_without_a_pool_to_mix_in() -> None:
    lone = dataclasses.replace(config(mixing=True), homes=1)
    record = run_in_process(lone, plans()[:1])
    assert not record.mix_rounds and not record.trades and record.orders == 0
    assert len(record.bills) == INTERVALS


def _txid(tx: dict[str, Any]) -> str:
    import hashlib

    unsigned = {k: v for k, v in tx.items() if k not in ("signature", "signatures")}
    return hashlib.sha256(canonical_json(unsigned)).hexdigest()


def _origins(record: RunRecord) -> list[str]:
    """For each trade transfer (two signers, EPA and ECA), where its EPA input came from,
    walking back through one-signer transfers (the wallet's own moves): `mix` or `issue`."""
    by_id = {_txid(e.tx): e.tx for e in record.ledger}
    found = []
    for tx in by_id.values():
        kinds = {o["asset"]["kind"] for o in tx.get("outputs", ())}
        if tx["type"] != "transfer" or len(tx["signatures"]) != 2 or not kinds >= {"EPA", "ECA"}:
            continue
        source = next(
            by_id[i["tx"]]
            for i in tx["inputs"]
            if by_id[i["tx"]]["outputs"][i["index"]]["asset"]["kind"] == "EPA"
        )
        while source["type"] == "transfer" and len(source["signatures"]) == 1:
            source = by_id[source["inputs"][0]["tx"]]
        found.append("issue" if source["type"] == "issue" else "mix")
    return found


def test_the_privacy_metric_can_fail_without_mixing_and_holds_with_it(
    mixed: RunRecord, unmixed: RunRecord
) -> None:
    """Issue 16: with mixing off every trade is linkable to one meter from the ledger alone;
    with every home mixing none is, and every anonymity set is at least the pool."""
    from simulation.metrics import compute_metrics

    bare = compute_metrics(unmixed).to_wire()["privacy"]
    assert bare["trades"] > 0
    assert bare["linkable_trades"] == bare["trades"] and bare["linkable_trade_fraction"] == 1.0
    assert bare["min_anonymity"] == 1

    private = compute_metrics(mixed).to_wire()["privacy"]
    assert private["trades"] > 0
    assert private["linkable_trades"] == 0 and private["linkable_trade_fraction"] == 0.0
    assert private["min_anonymity"] >= mixed.mix_pool == 3
    assert private["linkable_deposits"] < bare["linkable_deposits"]


def test_a_stopped_run_keeps_what_it_billed_marked_incomplete() -> None:
    import threading

    stop = threading.Event()
    heard: list[int] = []

    def progress(done: int) -> None:
        heard.append(done)
        if done >= 1:
            stop.set()  # as Ctrl-C does

    record = run_in_process(config(mixing=True), plans(), progress=progress, stop=stop)
    assert not record.complete and heard == [1]  # one interval billed, then the stop
    assert {b["interval"] for b in record.bills} == {record.first_interval}
