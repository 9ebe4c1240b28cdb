"""JSON schemas of the bid store's request bodies, for its OpenAPI document
(docs/bidstore-api.md). They describe; they do not decide: every route reads its body raw and
its own decoder (`bidstore.orders.decode_order`, `assets.decode_transaction`) checks it, so a
body the schema would refuse still reaches the decoder and gets its refusal. They are here so
that a schema-driven client, or fuzzer, builds bodies of the real shape.
"""

from __future__ import annotations

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
