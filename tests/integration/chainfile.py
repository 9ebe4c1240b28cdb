"""A realistic JSON-lines chain for `petra ledger replay`, generated from a seed.

One regulate authorizes the meters; every later block mixes issues with transfers that spend
earlier outputs (splits in power and in time, merges, trades signed by both parties), and a
few transactions the ledger must refuse: double spends (across blocks and within one) and
verbatim duplicates. Each refusal stays a refusal however late its line is replayed again, so
a replay resumed on a store holding a prefix of the chain ends where a clean replay ends.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from assets import (
    Asset,
    Authorization,
    Code,
    Eca,
    Epa,
    Fa,
    Keypair,
    Outpoint,
    Output,
    Transaction,
    encode_transaction,
    txid,
)
from simulation.scenario import Scenario, pay

MEMBERS = 16
METERS = 4
LIMIT_W = 10**9  # MAXEPA and MAXECA, far above what the chain issues: no issue is refused
OK = "ok"


@dataclass(frozen=True)
class ChainFile:
    """A replay file, its genesis, and what a clean replay of it prints."""

    path: Path
    genesis_path: Path
    chain: bytes  # the genesis id
    block_sizes: tuple[int, ...]  # transaction lines of each block, in file order
    expected: tuple[tuple[str, str], ...]  # (txid hex, "ok" or a rejection code) per line

    @property
    def lines(self) -> int:
        """Transaction lines in the file: what a complete replay prints, one line each."""
        return len(self.expected)

    def lines_through(self, blocks: int) -> int:
        """Transaction lines in the first `blocks` blocks of the file."""
        return sum(self.block_sizes[:blocks])


@dataclass(frozen=True)
class _Coin:
    """An unspent output the generator may spend, and the key of its owner."""

    outpoint: Outpoint
    asset: Asset
    owner: Keypair


class _Coins:
    """Unspent coins: a random one, a random one of money, or removal, each in O(1)."""

    def __init__(self) -> None:
        self._all: list[_Coin] = []
        self._money: list[_Coin] = []
        self._where: dict[Outpoint, int] = {}
        self._where_money: dict[Outpoint, int] = {}

    def __len__(self) -> int:
        return len(self._all)

    def add(self, coin: _Coin) -> None:
        _push(self._all, self._where, coin)
        if isinstance(coin.asset, Fa):
            _push(self._money, self._where_money, coin)

    def remove(self, coin: _Coin) -> None:
        _pop(self._all, self._where, coin)
        if isinstance(coin.asset, Fa):
            _pop(self._money, self._where_money, coin)

    def any(self, rng: random.Random) -> _Coin:
        return rng.choice(self._all)

    def money(self, rng: random.Random, other_than: _Coin) -> _Coin | None:
        """A random FA coin other than `other_than`, or None if there is none."""
        if not self._money or self._money == [other_than]:
            return None
        while True:
            coin = rng.choice(self._money)
            if coin is not other_than:
                return coin


def _push(coins: list[_Coin], where: dict[Outpoint, int], coin: _Coin) -> None:
    where[coin.outpoint] = len(coins)
    coins.append(coin)


def _pop(coins: list[_Coin], where: dict[Outpoint, int], coin: _Coin) -> None:
    """Remove `coin` by moving the last coin into its place."""
    index = where.pop(coin.outpoint)
    last = coins.pop()
    if last is not coin:
        coins[index] = last
        where[last.outpoint] = index


@dataclass(frozen=True)
class _Line:
    raw: bytes
    txid: bytes
    outcome: str


class _Generator:
    """The generator's model of the ledger: what is unspent, spent and on the ledger."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.scenario = Scenario(dso=self.key(), sequencer=self.key())
        self.members = [self.key() for _ in range(MEMBERS)]
        self.owner_of = {k.public_key: k for k in self.members}
        self.meters = {f"ES00210000000000{n:04d}XY": self.key() for n in range(METERS)}
        self.nonces = dict.fromkeys(self.meters, 0)
        self.coins = _Coins()
        self.spent: list[_Coin] = []  # spent in an earlier block
        self.on_ledger: list[_Line] = []  # accepted in an earlier block
        self.txids: set[bytes] = set()  # every transaction written so far
        self.block: list[_Line] = []
        self.spent_in_block: list[_Coin] = []

    def key(self) -> Keypair:
        return Keypair(self.rng.randbytes(32))  # seeded, so the file is the same every run

    def member(self) -> Keypair:
        return self.rng.choice(self.members)

    def close_block(self) -> list[_Line]:
        block, self.block = self.block, []
        self.on_ledger.extend(line for line in block if line.outcome == OK)
        self.spent.extend(self.spent_in_block)
        self.spent_in_block = []
        return block

    def add(self, tx: Transaction, outcome: str) -> bytes:
        tx_id = txid(tx)
        self.txids.add(tx_id)
        self.block.append(_Line(encode_transaction(tx), tx_id, outcome))
        return tx_id

    def accept(self, tx: Transaction, inputs: list[_Coin], outputs: list[Output]) -> None:
        tx_id = self.add(tx, OK)
        for coin in inputs:
            self.coins.remove(coin)
        self.spent_in_block.extend(inputs)
        for n, output in enumerate(outputs):
            self.coins.add(_Coin(Outpoint(tx_id, n), output.asset, self.owner_of[output.address]))

    def regulate(self) -> None:
        authorize = [
            Authorization(meter, key.public_key, LIMIT_W, LIMIT_W)
            for meter, key in self.meters.items()
        ]
        self.add(self.scenario.regulate(0, authorize, (), 250_000, 100_000), OK)

    def issue(self, now: int) -> None:
        """A meter issues one to three assets for intervals after `now` to members."""
        meter = self.rng.choice(list(self.meters))
        self.nonces[meter] += self.rng.randint(1, 3)
        outputs = []
        for _ in range(self.rng.randint(1, 3)):
            start = now + self.rng.randint(1, 8)
            end = start + self.rng.randint(0, 6)
            power = self.rng.randint(100, 5_000)
            kinds: list[Asset] = [Epa(power, start, end), Eca(power, start, end), Fa(power)]
            asset = self.rng.choice(kinds)
            outputs.append(pay(asset, self.member()))
        tx = self.scenario.issue(meter, self.meters[meter], self.nonces[meter], outputs)
        self.accept(tx, [], outputs)

    def transfer(self) -> None:
        first = self.coins.any(self.rng)
        other = self.coins.money(self.rng, other_than=first)
        if isinstance(first.asset, Fa) and other is not None and self.rng.random() < 0.4:
            # Two owners pool their money into one output; both sign.
            assert isinstance(other.asset, Fa)
            pooled = Fa(first.asset.amount + other.asset.amount)
            self.send([first, other], [pay(pooled, self.member())])
        elif not isinstance(first.asset, Fa) and other is not None and self.rng.random() < 0.5:
            # A trade: the energy asset to the buyer, the buyer's money to the seller.
            self.send(
                [first, other], [pay(first.asset, other.owner), pay(other.asset, first.owner)]
            )
        else:
            self.send([first], [pay(asset, self.member()) for asset in self.split(first.asset)])

    def split(self, asset: Asset) -> list[Asset]:
        """`asset` as one or two assets of the same total: in amount, in power or in time."""
        if isinstance(asset, Fa):
            if asset.amount < 2:
                return [asset]
            part = self.rng.randint(1, asset.amount - 1)
            return [Fa(part), Fa(asset.amount - part)]
        kind = Epa if isinstance(asset, Epa) else Eca
        if asset.end > asset.start and self.rng.random() < 0.5:
            middle = self.rng.randint(asset.start, asset.end - 1)
            return [
                kind(asset.power, asset.start, middle),
                kind(asset.power, middle + 1, asset.end),
            ]
        if asset.power < 2:
            return [asset]
        part = self.rng.randint(1, asset.power - 1)
        return [
            kind(part, asset.start, asset.end),
            kind(asset.power - part, asset.start, asset.end),
        ]

    def send(self, inputs: list[_Coin], outputs: list[Output]) -> None:
        owners = {c.owner.public_key: c.owner for c in inputs}
        tx = self.scenario.transfer([c.outpoint for c in inputs], outputs, *owners.values())
        self.accept(tx, inputs, outputs)

    def double_spend(self, coin: _Coin) -> None:
        """A transfer of an already spent `coin`, signed by its owner, new to the ledger."""
        while True:
            outputs = [pay(coin.asset, self.member())]
            tx = self.scenario.transfer([coin.outpoint], outputs, coin.owner)
            if txid(tx) not in self.txids:
                self.add(tx, Code.DOUBLE_SPEND)
                return

    def duplicate(self) -> None:
        """An accepted transaction of an earlier block, byte for byte."""
        line = self.rng.choice(self.on_ledger)
        self.block.append(_Line(line.raw, line.txid, Code.DUPLICATE))


