"""What a peer signs for the coordinator (docs/mixer-api.md): its join request and each read of
a pool's events, both with the input's owner key, in signing domains of their own. The
coordinator checks them (`mixer.coordinator`); the client makes them (`mixer.client`).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

from assets import Keypair, canonical_json, signing_message

JOIN_TYPE = "mixer-join"  # the signing domain of join requests
POLL_TYPE = "mixer-poll"  # the signing domain of event reads
FRESH_S = 60  # how far a signed request's `at` may be from the coordinator's clock, s
NONCE_BYTES = 16


def join_message(unsigned: Mapping[str, Any]) -> bytes:
    """What the owner signs: the join request without its `signature` field."""
    body = {k: v for k, v in unsigned.items() if k != "signature"}
    return signing_message(JOIN_TYPE, hashlib.sha256(canonical_json(body)).digest())


def poll_message(pool: str, peer: bytes, after: int, at: int, nonce: bytes) -> bytes:
    """What the owner `peer` signs to read pool `pool`'s events after seq `after`, at unix
    second `at`, once (`nonce` is never used twice)."""
    signed = {"pool": pool, "peer": peer.hex(), "after": after, "at": at, "nonce": nonce.hex()}
    return signing_message(POLL_TYPE, hashlib.sha256(canonical_json(signed)).digest())


def poll_params(pool: str, key: Keypair, after: int, at: int) -> dict[str, str | int]:
    """The query of `GET /v1/pools/{pool}/events` but `wait`: `key`'s read after seq `after`,
    signed at unix second `at` with a fresh nonce."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    signature = key.sign(poll_message(pool, key.public_key, after, at, nonce))
    return {
        "peer": key.public_key.hex(),
        "after": after,
        "at": at,
        "nonce": nonce.hex(),
        "signature": signature.hex(),
    }
