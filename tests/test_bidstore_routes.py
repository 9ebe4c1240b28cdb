"""The order path served ahead of FastAPI (`bidstore.api.OrderRoutes`, issue 21) answers as the
FastAPI routes did: a posted order's answer fits its model and counts in the metrics, a refusal
has the common shape, another method is 405 with `Allow`, and a challenge query the lean path
does not read is left to FastAPI's validation."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from assets import Epa, Keypair, Outpoint, Output
from bidstore.api import create_app
from bidstore.orders import Order, OrderSide, encode_order, order_id, sign_order
from bidstore.schemas import ChallengesView, PostedOrder
from bidstore.service import BidStore, Limits
from ledger.client import LedgerClient
from simulation.scenario import Scenario

OWNER = Keypair(bytes([5]) * 32)
ASSET = Outpoint(bytes([9]) * 32, 0)
INTERVAL = 1_000_000  # far ahead of the store's clock


@pytest.fixture
def store() -> Iterator[BidStore]:
    """A store over no ledger, `ASSET` (an EPA of `OWNER`) in its index as if followed."""
    with LedgerClient("http://127.0.0.1:9", retries=0) as ledger:
        store = BidStore(ledger, Scenario().genesis, limits=Limits(burst=1_000))
        store.index.unspent[ASSET] = Output(Epa(500, INTERVAL, INTERVAL), OWNER.public_key)
        yield store


@pytest.fixture
def http(store: BidStore) -> Iterator[TestClient]:
    with TestClient(create_app(store, run=False)) as client:
        yield client


def _orders(store: BidStore, outcome: str) -> float | None:
    return store.registry.get_sample_value("petra_bidstore_orders_total", {"outcome": outcome})


def _ask(http: TestClient, price: int = 150_000) -> tuple[Order, bytes]:
    challenge = bytes.fromhex(http.post("/v1/challenges").json()["challenge"])
    owner = OWNER.public_key
    unsigned = Order(OrderSide.ASK, INTERVAL, price, (ASSET,), "relay", owner, owner, challenge)
    order = sign_order(unsigned, OWNER)
    return order, encode_order(order)


def test_a_posted_order_is_answered_by_its_model_and_counted(
    http: TestClient, store: BidStore
) -> None:
    order, raw = _ask(http)
    answer = http.post("/v1/orders", content=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 201, answer.text
    assert answer.headers["content-type"] == "application/json"
    posted = PostedOrder.model_validate_json(answer.content)
    assert posted.id == order_id(order).hex() == hashlib.sha256(raw).hexdigest()
    assert (posted.side, posted.power, posted.interval) == ("ask", 500, INTERVAL)
    assert posted.replaced == []
    assert store.book.get(order_id(order)) is not None
    assert _orders(store, "accepted") == 1


def test_a_newer_order_on_the_same_asset_names_the_one_it_replaces(http: TestClient) -> None:
    first, raw = _ask(http)
    assert http.post("/v1/orders", content=raw).status_code == 201
    _, again = _ask(http, price=160_000)
    answer = http.post("/v1/orders", content=again)
    assert answer.status_code == 201, answer.text
    assert answer.json()["replaced"] == [order_id(first).hex()]


def test_a_refused_order_has_the_common_shape_and_is_counted(
    http: TestClient, store: BidStore
) -> None:
    _, raw = _ask(http)
    assert http.post("/v1/orders", content=raw).status_code == 201
    replayed = http.post("/v1/orders", content=raw)  # its challenge is used
    assert replayed.status_code == 401
    assert replayed.json() == {
        "error": {"code": "bad_challenge", "message": "the challenge is unknown, expired or used"}
    }
    assert _orders(store, "refused") == 1 and _orders(store, "accepted") == 1


def test_another_method_on_the_orders_path_is_405_with_allow(http: TestClient) -> None:
    answer = http.get("/v1/orders")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    assert answer.json()["error"]["code"] == "bad_request"


def test_challenges_with_a_plain_count_or_none(http: TestClient) -> None:
    for query, count in (("", 1), ("?count=7", 7), ("?count=100", 100)):
        answer = http.post(f"/v1/challenges{query}")
        assert answer.status_code == 201, answer.text
        view = ChallengesView.model_validate_json(answer.content)
        assert len(view.challenges) == count and view.challenge == view.challenges[0]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("count=0", "greater than or equal to 1"),
        ("count=101", "less than or equal to 100"),
        ("count=two", "valid integer"),
    ],
)
def test_a_challenge_query_out_of_range_is_refused_by_validation(
    http: TestClient, query: str, fragment: str
) -> None:
    answer = http.post(f"/v1/challenges?{query}")
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "bad_request" and fragment in error["message"], error
