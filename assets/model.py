"""Assets and transactions as small frozen dataclasses (DESIGN.md sections 3 and 4).

Byte strings (keys, ids, signatures) are held as raw bytes; the wire carries them as
lowercase hex. Construction does no validation: `assets.codec` checks what comes from outside.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class AssetKind(StrEnum):
    EPA = "EPA"  # energy production asset: the right to inject `power` W
    ECA = "ECA"  # energy consumption asset: the right to withdraw `power` W
    FA = "FA"  # financial asset: money, in micro-units of the chain's currency


@dataclass(frozen=True, slots=True)
class Epa:
    """Energy production asset: `power` watts in each interval from `start` to `end`, inclusive."""

    power: int
    start: int
    end: int
    kind: Literal[AssetKind.EPA] = AssetKind.EPA


@dataclass(frozen=True, slots=True)
class Eca:
    """Energy consumption asset: `power` watts in each interval from `start` to `end`, inclusive."""

    power: int
    start: int
    end: int
    kind: Literal[AssetKind.ECA] = AssetKind.ECA


@dataclass(frozen=True, slots=True)
class Fa:
    """Financial asset: `amount` micro-units (10**6 per unit of the chain's currency)."""

    amount: int
    kind: Literal[AssetKind.FA] = AssetKind.FA


EnergyAsset = Epa | Eca
Asset = Epa | Eca | Fa


@dataclass(frozen=True, slots=True)
class Outpoint:
    """Output number `index` of the transaction `txid`."""

    txid: bytes
    index: int


@dataclass(frozen=True, slots=True)
class Output:
    """An asset and the address (a 32-byte Ed25519 public key) that owns it."""

    asset: Asset
    address: bytes


@dataclass(frozen=True, slots=True)
class Signature:
    public_key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Transfer:
    """Moves assets between addresses; one signature per distinct owner of an input.

    Its signatures are kept in ascending order of public key, the one order the wire allows
    (DESIGN.md section 4), whatever order they are given in: however its signers gather them,
    a transfer has one encoding and one Merkle leaf."""

    chain: bytes
    inputs: tuple[Outpoint, ...]
    outputs: tuple[Output, ...]
    signatures: tuple[Signature, ...] = ()
    type: Literal["transfer"] = "transfer"

    def __post_init__(self) -> None:
        if len(self.signatures) < 2:  # most transfers: nothing to order, and this runs on each
            return
        ordered = tuple(sorted(self.signatures, key=lambda s: s.public_key))
        if ordered != self.signatures:
            object.__setattr__(self, "signatures", ordered)


@dataclass(frozen=True, slots=True)
class Issue:
    """A smart meter creates assets, signed by the meter's registered key."""

    chain: bytes
    meter: str
    nonce: int
    outputs: tuple[Output, ...]
    signature: bytes = b""
    type: Literal["issue"] = "issue"


@dataclass(frozen=True, slots=True)
class Authorization:
    """The DSO lets `meter` issue with `public_key`, below `max_epa` / `max_eca` watts."""

    meter: str
    public_key: bytes
    max_epa: int
    max_eca: int


@dataclass(frozen=True, slots=True)
class Regulate:
    """A DSO transaction, in force for intervals strictly after `time`.

    Prices are micro-units per kWh; None leaves the price in force unchanged.
    """

    chain: bytes
    time: int
    authorize: tuple[Authorization, ...]
    ban: tuple[str, ...]
    price_consumption: int | None
    price_production: int | None
    nonce: int
    signature: bytes = b""
    type: Literal["regulate"] = "regulate"


Transaction = Transfer | Issue | Regulate


@dataclass(frozen=True, slots=True)
class Genesis:
    """The chain's founding document; its id is the `chain` of every transaction."""

    name: str
    interval_s: int
    epoch: int
    currency: str
    dso_keys: tuple[bytes, ...]
    sequencer_keys: tuple[bytes, ...]

    def interval_at(self, unix_seconds: int) -> int:
        """The index of the interval that contains `unix_seconds` (may be negative before epoch)."""
        return (unix_seconds - self.epoch) // self.interval_s

    def interval_start(self, interval: int) -> int:
        """Unix seconds at which interval `interval` begins."""
        return self.epoch + interval * self.interval_s
