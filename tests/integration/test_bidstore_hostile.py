"""Issue 14 against a real `petra bidstore serve` process over a real ledger node: hostile input
never stops the bid store.

- A flood of challenges, each request on a fresh connection as every Tor stream is, once
  evicted a victim's challenge (100 000 were kept, 100 a request, no budget for the count):
  the victim's order then failed `bad_challenge`. Now challenges are kept nowhere until
  redeemed, and a `count` of N costs N of the request budget.
- The shared corpus of hostile bodies (tests/hostile.py) and hypothesis-generated JSON, bare
  and inside the shapes the routes read, sent to every route with a body: no 5xx, the common
  error shape, no traceback in the answer or the log, and the store trading honestly after.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hostile import (
    assert_no_traceback,
    assert_refused_cleanly,
    hostile_json,
    json_bytes,
    send_corpus,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets import Keypair, Outpoint, Transfer, encode_transaction
from assets.codec import tx_from_wire
from assets.signing import sign_transfer
from bidstore.orders import Order, OrderSide, encode_order, order_to_wire, sign_order
from simulation.processes import free_port, start_petra, stop, wait_serving

from .test_bidstore import (
    AHEAD,
    Chain,
    Parties,
    chain_fixture,  # noqa: F401  (its ledger node, for this module too)
    funded,
    order,
)

OLD_CAPACITY = 100_000  # challenges the store kept before issue 14, the oldest evicted first
MAX_COUNT = 100  # challenges one request may take
FLOOD_S = 180  # the flood must pass the old capacity within this, or the test fails
HOSTILE_EXAMPLES = 150


@dataclass
class Store:
    url: str
    log: Path


@pytest.fixture(scope="module", name="store")
def store_fixture(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """`petra bidstore serve` with its default budgets per connection (20 a second, 100 at
    once) and a service budget large enough for a flood past the old capacity."""
    log = tmp_path_factory.mktemp("bidstore-hostile") / "bidstore.log"
    port = free_port()
    process: subprocess.Popen[bytes] = start_petra(
        *("bidstore", "serve", "--genesis", str(chain.genesis), "--ledger", chain.url),
        *("--port", str(port), "--service-rate", "1000000", "--service-burst", "1000000"),
        *("--step-timeout-s", "600"),
        log=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url, process, log)
        yield Store(url, log)
    finally:
        stop(process)


def streams(url: str) -> httpx.Client:
    """A client whose every request opens a connection of its own, as every Tor stream to the
    onion service is: each gets a fresh connection budget."""
    return httpx.Client(
        base_url=url,
        headers={"Connection": "close"},
        limits=httpx.Limits(max_keepalive_connections=0),
        timeout=60,
    )


def challenges_taken(url: str, at_least: int, deadline: float) -> int:
    """Challenges taken by requests of `MAX_COUNT` each, each on a fresh connection, four at
    a time, until `at_least` are taken or the monotonic clock passes `deadline`. A request
    may be refused 429 when its ephemeral port was just used by a connection that spent its
    budget (budgets are kept per host and port): the flood goes on until it is past."""

    def take(_: int) -> int:
        answer = httpx.post(
            f"{url}/v1/challenges",
            params={"count": MAX_COUNT},
            headers={"Connection": "close"},
            timeout=60,
        )
        return len(answer.json()["challenges"]) if answer.status_code == 201 else 0

    taken = 0
    with ThreadPoolExecutor(4) as pool:
        while taken <= at_least and time.monotonic() < deadline:
            taken += sum(pool.map(take, range(100)))
    return taken


# ---------------------------------------------------------------- challenge flushing


def test_a_victims_challenge_survives_a_flood_of_challenges(chain: Chain, store: Store) -> None:
    t = chain.now() + AHEAD
    parties = funded(chain, 1000, 1000, t)
    with streams(store.url) as http:
        victim = order(http, parties.seller, OrderSide.ASK, t, 150_000, [parties.epa])
        taken = challenges_taken(store.url, OLD_CAPACITY, time.monotonic() + FLOOD_S)
        assert taken > OLD_CAPACITY, f"the flood took only {taken} challenges"
        answer = http.post("/v1/orders", content=encode_order(victim))
    assert answer.status_code == 201, answer.text
    assert_no_traceback(store.log)


def test_a_count_of_challenges_is_charged_as_that_many_requests(store: Store) -> None:
    """One connection, one request of 100 challenges: its burst of 100 is spent."""
    with httpx.Client(base_url=store.url, timeout=30) as http:
        taken = http.post("/v1/challenges", params={"count": MAX_COUNT})
        assert taken.status_code == 201, taken.text
        after = http.post("/v1/challenges")
    assert after.status_code == 429, after.text
    assert after.json()["error"]["code"] == "rate_limited"
    assert int(after.headers["retry-after"]) >= 1


# ---------------------------------------------------------------- hostile bodies


@dataclass
class Trade:
    id: str
    parties: Parties
    terms: dict[str, Any]


@pytest.fixture(name="trade")
def trade_fixture(chain: Chain, store: Store) -> Trade:
    """An open trade: a seller's ask taken by a buyer, its proposal to come."""
    t = chain.now() + AHEAD
    parties = funded(chain, 1000, 1000, t)
    with streams(store.url) as http:
        ask = order(http, parties.seller, OrderSide.ASK, t, 150_000, [parties.epa])
        posted = http.post("/v1/orders", content=encode_order(ask))
        assert posted.status_code == 201, posted.text
        bid = order(http, parties.buyer, OrderSide.BID, t, 200_000, [parties.eca, parties.fa])
        take = {"order": posted.json()["id"], "taker": order_to_wire(bid)}
        taken = http.post("/v1/takes", json=take)
    assert taken.status_code == 201, taken.text
    return Trade(taken.json()["id"], parties, taken.json()["terms"])


