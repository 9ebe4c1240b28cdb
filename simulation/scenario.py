"""Build a chain and signed transactions in a few lines: for the demo, benchmarks, tests and
the simulation. Everything here goes through the same wire format any other producer uses."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from assets import (
    Asset,
    Authorization,
    Genesis,
    Issue,
    Keypair,
    Outpoint,
    Output,
    Regulate,
    Transfer,
    canonical_json,
    chain_id,
    sign,
)
from assets.codec import genesis_to_wire

DEFAULT_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z


@dataclass
class Scenario:
    """A genesis with its DSO and sequencer keys, and builders of signed transactions."""

    dso: Keypair = field(default_factory=Keypair.generate)
    sequencer: Keypair = field(default_factory=Keypair.generate)
    name: str = "PETra test community"
    cosequencers: tuple[Keypair, ...] = ()  # the other nodes of a replicated ledger
    interval_s: int = 900
    epoch: int = DEFAULT_EPOCH
    currency: str = "EUR"
    _nonces: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def genesis(self) -> Genesis:
        return Genesis(
            self.name,
            self.interval_s,
            self.epoch,
            self.currency,
            (self.dso.public_key,),
            tuple(k.public_key for k in (self.sequencer, *self.cosequencers)),
        )

    @property
    def genesis_raw(self) -> bytes:
        return canonical_json(genesis_to_wire(self.genesis))

    @property
    def chain(self) -> bytes:
        return chain_id(self.genesis)

    def time_in(self, interval: int, offset: int = 0) -> int:
        """Unix seconds `offset` seconds into interval `interval`."""
        return self.epoch + interval * self.interval_s + offset

    def regulate(
        self,
        time: int,
        authorize: Iterable[Authorization] = (),
        ban: Iterable[str] = (),
        price_consumption: int | None = None,
        price_production: int | None = None,
        nonce: int | None = None,
        key: Keypair | None = None,
    ) -> Regulate:
        tx = Regulate(
            self.chain,
            time,
            tuple(authorize),
            tuple(ban),
            price_consumption,
            price_production,
            next(self._nonces) if nonce is None else nonce,
        )
        signed = sign(tx, key or self.dso)
        assert isinstance(signed, Regulate)
        return signed

    def issue(self, meter: str, key: Keypair, nonce: int, outputs: Iterable[Output]) -> Issue:
        signed = sign(Issue(self.chain, meter, nonce, tuple(outputs)), key)
        assert isinstance(signed, Issue)
        return signed

    def transfer(
        self, inputs: Iterable[Outpoint], outputs: Iterable[Output], *owners: Keypair
    ) -> Transfer:
        signed = sign(Transfer(self.chain, tuple(inputs), tuple(outputs)), *owners)
        assert isinstance(signed, Transfer)
        return signed


def pay(asset: Asset, to: Keypair) -> Output:
    """An output giving `asset` to the address of `to`."""
    return Output(asset, to.public_key)
