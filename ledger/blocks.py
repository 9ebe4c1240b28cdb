"""Blocks and signed tree heads (DESIGN.md section 6)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from assets import Keypair, canonical_json, signing_message, verify

BLOCK_SIGNATURE_TYPE = "block"  # signs b"PETRA-v1/block\x00" + block hash


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """A block: `tree_size` and `root` cover every transaction up to and including this block.

    `prev` is the previous block's hash; block 1 follows the genesis, whose id it carries.
    `time` is the sequencer's clock in unix seconds.
    """

    chain: bytes
    height: int
    prev: bytes
    time: int
    tree_size: int
    root: bytes

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": 1,
            "chain": self.chain.hex(),
            "height": self.height,
            "prev": self.prev.hex(),
            "time": self.time,
            "tree_size": self.tree_size,
            "root": self.root.hex(),
        }

    @property
    def hash(self) -> bytes:
        """SHA-256 of the header's canonical JSON."""
        return hashlib.sha256(canonical_json(self.to_wire())).digest()


@dataclass(frozen=True, slots=True)
class SignedHead:
    """A block header signed by one of the genesis's sequencer keys."""

    header: BlockHeader
    sequencer_key: bytes
    signature: bytes

    @classmethod
    def sign(cls, header: BlockHeader, key: Keypair) -> SignedHead:
        message = signing_message(BLOCK_SIGNATURE_TYPE, header.hash)
        return cls(header, key.public_key, key.sign(message))

    def verifies(self, sequencer_keys: tuple[bytes, ...]) -> bool:
        """True iff signed by one of `sequencer_keys` (the genesis's)."""
        message = signing_message(BLOCK_SIGNATURE_TYPE, self.header.hash)
        return self.sequencer_key in sequencer_keys and verify(
            self.sequencer_key, message, self.signature
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            **self.header.to_wire(),
            "hash": self.header.hash.hex(),
            "sequencer_key": self.sequencer_key.hex(),
            "signature": self.signature.hex(),
        }
