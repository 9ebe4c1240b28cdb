"""The ledger: validates ordered batches of transactions and appends them as signed blocks.

For each block: static checks (shape, chain, signatures; signatures verified in parallel),
then the dynamic checks in order against the state, then one atomic write of everything the
block adds. The state is a deterministic function of the ordered transactions and block times.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from assets import (
    Code,
    Decoded,
    Genesis,
    Issue,
    Keypair,
    Regulate,
    Rejected,
    Transfer,
    accepted_transaction,
    chain_id,
    decode_transaction,
    parse_genesis,
)
from assets.canonical import canonical_json
from assets.codec import MAX_INT, MAX_OUTPUTS, genesis_to_wire
from ledger import merkle, rules
from ledger.blocks import BlockHeader, SignedHead
from ledger.state import BlockView, LedgerState
from ledger.static import StaticVerdict, check_batch, unchecked
from ledger.store import BlockWrite, OutputKey, OutputRow, Store, StoredTransaction

log = logging.getLogger(__name__)

# Durable outputs not yet spent, the latest created, that a block's build takes from memory
# instead of the store: an asset is mostly spent soon after it is made (a meter's issue to
# the market, a trade's change), and reading an input from a store of millions of rows costs
# a random index page (SQLite's cache of the reading connection starts afresh after every
# block another connection writes). About 400 bytes each.
UNSPENT_CACHE = 100_000


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one submitted transaction: accepted (`code` None) or rejected."""

    txid: bytes | None
    code: Code | None
    message: str = ""
    seq: int | None = None  # the accepted transaction's position in the log

    @property
    def accepted(self) -> bool:
        return self.code is None


@dataclass(frozen=True, slots=True)
class BlockResult:
    """The block a batch became (None if nothing in it was accepted) and each outcome."""

    head: SignedHead | None
    outcomes: list[Outcome]


class Divergence(Exception):
    """A replicated block is not the block its transactions make here. Carries the evidence:
    the primary's signed head, the reason, and the header made here when there is one."""

    def __init__(
        self, expected: SignedHead, reason: str, computed: BlockHeader | None = None
    ) -> None:
        super().__init__(f"block {expected.header.height} diverges: {reason}")
        self.expected = expected
        self.reason = reason
        self.computed = computed


@dataclass(frozen=True, slots=True)
class BuiltBlock:
    """A block validated and applied in memory, not yet durable (`Ledger.write`)."""

    result: BlockResult
    write: BlockWrite
    source_offset: int | None


