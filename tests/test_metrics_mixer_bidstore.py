"""Health and metrics of the mixer coordinator and the bid store (issue 20): each one's
registry scraped and read back by prometheus-client's own text parser, the figures moving as
peers join, runs end, orders are posted or refused and trades settle; `/healthz` and `/readyz`
over FastAPI's test client, ready only while the ledger answered lately and, for the bid
store, its follower is caught up. The ledger node is faked (`Head`, as the services'
`ledger.head_watch.HeadWatch` asks it); tests/integration/test_health_mixer_bidstore.py runs
the real processes."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_bidstore_chains import EPOCH, INTERVAL_S, Clock, Market, T
from test_mixer_coordinator import (
    CHAIN,
    NOW,
    START_S,
    TIMEOUT_S,
    FakeLedger,
    join_all,
    join_body,
    make_wallets,
    pump,
)
from test_mixer_coordinator import Clock as MixerClock

from assets import Eca, Epa, Fa, Keypair
from bidstore.api import create_app as bidstore_app
from bidstore.orders import OrderSide, payment
from bidstore.service import BidStore, Limits
from ledger.block_follower import BlockFollower
from ledger.blocks import SignedHead
from ledger.client import LedgerClient, LedgerUnavailable
from ledger.head_watch import MAX_LAG_BLOCKS, HeadWatch
from mixer.api import create_app as mixer_app
from mixer.coordinator import Coordinator
from simulation.scenario import Scenario, pay


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of `registry`'s text exposition, parsed back: (name, labels) -> value."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return scrape(registry)[(name, tuple(sorted(labels.items())))]


class Head:
    """A ledger node's head as the watch asks it (`ledger.head_watch.HeadSource`): its
    height, or a failure."""

    base_url = "http://ledger.test"

    def __init__(self, height: int = 0) -> None:
        self.height = height
        self.down = False

    def head(self) -> SignedHead | None:
        if self.down:
            raise LedgerUnavailable("cannot reach the ledger node: connection refused")
        return cast(SignedHead, SimpleNamespace(header=SimpleNamespace(height=self.height)))

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- the mixer


@pytest.fixture
def fake_ledger() -> FakeLedger:
    return FakeLedger()


def mixer_of(ledger: FakeLedger, clock: MixerClock, **settings: Any) -> Coordinator:
    options: dict[str, Any] = {"start_s": START_S, "timeout_s": TIMEOUT_S, "clock": clock}
    return Coordinator(ledger, CHAIN, **{**options, **settings})


def test_a_pool_with_a_silent_peer_moves_the_mixers_figures(fake_ledger: FakeLedger) -> None:
    clock = MixerClock()
    coordinator = mixer_of(fake_ledger, clock, max_peers=4)
    registry = coordinator.registry
    assert value(registry, "petra_mixer_pools", state="forming") == 0
    assert value(registry, "petra_mixer_rounds_total", outcome="landed") == 0
    wallets = make_wallets(fake_ledger, 4)
    wallets[2].silent = True
    join_all(coordinator, wallets)  # the fourth join fills the pool: it starts
    pump(coordinator, wallets)
    assert value(registry, "petra_mixer_peers_joined_total") == 4
    assert value(registry, "petra_mixer_pools", state="running") == 1

    clock.now += TIMEOUT_S
    coordinator.tick()
    pump(coordinator, wallets)
    figures = scrape(registry)
    assert figures[("petra_mixer_rounds_total", (("outcome", "timed_out"),))] == 1
    assert figures[("petra_mixer_rounds_total", (("outcome", "landed"),))] == 1
    assert figures[("petra_mixer_pools", (("state", "landed"),))] == 1
    assert figures[("petra_mixer_pools", (("state", "running"),))] == 0
    assert figures[("petra_mixer_pools_ended_total", (("outcome", "landed"),))] == 1
    assert figures[("petra_mixer_round_seconds_count", ())] == 1
    assert figures[("petra_mixer_round_seconds_sum", ())] == TIMEOUT_S  # start to landed
    assert figures[("petra_mixer_round_seconds_bucket", (("le", "5.0"),))] == 0
    assert figures[("petra_mixer_round_seconds_bucket", (("le", "10.0"),))] == 1


def test_a_pool_that_never_starts_is_counted_unstarted(fake_ledger: FakeLedger) -> None:
    clock = MixerClock()
    coordinator = mixer_of(fake_ledger, clock, min_peers=3)
    join_all(coordinator, make_wallets(fake_ledger, 2))
    clock.now += START_S
    coordinator.tick()
    figures = scrape(coordinator.registry)
    assert figures[("petra_mixer_pools_ended_total", (("outcome", "unstarted"),))] == 1
    assert figures[("petra_mixer_pools", (("state", "failed"),))] == 1
    assert sum(v for (n, _), v in figures.items() if n == "petra_mixer_rounds_total") == 0


@pytest.fixture
def mixer_http(fake_ledger: FakeLedger) -> Iterator[tuple[TestClient, Coordinator, Head]]:
    head = Head(5)
    coordinator = Coordinator(
        fake_ledger, CHAIN, min_peers=2, ledger_watch=HeadWatch(head, every_s=3600)
    )
    with TestClient(mixer_app(coordinator, ticker=False)) as http:
        assert coordinator.ledger_watch is not None
        coordinator.ledger_watch.ask()  # as its lifespan's watch does, without waiting for it
        yield http, coordinator, head


def test_the_mixers_refusals_are_counted_by_code(
    mixer_http: tuple[TestClient, Coordinator, Head], fake_ledger: FakeLedger
) -> None:
    http, coordinator, _ = mixer_http
    (wallet,) = make_wallets(fake_ledger, 1)
    body = join_body(wallet.key, wallet.outpoint, at=NOW)  # a clock far from the app's
    assert http.post("/v1/join", json=body).json()["error"]["code"] == "stale_request"
    forged = {**join_body(wallet.key, wallet.outpoint), "signature": "00" * 64}
    assert http.post("/v1/join", json=forged).status_code == 401
    assert http.post("/v1/join", json=forged).status_code == 401
    assert http.get("/v1/pools/" + "ab" * 16).status_code == 404
    registry = coordinator.registry
    assert value(registry, "petra_mixer_refusals_total", code="stale_request") == 1
    assert value(registry, "petra_mixer_refusals_total", code="bad_signature") == 2
    assert value(registry, "petra_mixer_refusals_total", code="not_found") == 1
    assert value(registry, "petra_mixer_ledger_height") == 5
    assert value(registry, "process_resident_memory_bytes") > 0  # the process's own figures


def test_the_mixer_is_ready_while_the_ledger_answers(
    mixer_http: tuple[TestClient, Coordinator, Head],
) -> None:
    http, coordinator, head = mixer_http
    assert http.get("/healthz").json() == {"status": "alive"}
    assert http.get("/readyz").json() == {"status": "ready", "checks": {"ledger": "ok"}}
    head.down = True
    assert coordinator.ledger_watch is not None
    coordinator.ledger_watch.ask()
    answer = http.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "not_ready"
    assert "cannot reach the ledger" in answer.json()["error"]["checks"]["ledger"]
    assert http.get("/healthz").status_code == 200  # alive all the same
    head.down = False
    coordinator.ledger_watch.ask()
    assert http.get("/readyz").status_code == 200


def test_a_mixer_over_a_real_ledger_client_watches_it() -> None:
    with LedgerClient("http://127.0.0.1:9") as client:
        coordinator = Coordinator(client, CHAIN)
        assert coordinator.ledger_watch is not None
        assert coordinator.ledger_watch.client is not client  # its own: short, no retries
        coordinator.ledger_watch.ask()  # nothing listens on port 9
        problem = coordinator.ledger_problem()
        coordinator.ledger_watch.stop()
    assert problem is not None and "does not answer" in problem


# ----------------------------------------------------------------------------- the bid store


@pytest.fixture
def shop() -> Iterator[tuple[Market, TestClient, Head]]:
    """A `test_bidstore_chains` market behind the store's app, its ledger faked by `Head`."""
    scenario = Scenario(epoch=EPOCH, interval_s=INTERVAL_S)
    clock, head = Clock(), Head(0)
    ample = Limits(max_orders_per_owner=4, requests_per_s=1000, burst=1000)
    with LedgerClient("http://127.0.0.1:9") as ledger:
        store = BidStore(
            ledger,
            scenario.genesis,
            gate_s=0,
            limits=ample,
            clock=clock,
            wall_clock=clock,
            step_timeout_s=30,
            ledger_watch=HeadWatch(head),
        )
        with TestClient(bidstore_app(store, run=False)) as http:
            yield Market(store, scenario, clock), http, head


