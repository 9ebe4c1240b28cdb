"""The meter's deposit addresses, and finding deposits to them in the ledger's blocks.

A deposit address is an Ed25519 key the meter controls, fresh for each deposit, handed only to
its owner. The keys are derived from the meter's own seed and a counter (keyed BLAKE2b, a
domain of its own), so the meter keeps only the counter: after a restart, or from a backup of
its sealed key file, it finds every deposit key again. Nobody without the meter's seed can tell
that two deposit addresses belong to one meter, or to a meter at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import nacl.encoding
import nacl.hash

from assets import Asset, Keypair, Outpoint, Transfer
from assets.codec import trusted_transaction, txid

_PERSON = b"PETRA-deposit-v1"  # BLAKE2b personalisation: 16 bytes, this derivation only


def deposit_key(meter_seed: bytes, index: int) -> Keypair:
    """The meter's `index`-th deposit key (index >= 0)."""
    if index < 0:
        raise ValueError("a deposit key index is 0 or more")
    seed = nacl.hash.blake2b(
        index.to_bytes(8, "big"),
        digest_size=32,
        key=meter_seed,
        person=_PERSON,
        encoder=nacl.encoding.RawEncoder,
    )
    return Keypair(seed)


@dataclass(frozen=True, slots=True)
class Deposit:
    """An output paid to one of the meter's deposit addresses."""

    outpoint: Outpoint
    address: bytes
    asset: Asset
    height: int


def deposits_in_block(
    height: int, raws: Iterable[bytes], addresses: Mapping[bytes, int]
) -> list[Deposit]:
    """The outputs of the block's transfers paid to `addresses` (address -> its key index).

    Only transfers count: the meter's own issues pay its owner, never a deposit address.
    """
    found = []
    for raw in raws:
        tx = trusted_transaction(raw)
        if not isinstance(tx, Transfer):
            continue
        tx_id = txid(tx)
        for index, output in enumerate(tx.outputs):
            if output.address in addresses:
                found.append(Deposit(Outpoint(tx_id, index), output.address, output.asset, height))
    return found
