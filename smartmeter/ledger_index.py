"""What the smart meter knows from the ledger: the regulations (its authorization, limits and
ban, the prices in force), its own issues and the deposits to its deposit addresses, as of the
last block it indexed.

It follows the ledger node with `ledger.block_follower.BlockFollower` (which checks every head
and stops loudly on a bad block), catching up through `/v1/blocks` and then listening to the
node's block stream (Server-Sent Events), and keeps each block's facts in the meter's database
with the block's height and signed head, in one transaction; at start-up it replays the stored
facts and continues after the stored head, so a restart neither re-reads the ledger nor loses a
block.

Deposit addresses (`smartmeter.deposits.deposit_key`) are handed out in index order and the
ledger index watches every index below `max(handed out, highest paid + 1) + lookahead`: the
gap limit of HD wallets. An address is watched before it is handed out, so a deposit in any block is
found however soon after the address was handed out; and a meter whose database was lost
rebuilds its counter from the ledger, provided no run of `lookahead` consecutive addresses was
handed out and never paid. A deposit to an address not yet handed out moves the counter past it,
so no address is ever handed out twice or after it was used.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence

from assets import (
    Asset,
    DepositFact,
    Fa,
    Genesis,
    Issue,
    IssuedFact,
    Outpoint,
    Output,
    Regulate,
    Transaction,
    Transfer,
    canonical_json,
)
from assets.codec import trusted_transaction, txid
from ledger.block_follower import BlockFollower
from ledger.blocks import SignedHead
from ledger.client import LedgerClient, head_from_wire
from ledger.schedule import MeterStatus, Prices, RegulationSchedule
from smartmeter.deposits import deposit_key, deposits_in_block
from smartmeter.issuing import IssuedSoFar, check_withdrawal
from smartmeter.store import ChainFact, MeterStore

log = logging.getLogger(__name__)

LOOKAHEAD = 20  # deposit addresses watched beyond the last handed out or paid
HANDED_OUT = "deposit_keys_handed_out"  # named state: how many deposit indexes were handed out


class MeterLedgerIndex:
    """The ledger at `client`, as meter `meter_id` (whose deposit keys derive from
    `meter_seed`) needs it, kept in `store`. Every method is safe from any thread; hold `lock`
    while reading `schedule` or `issued` directly."""

    def __init__(
        self,
        client: LedgerClient,
        store: MeterStore,
        genesis: Genesis,
        meter_id: str,
        meter_seed: bytes,
        *,
        lookahead: int = LOOKAHEAD,
    ) -> None:
        if lookahead < 1:
            raise ValueError(f"the look-ahead is 1 address or more, not {lookahead}")
        self.store = store
        self.genesis = genesis
        self.meter_id = meter_id
        self.lookahead = lookahead
        self.lock = threading.RLock()
        self.schedule = RegulationSchedule()
        self.issued = IssuedSoFar()
        self._seed = meter_seed
        self._issues: list[IssuedFact] = []
        self._deposits: list[DepositFact] = []
        self._handed_out = int(store.get_state(HANDED_OUT) or 0)
        self._paid = 0  # one more than the highest deposit key index paid to
        self._addresses: dict[bytes, int] = {}  # watched deposit address -> its key index
        height, head = store.chain_head()
        for fact in store.chain_facts():
            self._learn(fact, trusted_transaction(fact.body))
        self._widen()
        previous = None if head is None else head_from_wire(json.loads(head))
        self.follower = BlockFollower(
            client, genesis, self._index, height, previous, name="meter-ledger-index", stream=True
        )

    # ------------------------------------------------------------- following

    def start(self) -> None:
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()

    def poll(self) -> int:
        """Index the blocks the ledger has beyond ours, now, in this thread; how many."""
        return self.follower.poll()

    def wait_for(self, height: int, timeout_s: float) -> bool:
        """True once block `height` is indexed; False after `timeout_s` seconds or if stopped."""
        return self.follower.wait_for(height, timeout_s)

    @property
    def height(self) -> int:
        """The last block indexed (0 before the first)."""
        return self.follower.height

    @property
    def problem(self) -> str | None:
        """Why the ledger index stopped on a block it cannot accept; None while it follows."""
        return self.follower.problem

    @property
    def last_error(self) -> str | None:
        """Why the ledger could not be read last time, if it could not."""
        return self.follower.last_error

    # ------------------------------------------------------------- what it knows

    def issues(self, max_height: int | None = None) -> list[IssuedFact]:
        """The meter's issues on the ledger (up to block `max_height`), in ledger order."""
        with self.lock:
            return [f for f in self._issues if max_height is None or f.height <= max_height]

    def deposits(self, max_height: int | None = None) -> list[DepositFact]:
        """Outputs paid to the meter's deposit addresses (up to block `max_height`), in ledger
        order."""
        with self.lock:
            return [f for f in self._deposits if max_height is None or f.height <= max_height]

    def prices_at(self, interval: int) -> Prices:
        """Prices in force at `interval`, micro-units per kWh."""
        with self.lock:
            return self.schedule.prices_at(interval)

    def status_at(self, interval: int) -> MeterStatus | None:
        """This meter's authorization, limits (W) and ban in force at `interval`."""
        with self.lock:
            return self.schedule.meter_at(self.meter_id, interval)

    def check_withdrawal(self, outputs: Sequence[Output], now: int, credit_line: int) -> None:
        """`smartmeter.issuing.check_withdrawal` against what the ledger says so far."""
        with self.lock:
            check_withdrawal(
                outputs,
                now=now,
                meter=self.meter_id,
                schedule=self.schedule,
                issued=self.issued,
                credit_line=credit_line,
            )

    def next_deposit_address(self) -> bytes:
        """A deposit address never handed out nor paid to before; durable before it is
        returned. Ask once the ledger index has caught up with the ledger, so that it knows which
        addresses were paid."""
        with self.lock:
            index = max(self._handed_out, self._paid)
            self.store.put_state(HANDED_OUT, index + 1)
            self._handed_out = index + 1
            self._widen()
            return deposit_key(self._seed, index).public_key

    # ------------------------------------------------------------- indexing

    def _index(self, head: SignedHead, raws: list[bytes]) -> None:
        header = head.header
        first_seq = header.tree_size - len(raws)
        interval = self.genesis.interval_at(header.time)
        with self.lock:
            kept: list[tuple[ChainFact, Transaction]] = []
            for offset, raw in enumerate(raws):
                tx = trusted_transaction(raw)
                fact = ChainFact(tx.type, first_seq + offset, header.height, interval, raw)
                if isinstance(tx, Regulate) or (
                    isinstance(tx, Issue) and tx.meter == self.meter_id
                ):
                    kept.append((fact, tx))
                elif isinstance(tx, Transfer):
                    kept.extend((d, tx) for d in self._deposits_in(fact, tx))
            self.store.index_chain_block(
                header.height, canonical_json(head.to_wire()), [f for f, _ in kept]
            )
            for fact, tx in kept:
                self._learn(fact, tx)
                self._tell(fact, tx)

    def _deposits_in(self, fact: ChainFact, tx: Transfer) -> list[ChainFact]:
        """One fact per output of `tx` paid to a deposit address; the window of watched
        addresses widens past each one paid, until it covers them all."""
        while True:
            if not any(o.address in self._addresses for o in tx.outputs):
                return []
            found = deposits_in_block(fact.height, [fact.body], self._addresses)
            paid = max(self._addresses[d.address] for d in found) + 1
            if not self._widen(paid):
                return [
                    ChainFact(
                        "deposit",
                        *(fact.seq, fact.height, fact.interval, fact.body),
                        *(d.outpoint.index, self._addresses[d.address]),
                    )
                    for d in found
                ]

    def _widen(self, paid: int = 0) -> bool:
        """Watch every address below the window's end, counting `paid`; True if it grew.
        Watching more than stored is harmless: an uncommitted block is offered again."""
        self._paid = max(self._paid, paid)
        end = max(self._handed_out, self._paid) + self.lookahead
        grew = len(self._addresses) < end
        for index in range(len(self._addresses), end):
            self._addresses[deposit_key(self._seed, index).public_key] = index
        return grew

    def _tell(self, fact: ChainFact, tx: Transaction) -> None:
        """Log a new fact of the meter's own in a line: an issue, a deposit."""
        currency = self.genesis.currency
        if isinstance(tx, Issue):
            assets = ", ".join(asset_text(o.asset, currency) for o in tx.outputs)
            log.info("issued %s to the owner in block %d", assets, fact.height)
        elif isinstance(tx, Transfer) and fact.output is not None:
            asset = asset_text(tx.outputs[fact.output].asset, currency)
            log.info("deposit received: %s in block %d", asset, fact.height)

    def _learn(self, fact: ChainFact, tx: Transaction) -> None:
        """Add a stored fact to what the ledger index knows (its block is committed)."""
        if isinstance(tx, Regulate):
            self.schedule.apply(tx, fact.seq)
        elif isinstance(tx, Issue):
            self.issued.record(tx.outputs)
            self._issues.append(IssuedFact(txid(tx), fact.height, fact.interval, tx.outputs))
        else:
            assert fact.output is not None and fact.key_index is not None
            asset = tx.outputs[fact.output].asset
            outpoint = Outpoint(txid(tx), fact.output)
            self._deposits.append(DepositFact(outpoint, asset, fact.height, fact.interval))
            if isinstance(asset, Fa):
                self.issued.fa_deposited += asset.amount
            self._paid = max(self._paid, fact.key_index + 1)


def asset_text(asset: Asset, currency: str) -> str:
    """`EPA 1500 W for interval 120`, `ECA 800 W for intervals 120-123`, `FA 2.500000 EUR`."""
    if isinstance(asset, Fa):
        whole, micro = divmod(asset.amount, 10**6)
        return f"FA {whole}.{micro:06d} {currency}"
    span = (
        f"interval {asset.start}"
        if asset.start == asset.end
        else (f"intervals {asset.start}-{asset.end}")
    )
    return f"{asset.kind.value} {asset.power} W for {span}"