def post(http: TestClient, raw: bytes) -> Any:
    return http.post("/v1/orders", content=raw, headers={"Content-Type": "application/json"})


def test_orders_and_trades_move_the_bid_stores_figures(
    shop: tuple[Market, TestClient, Head],
) -> None:
    market, http, _ = shop
    registry = market.store.registry
    assert value(registry, "petra_bidstore_orders_total", outcome="accepted") == 0
    seller = Keypair.generate()
    (epa,) = market.issue(pay(Epa(1000, T, T), seller))
    ask = market.signed(seller, OrderSide.ASK, 100_000, [epa])
    assert post(http, ask).status_code == 201
    assert post(http, ask).json()["error"]["code"] == "bad_challenge"  # its challenge is used
    assert post(http, b"{").status_code == 400
    buyer = Keypair.generate()
    funds = payment(1000, INTERVAL_S, 150_000)
    bid_assets = market.issue(pay(Eca(1000, T, T), buyer), pay(Fa(funds), buyer))
    assert post(http, market.signed(buyer, OrderSide.BID, 150_000, bid_assets)).status_code == 201
    figures = scrape(registry)
    assert figures[("petra_bidstore_orders_total", (("outcome", "accepted"),))] == 2
    assert figures[("petra_bidstore_orders_total", (("outcome", "refused"),))] == 2
    assert figures[("petra_bidstore_refusals_total", (("code", "bad_challenge"),))] == 1
    assert figures[("petra_bidstore_refusals_total", (("code", "malformed"),))] == 1
    assert figures[("petra_bidstore_open_orders", (("side", "ask"),))] == 1
    assert figures[("petra_bidstore_open_orders", (("side", "bid"),))] == 1

    (trade,) = market.store.clear(T)["trades"]
    assert value(registry, "petra_bidstore_trades_total", status="open") == 1
    assert value(registry, "petra_bidstore_open_orders", side="ask") == 0
    market.settle(trade, buyer, seller)
    figures = scrape(registry)
    assert figures[("petra_bidstore_trades_total", (("status", "settled"),))] == 1
    assert figures[("petra_bidstore_trades_total", (("status", "failed"),))] == 0


