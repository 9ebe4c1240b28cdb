"""Ed25519 signatures over transaction ids (DESIGN.md section 4), through libsodium (PyNaCl).

Every signature signs `b"PETRA-v1/" + type + b"\\x00" + txid`, so a signature made for one
transaction type can never be replayed as another.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable

import nacl.bindings
import nacl.exceptions
from nacl.signing import SigningKey

from assets.codec import txid
from assets.model import Issue, Regulate, Signature, Transaction, Transfer

DOMAIN = b"PETRA-v1/"


def signing_message(tx_type: str, tx_id: bytes) -> bytes:
    """The bytes a signature over transaction `tx_id` of type `tx_type` signs."""
    return DOMAIN + tx_type.encode("ascii") + b"\x00" + tx_id


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True iff `signature` is a valid Ed25519 signature of `message` under `public_key`."""
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


@dataclasses.dataclass(frozen=True)
class Keypair:
    """An Ed25519 key pair; `public_key` is also the address it owns assets at."""

    seed: bytes = dataclasses.field(repr=False)

    @classmethod
    def generate(cls) -> Keypair:
        return cls(bytes(SigningKey.generate()))

    @functools.cached_property
    def _signing_key(self) -> SigningKey:
        return SigningKey(self.seed)  # derived once: deriving costs as much as signing

    @functools.cached_property
    def public_key(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached signature of `message`."""
        return self._signing_key.sign(message).signature


def sign_transfer(tx: Transfer, keys: Iterable[Keypair]) -> Transfer:
    """`tx` with signatures by `keys` added (one per key; existing signatures are kept)."""
    message = signing_message(tx.type, txid(tx))
    added = tuple(Signature(k.public_key, k.sign(message)) for k in keys)
    return dataclasses.replace(tx, signatures=tx.signatures + added)


def sign_issue(tx: Issue, meter_key: Keypair) -> Issue:
    """`tx` signed by the meter's registered key."""
    return dataclasses.replace(tx, signature=meter_key.sign(signing_message(tx.type, txid(tx))))


def sign_regulate(tx: Regulate, dso_key: Keypair) -> Regulate:
    """`tx` signed by one of the DSO keys named in genesis."""
    return dataclasses.replace(tx, signature=dso_key.sign(signing_message(tx.type, txid(tx))))


def sign(tx: Transaction, *keys: Keypair) -> Transaction:
    """`tx` signed by `keys`: every owner for a transfer, the one meter or DSO key otherwise."""
    if isinstance(tx, Transfer):
        return sign_transfer(tx, keys)
    if len(keys) != 1:
        raise ValueError(f"a {tx.type} carries exactly one signature, got {len(keys)} keys")
    if isinstance(tx, Issue):
        return sign_issue(tx, keys[0])
    return sign_regulate(tx, keys[0])
