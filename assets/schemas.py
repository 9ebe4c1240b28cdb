"""JSON schemas of the wire format (DESIGN.md 4 and 7), for the services' OpenAPI documents.

They describe; they do not decide: every route reads its body raw and the strict decoders
(`decode_transaction`, `decode_bill` and the services' own) check it, so a body a schema would
refuse still reaches its decoder and gets its refusal. They are here so that a schema-driven
client, or a fuzzer, builds bodies of the real shape and reaches the real decoders. Pure data.
"""

from __future__ import annotations

from typing import Any

from assets.bill import BILL_TYPE, MAX_BILL_ENTRIES
from assets.codec import (
    MAX_INPUTS,
    MAX_INT,
    MAX_OUTPUTS,
    MAX_REGULATED_METERS,
    MAX_SIGNATURES,
    WIRE_VERSION,
)

HEX32 = "^[0-9a-f]{64}$"
HEX64 = "^[0-9a-f]{128}$"
METER = "^[A-Za-z0-9._-]{1,64}$"


def hex_string(pattern: str) -> dict[str, Any]:
    return {"type": "string", "pattern": pattern}


def integer(low: int, high: int = MAX_INT) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


def strict_object(
    properties: dict[str, Any], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """An object with exactly `properties` (all required but `optional`), nothing else."""
    return {
        "type": "object",
        "properties": properties,
        "required": sorted(properties.keys() - optional),
        "additionalProperties": False,
    }


def array(items: dict[str, Any], least: int, most: int) -> dict[str, Any]:
    return {"type": "array", "items": items, "minItems": least, "maxItems": most}


def constant(value: Any) -> dict[str, Any]:
    return {"type": "integer" if isinstance(value, int) else "string", "enum": [value]}


def request_body(schema: dict[str, Any]) -> dict[str, Any]:
    """The `openapi_extra` of a route whose required JSON body `schema` describes."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


OUTPOINT = strict_object({"tx": hex_string(HEX32), "index": integer(0)})
ASSET = {
    "oneOf": [
        strict_object({"kind": constant("FA"), "amount": integer(1)}),
        strict_object(
            {
                "kind": {"type": "string", "enum": ["EPA", "ECA"]},
                "power": integer(1),
                "start": integer(0),
                "end": integer(0),
            }
        ),
    ]
}
OUTPUT = strict_object({"asset": ASSET, "address": hex_string(HEX32)})
_OUTPUTS = array(OUTPUT, 1, MAX_OUTPUTS)
_HEAD = {"v": constant(WIRE_VERSION), "chain": hex_string(HEX32)}

TRANSFER = strict_object(
    {
        **_HEAD,
        "type": constant("transfer"),
        "inputs": array(OUTPOINT, 1, MAX_INPUTS),
        "outputs": _OUTPUTS,
        "signatures": array(
            strict_object({"public_key": hex_string(HEX32), "signature": hex_string(HEX64)}),
            0,
            MAX_SIGNATURES,
        ),
    }
)
TRANSFER["description"] = (
    "Moves assets; canonical JSON, one signature per owner of an input, in ascending order "
    "of public_key"
)
ISSUE = strict_object(
    {
        **_HEAD,
        "type": constant("issue"),
        "meter": hex_string(METER),
        "nonce": integer(0),
        "outputs": _OUTPUTS,
        "signature": hex_string(HEX64),
    }
)
ISSUE["description"] = "A smart meter issues assets; signed by the meter's registered key"
_PRICE = {"oneOf": [{"type": "null"}, integer(-MAX_INT)]}
REGULATE = strict_object(
    {
        **_HEAD,
        "type": constant("regulate"),
        "time": integer(-MAX_INT),
        "authorize": array(
            strict_object(
                {
                    "meter": hex_string(METER),
                    "public_key": hex_string(HEX32),
                    "max_epa": integer(0),
                    "max_eca": integer(0),
                }
            ),
            0,
            MAX_REGULATED_METERS,
        ),
        "ban": array(hex_string(METER), 0, MAX_REGULATED_METERS),
        "price_consumption": _PRICE,
        "price_production": _PRICE,
        "nonce": integer(0),
        "signature": hex_string(HEX64),
    }
)
REGULATE["description"] = "The DSO's regulation; signed by a DSO key of the genesis"
TRANSACTION = {
    "oneOf": [TRANSFER, ISSUE, REGULATE],
    "description": "A transaction as its canonical JSON (keys sorted, no spaces, integers only)",
}


def _described(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description}


# The route reads a bill's raw bytes, because the signature covers their canonical form.
BILL = strict_object(
    {
        **_HEAD,
        "type": constant(BILL_TYPE),
        "meter": hex_string(METER),
        "interval": _described(integer(0), "the billed interval"),
        "closed_height": _described(integer(0), "the ledger height the bill closed at"),
        "measured_j": _described(
            integer(-MAX_INT), "measured net energy, J (consumption positive)"
        ),
        "issued_epa_w": _described(integer(0), "EPA issued to the owner covering the interval, W"),
        "deposited_epa_w": _described(integer(0), "EPA deposited covering the interval, W"),
        "fa_issued": _described(integer(0), "FA issued during the interval, micro-units"),
        "fa_deposited": _described(integer(0), "FA deposited during the interval, micro-units"),
        "price_consumption": _described(_PRICE, "micro-units per kWh in force (null: none)"),
        "price_production": _described(_PRICE, "micro-units per kWh in force (null: none)"),
        "energy_j": _described(integer(-MAX_INT), "billed energy E_t, J"),
        "amount": _described(integer(-MAX_INT), "B_t, micro-units owed (negative: a credit)"),
        "issues": array(hex_string(HEX32), 0, MAX_BILL_ENTRIES),
        "deposits": array(OUTPOINT, 0, MAX_BILL_ENTRIES),
        "signature": hex_string(HEX64),
    }
)
BILL["description"] = (
    "A meter's interval bill (DESIGN.md section 7); canonical JSON, signed by the meter's "
    "registered key"
)