def test_a_silent_buyer_is_counted_abandoned(shop: tuple[Market, TestClient, Head]) -> None:
    market, _, _ = shop
    market.seller(1000, 100_000)
    market.buyer(1000, 150_000)
    market.store.clear(T)
    market.clock.now += 31  # past the buyer's step
    market.store.tick()
    assert value(market.store.registry, "petra_bidstore_trades_total", status="abandoned") == 1


def test_the_bid_store_is_ready_while_it_follows_the_ledger_caught_up(
    shop: tuple[Market, TestClient, Head],
) -> None:
    market, http, head = shop
    store = market.store
    answer = http.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["error"]["checks"]["ledger"] == "the store does not follow the ledger yet"
    assert http.get("/healthz").status_code == 200

    store.follower = BlockFollower(store.ledger, store.genesis, store.on_block)  # not started
    store.ledger_watch.ask()
    assert http.get("/readyz").json() == {"status": "ready", "checks": {"ledger": "ok"}}
    assert value(store.registry, "petra_bidstore_ledger_lag_blocks") == 0

    head.height = MAX_LAG_BLOCKS + 5  # the ledger moved on; the follower has not
    store.ledger_watch.ask()
    answer = http.get("/readyz")
    assert answer.status_code == 503
    assert "15 blocks behind" in answer.json()["error"]["message"]
    assert value(store.registry, "petra_bidstore_ledger_lag_blocks") == MAX_LAG_BLOCKS + 5
    assert value(store.registry, "petra_bidstore_ledger_height") == 0

    store.follower.last_error = "cannot reach the ledger node"
    assert "cannot follow the ledger" in http.get("/readyz").json()["error"]["message"]
    store.follower.last_error = None
    head.height, head.down = 0, True
    store.ledger_watch.ask()
    assert "does not answer" in http.get("/readyz").json()["error"]["message"]
    head.down = False
    store.ledger_watch.ask()
    assert http.get("/readyz").status_code == 200