def write_chain_file(directory: Path, blocks: int, per_block: int, seed: int) -> ChainFile:
    """Write `chain.jsonl` and `genesis.json` into `directory`: a regulate alone in block 1,
    then `blocks - 1` blocks of `per_block` transactions, one interval (900 s) apart."""
    gen = _Generator(seed)
    scenario = gen.scenario
    gen.regulate()
    file_blocks = [(scenario.time_in(0), gen.close_block())]
    for now in range(1, blocks):
        for n in range(per_block):
            if n == per_block // 2 and now % 7 == 3 and gen.spent:
                gen.double_spend(gen.rng.choice(gen.spent))
            elif n == per_block // 3 and now % 11 == 5:
                gen.duplicate()
            elif n == per_block - 1 and now % 13 == 8 and gen.spent_in_block:
                gen.double_spend(gen.spent_in_block[-1])
            elif len(gen.coins) < 2 * per_block or gen.rng.random() < 0.3:
                gen.issue(now)
            else:
                gen.transfer()
        time = scenario.time_in(now, gen.rng.randrange(scenario.interval_s))
        file_blocks.append((time, gen.close_block()))
    path, genesis_path = directory / "chain.jsonl", directory / "genesis.json"
    genesis_path.write_bytes(scenario.genesis_raw)
    with path.open("wb") as out:
        for time, block in file_blocks:
            out.write(json.dumps({"block_time": time}).encode() + b"\n")
            out.writelines(line.raw + b"\n" for line in block)
    return ChainFile(
        path=path,
        genesis_path=genesis_path,
        chain=scenario.chain,
        block_sizes=tuple(len(block) for _, block in file_blocks),
        expected=tuple(
            (line.txid.hex(), str(line.outcome)) for _, block in file_blocks for line in block
        ),
    )
