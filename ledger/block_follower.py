"""Following the ledger node block by block, for every service that keeps an index of it (the
DSO node, the smart meter): one piece of code catches up through `/v1/blocks`, checks each head
and hands the block to the service, which stores what it needs. Once caught up it either polls
again every `POLL_S` (the default) or, with `stream=True`, listens to the node's Server-Sent
Events (`/v1/stream/blocks`) and takes each block as it is made; a stream that breaks is
followed by another catch-up, so no block is missed either way.

Each head must be of the genesis's chain, signed by one of its sequencer keys, follow the
previous block (`prev` is its hash, or the chain id for block 1) and grow the tree by the number
of transactions it holds; a block that does not stops the follower loudly, with the reason.
Merkle roots are not recomputed here: that is the replicas' and auditors' job
(`petra ledger audit`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from assets import Genesis, chain_id
from ledger.blocks import SignedHead
from ledger.client import LedgerClient, LedgerClientError, head_problem

log = logging.getLogger("petra.ledger.block_follower")
POLL_S = 0.25  # how often an idle follower asks for new blocks
BATCH = 100  # blocks per request
RETRY_S = 1.0  # after the ledger could not be read, or the service failed to take a block


class FollowerStopped(Exception):
    """The ledger served a block the follower cannot accept; the evidence is in the message."""


class BlockFollower:
    """Hand each new block of the ledger at `client` to `on_block(head, raws)`, in order, after
    checking its head, starting after block `height` (whose signed head is `previous`, if the
    caller kept it; otherwise it is fetched again).

    `on_block` must store the block atomically: when it returns, the block counts as indexed;
    when it raises, the same block is offered again after `RETRY_S` seconds. The first
    transaction of a block is at log position `head.header.tree_size - len(raws)`.
    """

    def __init__(
        self,
        client: LedgerClient,
        genesis: Genesis,
        on_block: Callable[[SignedHead, list[bytes]], None],
        height: int = 0,
        previous: SignedHead | None = None,
        *,
        name: str = "ledger-follower",
        stream: bool = False,
    ) -> None:
        if previous is not None and previous.header.height != height:
            raise ValueError(
                f"the previous head is of block {previous.header.height}, not {height}"
            )
        self.client = client
        self.genesis = genesis
        self.on_block = on_block
        self.name = name
        self.stream = stream
        self.height = height
        self.problem: str | None = None
        self.last_error: str | None = None
        self._previous = previous
        self._advanced = threading.Condition()
        self._stop = threading.Event()
        self._wake = threading.Event()  # someone waits for a block: poll now
        self._thread: threading.Thread | None = None
        self._indexing = threading.Lock()  # one thread indexes at a time: poll() or the stream

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop following: wait up to `timeout_s` for a block being indexed (so that the
        caller may then close what `on_block` writes to), and no more is indexed after. A read
        of the ledger is not waited for (a stream may be idle until its next keep-alive): the
        thread, a daemon, ends with the process, and reading loses nothing."""
        self._stop.set()
        self._wake.set()
        if self._indexing.acquire(timeout=timeout_s):
            self._indexing.release()

    def wait_for(self, height: int, timeout_s: float) -> bool:
        """True once block `height` is indexed; False after `timeout_s` seconds or if stopped."""
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
            with self._indexing:
                for head, raws in blocks:
                    if self._stop.is_set():
                        return count
                    if head.header.height <= self.height:
                        continue  # indexed by the stream meanwhile
                    self._follow(head, raws)
                    count += 1

    def _listen(self) -> None:
        """Index the blocks the node streams, until stop() or the stream fails."""
        for head, raws in self.client.stream_blocks(self.height + 1, stop=self._stop.is_set):
            with self._indexing:
                if self._stop.is_set():
                    return
                if head.header.height > self.height:
                    self._follow(head, raws)
            self.last_error = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._wake.clear()  # before polling: a wake-up during the poll is not lost
                caught_up = self.poll() == 0
                self.last_error = None
                if caught_up and self.stream:
                    self._listen()
                elif caught_up:
                    self._wake.wait(POLL_S)
            except FollowerStopped:
                return
            except LedgerClientError as exc:
                if self._stop.is_set():
                    return  # its client may be closed already: nothing to tell
                if self.last_error != str(exc):
                    log.warning("%s cannot follow the ledger: %s", self.name, exc)
                self.last_error = str(exc)
                self._stop.wait(RETRY_S)
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("%s failed; retrying", self.name)
                self._stop.wait(RETRY_S)

    def _refuse(self, problem: str) -> None:
        self.problem = problem
        log.error("%s stopped: %s", self.name, problem)
        with self._advanced:
            self._advanced.notify_all()
        raise FollowerStopped(problem)

    def _follow(self, head: SignedHead, raws: list[bytes]) -> None:
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
        self.on_block(head, raws)
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
