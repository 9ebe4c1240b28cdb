"""JSON schemas of the bid store's request bodies, for its OpenAPI document
(docs/bidstore-api.md). They describe; they do not decide: every route reads its body raw and
its own decoder (`bidstore.orders.decode_order`, `assets.decode_transaction`) checks it, so a
body the schema would refuse still reaches the decoder and gets its refusal. They are here so
that a schema-driven client, or fuzzer, builds bodies of the real shape.

The answers are pydantic models, each route's response model: they describe every answer in
the OpenAPI document and shape it field for field as the store builds it. A transaction or an
output inside an answer is its wire JSON (`assets.codec`), named and described here, not
modelled again.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assets.codec import WIRE_VERSION
from assets.schemas import (
    HEX32,
    HEX64,
    OUTPOINT,
    TRANSFER,
    array,
    constant,
    hex_string,
    integer,
    strict_object,
)
from bidstore.orders import MAX_FA_INPUTS, MAX_PRICE, MIN_PRICE, RELAY

ORDER = strict_object(
    {
        "v": constant(WIRE_VERSION),
        "side": {"type": "string", "enum": ["ask", "bid"]},
        "interval": integer(0),
        "price": integer(MIN_PRICE, MAX_PRICE),
        "assets": array(OUTPOINT, 1, 1 + MAX_FA_INPUTS),
        "contact": {"type": "string", "pattern": f"^({RELAY}|[a-z2-7]{{56}}\\.onion)$"},
        "receive": hex_string(HEX32),
        "owner": hex_string(HEX32),
        "challenge": hex_string(HEX32),
        "signature": hex_string(HEX64),
    }
)
ORDER["description"] = "An ask or a bid: canonical JSON (keys sorted, no spaces), signed by owner"

TAKE = strict_object(
    {"order": hex_string(HEX32), "taker": ORDER, "power_w": integer(1)},
    optional=frozenset({"power_w"}),
)
TAKE["description"] = "The resting order's id, the taker's signed order, watts (default all)"

TRADE_TRANSFER = {
    **TRANSFER,
    "description": "The trade's transfer, canonical JSON, signed for the proposer's inputs",
}


# ------------------------------------------------------------------------------ answers

Seconds = Annotated[int | float, Field(description="seconds, as configured")]
Hex = Annotated[str, Field(description="lowercase hex")]


class Answer(BaseModel):
    """A route's answer. Extra fields are refused, so an answer the model does not describe
    fails its route's tests instead of losing a field."""

    model_config = ConfigDict(extra="forbid")


class Status(Answer):
    chain: Hex
    interval: int = Field(description="The interval the store's clock is in")
    interval_s: int
    epoch: int = Field(description="The Unix time interval 0 starts at (the genesis's)")
    currency: str = Field(description="What prices and payments are micro-units of")
    gate_s: Seconds
    open_orders: int
    open_trades: int = Field(description="Trades open or proposed")
    height: int = Field(description="The ledger height the store has followed")


class ChallengesView(Answer):
    challenge: Hex = Field(description="The first of `challenges`")
    challenges: list[Hex]
    expires_in_s: Seconds


class EntryView(Answer):
    """An order as the book shows it: anonymous but for its contact."""

    id: Hex
    side: Literal["ask", "bid"]
    power: int = Field(description="watts in its interval")
    price: int = Field(description="micro-units per kWh")
    contact: str = Field(description="An onion address, or the store's relay")


class PostedOrder(EntryView):
    interval: int
    replaced: list[Hex] = Field(description="The owner's orders on the same assets it replaced")


class OrderView(EntryView):
    interval: int
    status: Literal["open", "trading", "done"]
    trades: list[Hex]


class OpenOrder(EntryView):
    interval: int
    start: int = Field(description="The first interval it covers (its interval)")
    end: int = Field(description="The last interval it covers (its interval)")


class OpenOrders(Answer):
    orders: list[OpenOrder]


class IntervalBook(Answer):
    interval: int
    asks: list[EntryView]
    bids: list[EntryView]


class MatchView(Answer):
    ask: Hex | None
    bid: Hex | None
    power: int
    price: int


class AuctionView(Answer):
    interval: int
    price: int | None = Field(description="The clearing price; null if no orders cross")
    volume: int = Field(description="watts matched")
    matches: list[MatchView]


class InputView(Answer):
    tx: Hex
    index: int


class OutputView(Answer):
    asset: dict[str, Any] = Field(description="The asset's wire JSON (assets.codec)")
    address: Hex


class TermsView(Answer):
    inputs: list[InputView]
    paid: list[OutputView]
    change: list[OutputView]
    transfer: dict[str, Any] = Field(description="The unsigned transfer's wire JSON")


class TradeView(Answer):
    id: Hex
    status: Literal["open", "proposed", "settled", "failed", "expired", "abandoned"]
    interval: int
    ask: Hex
    bid: Hex
    power: int
    price: int
    payment: int = Field(description="micro-units of FA the buyer pays")
    terms: TermsView
    proposer: Literal["seller", "buyer"]
    txid: Hex | None = Field(description="The proposal's id, the settling transfer's once settled")


class PartyTradeView(TradeView):
    role: Literal["seller", "buyer"] = Field(description="The reader's side of the trade")
    proposal: dict[str, Any] | None = Field(
        description="The proposer's partly signed transfer's wire JSON, once proposed"
    )


class Clearing(Answer):
    interval: int
    price: int | None
    trades: list[TradeView]
