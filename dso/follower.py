"""The DSO node's index of the ledger: it follows the ledger node block by block and keeps, in the
DSO database, each block's time and every issue and regulation, which is what billing
reconciliation, the views and the controller read.

Each head must be of the genesis's chain, signed by one of its sequencer keys, follow the previous
block and count its transactions; a block that does not stops the follower loudly. Merkle roots
are not recomputed here: that is the replicas' and auditors' job (`petra ledger audit`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from assets import Epa, Genesis, Issue, Regulate, chain_id
from assets import txid as transaction_id
from assets.codec import trusted_transaction
from dso.store import ChainTransaction, DsoStore
from ledger.blocks import SignedHead
from ledger.client import LedgerClient, LedgerClientError, head_problem

log = logging.getLogger("petra.dso.follower")
POLL_S = 0.25  # how often an idle follower asks for new blocks
BATCH = 100  # blocks per request


class FollowerStopped(Exception):
    """The ledger served a block the follower cannot accept; the evidence is in the message."""


class LedgerFollower:
    """Index the ledger at `client` into `store`; `on_transaction` sees each regulation and issue
    (in ledger order) after its block is indexed."""

    def __init__(
        self,
        client: LedgerClient,
        store: DsoStore,
        genesis: Genesis,
        on_transaction: Callable[[ChainTransaction, Issue | Regulate], None],
    ) -> None:
        self.client = client
        self.store = store
        self.genesis = genesis
        self.on_transaction = on_transaction
        self.height = store.indexed_height()
        self.problem: str | None = None
        self.last_error: str | None = None
        self._previous: SignedHead | None = None
        self._advanced = threading.Condition()
        self._stop = threading.Event()
        self._wake = threading.Event()  # someone waits for a block: poll now
        self._thread: threading.Thread | None = None

    def replay_index(self) -> None:
        """Feed what the database already indexed to `on_transaction` (at start-up)."""
        for stored in self.store.chain_transactions():
            tx = trusted_transaction(stored.body)
            assert isinstance(tx, Issue | Regulate)
            self.on_transaction(stored, tx)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ledger-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wait_for(self, height: int, timeout_s: float) -> bool:
        """True once block `height` is indexed; False after `timeout_s` or if stopped."""
        if self.height < height:
            self._wake.set()
        with self._advanced:
            return self._advanced.wait_for(
                lambda: self.height >= height or self.problem is not None, timeout_s
            ) and (self.height >= height)

    def poll(self) -> int:
        """Index the blocks the ledger has beyond ours; the number indexed."""
        if self.problem is not None:
            raise FollowerStopped(self.problem)
        count = 0
        while True:
            blocks = self.client.blocks(self.height + 1, BATCH)
            if not blocks:
                return count
            for head, raws in blocks:
                self._index(head, raws)
                count += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._wake.clear()  # before polling: a wake-up during the poll is not lost
                if self.poll() == 0:
                    self._wake.wait(POLL_S)
                self.last_error = None
            except FollowerStopped:
                return
            except LedgerClientError as exc:
                if self.last_error != str(exc):
                    log.warning("cannot follow the ledger: %s", exc)
                self.last_error = str(exc)
                self._stop.wait(1.0)
            except Exception:
                log.exception("the ledger follower failed; retrying")
                self._stop.wait(1.0)

    def _refuse(self, problem: str) -> None:
        self.problem = problem
        log.error("the ledger follower stopped: %s", problem)
        with self._advanced:
            self._advanced.notify_all()
        raise FollowerStopped(problem)

    def _index(self, head: SignedHead, raws: list[bytes]) -> None:
        header = head.header
        if header.height != self.height + 1:
            self._refuse(f"asked for block {self.height + 1}, the ledger sent {header.height}")
        problem = head_problem(head, self.genesis)
        if problem is not None:
            self._refuse(problem)
        previous = self._previous_head()
        first_seq = 0 if previous is None else previous.header.tree_size
        expected = chain_id(self.genesis) if previous is None else previous.header.hash
        if header.prev != expected:
            self._refuse(f"block {header.height} does not follow block {header.height - 1}")
        if header.tree_size != first_seq + len(raws):
            self._refuse(
                f"block {header.height} holds {len(raws)} transactions but grows the tree "
                f"from {first_seq} to {header.tree_size}"
            )
        kept: list[tuple[ChainTransaction, Issue | Regulate]] = []
        for offset, raw in enumerate(raws):
            tx = trusted_transaction(raw)
            if isinstance(tx, Issue | Regulate):
                meter: str | None = None
                span: tuple[int | None, int | None] = (None, None)
                if isinstance(tx, Issue):
                    meter = tx.meter
                    epa = [o.asset for o in tx.outputs if isinstance(o.asset, Epa)]
                    if epa:
                        span = (min(a.start for a in epa), max(a.end for a in epa))
                stored = ChainTransaction(
                    *(first_seq + offset, transaction_id(tx), header.height, tx.type, meter, raw),
                    *(self.genesis.interval_at(header.time), *span),
                )
                kept.append((stored, tx))
        self.store.index_block(header.height, header.time, header.tree_size, [s for s, _ in kept])
        for stored, tx in kept:
            self.on_transaction(stored, tx)
        self._previous = head
        with self._advanced:
            self.height = header.height
            self._advanced.notify_all()

    def _previous_head(self) -> SignedHead | None:
        if self.height == 0:
            return None
        if self._previous is None or self._previous.header.height != self.height:
            found = self.client.block(self.height)
            if found is None:
                self._refuse(f"the ledger no longer has block {self.height}, which was indexed")
            assert found is not None
            self._previous = found[0]
        return self._previous