def routes(trade: Trade) -> list[str]:
    """Every POST route, those with a body first."""
    return [
        "/v1/orders",
        "/v1/takes",
        f"/v1/trades/{trade.id}/proposal",
        "/v1/challenges",
        "/v1/auctions/1/clear",
    ]


def assert_trades_honestly(chain: Chain, store: Store, trade: Trade) -> None:
    """An honest order is accepted, and the open trade's honest proposal too."""
    t = chain.now() + AHEAD
    parties = funded(chain, 500, 1000, t)
    with streams(store.url) as http:
        ask = order(http, parties.seller, OrderSide.ASK, t, 120_000, [parties.epa])
        posted = http.post("/v1/orders", content=encode_order(ask))
        assert posted.status_code == 201, posted.text
        unsigned = tx_from_wire(trade.terms["transfer"])
        assert isinstance(unsigned, Transfer)
        proposal = sign_transfer(unsigned, [trade.parties.buyer])
        proposed = http.post(
            f"/v1/trades/{trade.id}/proposal", content=encode_transaction(proposal)
        )
    assert proposed.status_code == 201, proposed.text


def test_the_hostile_corpus_gets_clean_refusals_on_every_route(
    chain: Chain, store: Store, trade: Trade
) -> None:
    with streams(store.url) as http:
        failures = [line for path in routes(trade) for line in send_corpus(http, "POST", path)]
    assert not failures, "\n".join(failures)
    assert_trades_honestly(chain, store, trade)
    assert_no_traceback(store.log)


def with_hostile_field(body: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """`body` with one of its fields hostile JSON."""
    return st.builds(
        lambda key, value: {**body, key: value}, st.sampled_from(sorted(body)), hostile_json()
    )


def hostile_requests(trade: Trade) -> st.SearchStrategy[tuple[str, bytes]]:
    """A route and a body: hostile JSON bare, or in place of one field of the shape the route
    reads (an order's, a take's or its taker's, a transfer's), so that it gets past the first
    checks to the decoders behind them."""
    signer = Keypair(bytes([5]) * 32)  # a fixed key: the same bodies on every run
    outpoint = (Outpoint(bytes(32), 0),)
    unsigned = Order(
        OrderSide.ASK, 10**6, 1, outpoint, "relay", bytes(32), signer.public_key, bytes(32)
    )
    an_order = order_to_wire(sign_order(unsigned, signer))
    a_take = {"order": "00" * 32, "taker": an_order}
    a_transfer = trade.terms["transfer"]
    proposal = f"/v1/trades/{trade.id}/proposal"
    return st.one_of(
        st.tuples(st.sampled_from(routes(trade)[:3]), hostile_json().map(json_bytes)),
        st.tuples(st.just("/v1/orders"), with_hostile_field(an_order).map(json_bytes)),
        st.tuples(st.just("/v1/takes"), with_hostile_field(a_take).map(json_bytes)),
        st.tuples(
            st.just("/v1/takes"),
            with_hostile_field(an_order).map(lambda taker: json_bytes({**a_take, "taker": taker})),
        ),
        st.tuples(st.just(proposal), with_hostile_field(a_transfer).map(json_bytes)),
    )


def test_hypothesis_generated_json_gets_clean_refusals_on_every_route(
    chain: Chain, store: Store, trade: Trade
) -> None:
    with streams(store.url) as http:

        @given(request=hostile_requests(trade))
        @settings(
            max_examples=HOSTILE_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,  # the same requests on every run: no flaky failures
            suppress_health_check=list(HealthCheck),
        )
        def send(request: tuple[str, bytes]) -> None:
            path, body = request
            answer = http.post(path, content=body, headers={"content-type": "application/json"})
            assert_refused_cleanly(answer, f"POST {path} {body[:300]!r}")

        send()
    assert_trades_honestly(chain, store, trade)
    assert_no_traceback(store.log)