class Ledger:
    """One chain's ledger over a store.

    Blocks are built (validated, applied in memory) by one thread, in order, and written
    (made durable) in the same order, possibly by another thread while the next is built:
    built-but-unwritten blocks are an overlay the next build reads through, over the latest
    durable unspent outputs (up to `unspent_cache` of them, kept in memory), over the store.
    """

    def __init__(
        self,
        store: Store,
        genesis: Genesis,
        sequencer_key: Keypair | None = None,
        unspent_cache: int = UNSPENT_CACHE,
    ) -> None:
        self.store = store
        self.unspent_cache = unspent_cache
        self.genesis = genesis
        self.chain = chain_id(genesis)
        store.init_genesis(canonical_json(genesis_to_wire(genesis)))
        # Without the genesis's sequencer key (a conformance replay), heads are signed by a
        # throw-away key: roots and outcomes are the same, the heads just don't verify.
        self.sequencer_key = sequencer_key or Keypair.generate()
        if sequencer_key is not None and sequencer_key.public_key not in genesis.sequencer_keys:
            raise ValueError("the sequencer key is not one of the genesis's sequencer_keys")
        self._unwritten_lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        """(Re)build the in-memory state and the Merkle right edge from what is durable."""
        self.store.wait_for_writers()
        self.head = self.durable_head = self.store.head()
        self.state = LedgerState()
        for stored in self.store.state_transactions():
            self._apply_state(decode_transaction(stored.body).tx, stored.seq)
        size = 0 if self.head is None else self.head.header.tree_size
        self.tree = merkle.CompactRange.from_nodes(self.store, size)
        with self._unwritten_lock:
            self._unwritten: list[BlockWrite] = []
            self._unspent: OrderedDict[OutputKey, OutputRow] = OrderedDict()

    def _apply_state(self, tx: Transfer | Issue | Regulate, seq: int) -> None:
        if isinstance(tx, Issue):
            self.state.apply_issue(tx)
        elif isinstance(tx, Regulate):
            self.state.apply_regulate(tx, seq)

    @property
    def size(self) -> int:
        """Transactions on the ledger (built; durable once written)."""
        return self.tree.size

    @property
    def time(self) -> int:
        """The ledger's clock: the last block's time, or the epoch before the first block."""
        return self.genesis.epoch if self.head is None else self.head.header.time

    def append_block(
        self,
        raws: Sequence[bytes],
        time: int,
        verdicts: Sequence[StaticVerdict] | None = None,
        source_offset: int | None = None,
        expected: SignedHead | None = None,
    ) -> BlockResult:
        """Validate `raws` in order at block time `time` (unix seconds) and commit the
        accepted ones as one block. Durable when this returns; on a storage error nothing of
        the block is kept and the exception propagates.

        `expected`: a replica's block as its primary signed it; the block is kept under that
        head only if every transaction is accepted and the header made here is the same,
        otherwise `Divergence` is raised and nothing is kept."""
        try:
            return self.write(self.build(raws, time, verdicts, source_offset, expected))
        except BaseException:
            self.reload()  # whatever of the block is in memory only: forget it
            raise

    def build(
        self,
        raws: Sequence[bytes],
        time: int,
        verdicts: Sequence[StaticVerdict] | None = None,
        source_offset: int | None = None,
        expected: SignedHead | None = None,
    ) -> BuiltBlock:
        """Validate `raws` in order at block time `time` and apply the accepted ones in memory.

        `verdicts`: their static checks, if already made (by a `StaticPool`); made here
        otherwise. `source_offset`: how far into its source the block reaches (stored with
        it, for resuming). The block must then be passed to `write`, in order. If this raises,
        memory may hold part of the block: `reload` once no write is in progress.
        """
        if not 0 <= time <= MAX_INT:
            raise ValueError(f"block time {time} is not unix seconds from 0 to {MAX_INT}")
        if self.head is not None and time < self.head.header.time:
            raise ValueError(f"block time {time} is before the previous block's {self.time}")
        if verdicts is None:
            verdicts = check_batch(self.genesis, raws)
        now = self.genesis.interval_at(time)
        statics: list[Decoded | Rejected] = []
        for raw, verdict in zip(raws, verdicts, strict=True):
            if verdict.code is not None:
                statics.append(Rejected(verdict.code, verdict.message, verdict.txid))
            else:
                assert verdict.txid is not None
                statics.append(_trusted(raw, verdict.txid))
        decoded = [s for s in statics if isinstance(s, Decoded)]
        inputs = {
            (i.txid, i.index)
            for d in decoded
            if isinstance(d.tx, Transfer)
            for i in d.tx.inputs
            if i.index < MAX_OUTPUTS  # no output has a larger index: unknown_input
        }
        # Snapshot the unwritten blocks before reading the store: a block written meanwhile
        # is then in the snapshot, in the store, or both, never in neither. The cache of
        # unspent outputs is brought up to date before a written block leaves the snapshot.
        with self._unwritten_lock:
            unwritten = list(self._unwritten)
            cached = {key: row for key in inputs if (row := self._unspent.get(key)) is not None}
        # A transfer is on the ledger exactly when its first input was spent by it (it spent
        # every input, and nothing is ever unspent): its id is found among the inputs' spenders,
        # without a look-up of an id that, for nearly every transaction, is not there. An
        # input in the cache is unspent, so its transfer is not on the ledger.
        known, stored = self.store.prefetch(
            [d.txid for d in decoded if not isinstance(d.tx, Transfer)],
            inputs.difference(cached) if cached else inputs,
        )
        stored.update(cached)
        for d in decoded:
            if isinstance(d.tx, Transfer):
                first = d.tx.inputs[0]
                row = stored.get((first.txid, first.index))
                if row is not None and row[3] == d.txid:
                    known.add(d.txid)
        view = BlockView(self.state, known, stored)
        for block in unwritten:
            view.record_block(block)
        return self._build(statics, view, now, time, source_offset, expected)

    def write(self, block: BuiltBlock) -> BlockResult:
        """Make a built block durable (blocks in the order they were built). On a storage error
        nothing of it is kept: the caller must `reload` before building again, since this
        block, and any built on it, exist only in memory."""
        head = block.result.head
        if head is not None:
            self.store.write_block(head, block.write, block.source_offset)
            with self._unwritten_lock:
                self._remember_unspent(block.write)
                self._unwritten.remove(block.write)
            self.durable_head = head
        return block.result

    def _remember_unspent(self, block: BlockWrite) -> None:
        """Add a durable block's outputs to the cache of unspent ones and drop what it spent
        (outputs first: an output spent in its own block is not kept), then the oldest past
        `unspent_cache`. Under `_unwritten_lock`."""
        cache = self._unspent
        for key, output, seq in block.outputs:
            cache[key] = (output, seq, None, None)
        for key, _, _ in block.spends:
            cache.pop(key, None)
        for _ in range(len(cache) - self.unspent_cache):
            cache.popitem(last=False)

    def _build(
        self,
        statics: list[Decoded | Rejected],
        view: BlockView,
        now: int,
        time: int,
        source_offset: int | None,
        expected: SignedHead | None = None,
    ) -> BuiltBlock:
        outcomes: list[Outcome] = []
        write = BlockWrite(transactions=[], outputs=[], spends=[], nodes=[])
        for item in statics:
            if isinstance(item, Rejected):
                outcomes.append(Outcome(item.txid, item.code, item.message))
                continue
            try:
                self._check(item, view, now)
            except Rejected as rejected:
                outcomes.append(Outcome(item.txid, rejected.code, rejected.message))
                continue
            except Exception as exc:  # the checks change nothing: refusing it alone is safe
                log.exception("the checks of transaction %s failed; it is refused", item.txid.hex())
                outcomes.append(Outcome(item.txid, Code.MALFORMED, unchecked(exc)))
                continue
            seq = self.tree.size
            tx = item.tx
            txid = item.txid
            created = (
                []
                if isinstance(tx, Regulate)
                else [((txid, n), o) for n, o in enumerate(tx.outputs)]
            )
            spent = [(i.txid, i.index) for i in tx.inputs] if isinstance(tx, Transfer) else []
            write.spends.extend((key, view.created_seq(key), seq) for key in spent)
            view.record(item.txid, seq, created, spent)
            self._apply_state(tx, seq)
            leaf = merkle.leaf_hash(item.raw)
            write.transactions.append(StoredTransaction(seq, item.txid, tx.type, item.raw, leaf))
            write.outputs.extend((key, o, seq) for key, o in created)
            write.nodes.extend(self.tree.append(leaf))
            outcomes.append(Outcome(item.txid, None, seq=seq))
        refused = next((o for o in outcomes if not o.accepted), None)
        if expected is not None and refused is not None:
            name = refused.txid.hex() if refused.txid else "a transaction"
            raise Divergence(expected, f"{name} is refused here: {refused.code}: {refused.message}")
        if not write.transactions:
            return BuiltBlock(BlockResult(None, outcomes), write, source_offset)
        header = BlockHeader(
            chain=self.chain,
            height=1 if self.head is None else self.head.header.height + 1,
            prev=self.chain if self.head is None else self.head.header.hash,
            time=time,
            tree_size=self.tree.size,
            root=self.tree.root(),
        )
        if expected is not None and expected.header != header:
            raise Divergence(expected, "its header is not the one made here", header)
        self.head = expected or SignedHead.sign(header, self.sequencer_key)
        with self._unwritten_lock:
            self._unwritten.append(write)
        return BuiltBlock(BlockResult(self.head, outcomes), write, source_offset)

    def _check(self, item: Decoded, view: BlockView, now: int) -> None:
        """The dynamic rules, in DESIGN.md section 5's order, for a statically valid tx."""
        tx = item.tx
        rules.check_not_duplicate(view, item)
        if isinstance(tx, Transfer):
            rules.check_transfer(view, item)
        elif isinstance(tx, Issue):
            status = rules.meter_in_force(view, item, now)
            rules.check_signatures(item, self.genesis, status.public_key)
            rules.check_issue(view, item, now)
        else:
            rules.check_regulate(item, now)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof of leaf `index` in the tree of `size` (default: durable)."""
        return merkle.inclusion_proof(self.store, index, self._durable_size(size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof between two durable tree sizes."""
        return merkle.consistency_proof(self.store, old_size, self._durable_size(new_size))

    def _durable_size(self, size: int | None) -> int:
        durable = 0 if self.durable_head is None else self.durable_head.header.tree_size
        if size is not None and size > durable:
            raise ValueError(f"tree size {size} is beyond the durable size {durable}")
        return durable if size is None else size


def _trusted(raw: bytes, tx_id: bytes) -> Decoded | Rejected:
    """A transaction the static checks accepted, or its refusal if it cannot be read again."""
    try:
        return Decoded(accepted_transaction(raw), tx_id, raw)
    except Exception as exc:  # the static checks decoded it: a fault here refuses it alone
        log.exception("transaction %s passed the static checks but not decoding", tx_id.hex())
        return Rejected(Code.MALFORMED, unchecked(exc), tx_id)


def open_ledger(url: str, genesis_raw: bytes, sequencer_key: Keypair | None = None) -> Ledger:
    """A ledger over the store at `url` for the genesis in `genesis_raw` (JSON bytes)."""
    return Ledger(Store(url), parse_genesis(genesis_raw), sequencer_key)
