"""The bid store's request bodies: their schemas in the OpenAPI document are true to the wire,
and whatever a decoder raises on an outsider's body is a refusal (400 `malformed`), never a
500 nor a traceback in the log (issue 14)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from assets import Eca, Epa, Fa, Keypair, Outpoint, Output, Transfer
from assets.codec import tx_to_wire
from assets.signing import sign_transfer
from bidstore.api import create_app
from bidstore.orders import Order, OrderSide, order_to_wire, sign_order
from bidstore.schemas import ORDER, TAKE
from bidstore.schemas import TRADE_TRANSFER as TRANSFER
from bidstore.service import BidStore, Limits
from ledger.client import LedgerClient
from simulation.scenario import Scenario

SELLER = Keypair(bytes([1]) * 32)
TXID = bytes([7]) * 32
BODY_ROUTES = {
    "/v1/orders": ORDER,
    "/v1/takes": TAKE,
    "/v1/trades/{trade_id}/proposal": TRANSFER,
}


def an_order(side: OrderSide = OrderSide.BID, contact: str = "relay") -> dict[str, Any]:
    assets = (
        (Outpoint(TXID, 0),) if side is OrderSide.ASK else (Outpoint(TXID, 0), Outpoint(TXID, 1))
    )
    order = Order(side, 12, 150_000, assets, contact, bytes(32), SELLER.public_key, bytes(32))
    return order_to_wire(sign_order(order, SELLER))


def a_transfer() -> dict[str, Any]:
    transfer = Transfer(
        chain=bytes(32),
        inputs=(Outpoint(TXID, 0), Outpoint(TXID, 3)),
        outputs=(
            Output(Epa(1000, 12, 12), bytes([2]) * 32),
            Output(Eca(1000, 12, 12), bytes([3]) * 32),
            Output(Fa(42), bytes([3]) * 32),
        ),
    )
    return tx_to_wire(sign_transfer(transfer, [SELLER]))


# ---------------------------------------------------------------- schemas


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        (ORDER, an_order(OrderSide.ASK)),
        (ORDER, an_order(OrderSide.BID, "a" * 56 + ".onion")),
        (TAKE, {"order": TXID.hex(), "taker": an_order()}),
        (TAKE, {"order": TXID.hex(), "taker": an_order(), "power_w": 500}),
        (TRANSFER, a_transfer()),
    ],
)
def test_an_honest_body_fits_its_schema(schema: dict[str, Any], body: dict[str, Any]) -> None:
    jsonschema_rs.validate(schema, body)


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        (ORDER, {**an_order(), "extra": 1}),
        (ORDER, {k: v for k, v in an_order().items() if k != "signature"}),
        (ORDER, {**an_order(), "contact": "example.com"}),
        (ORDER, {**an_order(), "price": 0}),
        (TAKE, {"order": "AB" * 32, "taker": an_order()}),
        (TAKE, {"order": TXID.hex(), "taker": an_order(), "power_w": 0}),
        (TRANSFER, {**a_transfer(), "type": "issue"}),
        (TRANSFER, {**a_transfer(), "inputs": []}),
    ],
)
def test_a_body_of_another_shape_does_not(schema: dict[str, Any], body: dict[str, Any]) -> None:
    assert not jsonschema_rs.validator_for(schema).is_valid(body)


@pytest.fixture
def client() -> Iterator[TestClient]:
    """The store's app over no ledger: these bodies are refused before it would be asked."""
    ample = Limits(requests_per_s=1000, burst=1000)
    with LedgerClient("http://127.0.0.1:9", retries=0) as ledger:
        store = BidStore(ledger, Scenario().genesis, limits=ample)
        with TestClient(create_app(store, run=False), raise_server_exceptions=False) as http:
            yield http


def test_every_route_with_a_body_documents_its_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    with_body = {
        path: operation["requestBody"]["content"]["application/json"]["schema"]
        for path, methods in paths.items()
        for operation in methods.values()
        if "requestBody" in operation
    }
    assert with_body == BODY_ROUTES


# ---------------------------------------------------------------- any decoder failure


def _raising(exc: BaseException) -> Callable[..., Any]:
    def decoder(*_: Any) -> Any:
        raise exc

    return decoder


GAPS = [
    UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    RecursionError("maximum recursion depth exceeded"),
    KeyError("taker"),
    OverflowError("int too large"),
]
DECODERS = [  # each route's decoder, as the module that calls it names it
    ("/v1/orders", "bidstore.intake.decode_order"),
    ("/v1/takes", "bidstore.api.parse_json"),
    (f"/v1/trades/{TXID.hex()}/proposal", "bidstore.trades.decode_transaction"),
]


@pytest.mark.parametrize("gap", GAPS, ids=lambda exc: type(exc).__name__)
@pytest.mark.parametrize(("path", "decoder"), DECODERS, ids=[p for p, _ in DECODERS])
def test_whatever_a_decoder_raises_is_a_refusal_without_a_traceback(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    path: str,
    decoder: str,
    gap: Exception,
) -> None:
    monkeypatch.setattr(decoder, _raising(gap))
    with caplog.at_level(logging.INFO):
        answer = client.post(path, content=b'{"a":1}')
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "malformed" and error["message"], error
    assert all(record.exc_info is None for record in caplog.records)
    assert any(type(gap).__name__ in record.getMessage() for record in caplog.records)


def test_a_lone_surrogate_and_deep_nesting_in_a_taker_are_refused(client: TestClient) -> None:
    """The take re-encodes its taker: a lone surrogate there was a 500 (issue 14)."""
    order = TXID.hex()
    for taker in (b'{"x":"\\ud800"}', b'{"x":' + b"[" * 900 + b"]" * 900 + b"}"):
        answer = client.post(
            "/v1/takes", content=b'{"order":"%s","taker":%s}' % (order.encode(), taker)
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "malformed"
