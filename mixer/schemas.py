"""JSON schemas of the coordinator's request bodies and the queries of its long poll and of
what is forming, for its OpenAPI document (docs/mixer-api.md). They describe; they do not
decide: every route reads its body raw and its own decoder (`mixer.coordinator.parse_join`,
`_envelope`, `decode_message`, `parse_poll`, `parse_forming`) checks it, so a request the
schema would refuse still reaches the decoder and gets its refusal. They are here so that a
schema-driven client, or fuzzer, builds requests of the real shape.
"""

from __future__ import annotations

from typing import Any

from assets.schemas import ASSET, hex_string, integer, strict_object
from mixer.auth import NONCE_BYTES
from mixer.coordinator import DEFAULT_WAIT_S, KINDS, MAX_WAIT_S
from mixer.protocol import KEY_BYTES, MAX_EVIDENCE, MAX_PEERS, SIGNATURE_BYTES, Kind

HEX32 = f"^[0-9a-f]{{{2 * KEY_BYTES}}}$"
HEX64 = f"^[0-9a-f]{{{2 * SIGNATURE_BYTES}}}$"
NONCE = f"^[0-9a-f]{{{2 * NONCE_BYTES}}}$"

JOIN = strict_object(
    {
        "v": {"type": "integer", "enum": [1]},
        "asset": ASSET,
        "input": strict_object(
            {"tx": hex_string(HEX32), "index": integer(0), "owner": hex_string(HEX32)}
        ),
        "at": integer(0),
        "signature": hex_string(HEX64),
    }
)
JOIN["description"] = "An input for the pool of its denomination, signed by its owner"

_HEX_LIST = {"type": "array", "items": {"type": "string", "pattern": "^([0-9a-f]{2})+$"}}
MESSAGE = strict_object(
    {
        "v": {"type": "integer", "enum": [1]},
        "session": hex_string(HEX32),
        "sender": integer(0, MAX_PEERS - 1),
        "kind": {"type": "string", "enum": [str(kind) for kind in Kind]},
        "body": {
            "type": "object",
            "description": "the kind's fields: ek, ciphertexts, outputs, digest, signature, "
            "or reason, dk, evidence and cause",
            "properties": {
                "ek": hex_string(HEX32),
                "ciphertexts": {**_HEX_LIST, "minItems": 1, "maxItems": MAX_PEERS},
                "outputs": {**_HEX_LIST, "minItems": 1, "maxItems": MAX_PEERS},
                "digest": hex_string(HEX32),
                "signature": hex_string(HEX64),
                "reason": {"type": "string", "maxLength": 500},
                "dk": {"oneOf": [hex_string(HEX32), {"type": "null"}]},
                "evidence": {
                    "type": "array",
                    "items": {"type": "object"},
                    "maxItems": MAX_EVIDENCE,
                },
                "cause": {"oneOf": [hex_string(HEX32), {"type": "null"}]},
            },
            "minProperties": 1,
            "maxProperties": 4,
        },
        "signature": hex_string(HEX64),
    }
)
ENVELOPE = {
    "type": "object",
    "properties": {
        "message": MESSAGE,
        "to": {
            "oneOf": [
                {"type": "null"},
                {"type": "array", "items": integer(0, MAX_PEERS - 1), "maxItems": MAX_PEERS},
            ]
        },
    },
    "required": ["message"],
    "additionalProperties": False,
    "description": "A protocol message signed by its sender, and the peers it is for",
}


def _query(name: str, schema: dict[str, Any], required: bool, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


POLL_QUERY = {
    "parameters": [
        _query("peer", hex_string(HEX32), True, "the owner key of the peer's input"),
        _query("after", integer(0), False, "the seq after which events are wanted (default 0)"),
        _query(
            "wait",
            {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
            False,
            f"seconds to wait for an event (default {DEFAULT_WAIT_S:g}, at most {MAX_WAIT_S:g})",
        ),
        _query("at", integer(0), True, "unix seconds when the read was signed"),
        _query("nonce", hex_string(NONCE), True, "random, never used twice"),
        _query("signature", hex_string(HEX64), True, "Ed25519 by peer over the read (auth.py)"),
    ]
}
FORMING_QUERY = {
    "parameters": [
        _query(
            "kind",
            {"type": "string", "enum": list(KINDS)},
            False,
            "only pools of this asset kind (default: every kind)",
        )
    ]
}
