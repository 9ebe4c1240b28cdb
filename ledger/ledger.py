"""The ledger: validates ordered batches of transactions and appends them as signed blocks.

For each block: static checks (shape, chain, signatures; signatures verified in parallel),
then the dynamic checks in order against the state, then one atomic write of everything the
block adds. The state is a deterministic function of the ordered transactions and block times.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from assets import (
    Code,
    Decoded,
    Genesis,
    Issue,
    Keypair,
    Outpoint,
    Regulate,
    Rejected,
    Transfer,
    chain_id,
    decode_transaction,
    parse_genesis,
)
from assets.canonical import canonical_json
from assets.codec import genesis_to_wire
from ledger import merkle, rules
from ledger.blocks import BlockHeader, SignedHead
from ledger.state import BlockView, LedgerState
from ledger.store import BlockWrite, Store, StoredTransaction
from ledger.verifier import SerialVerifier, SignatureVerifier

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one submitted transaction: accepted (`code` None) or rejected."""

    txid: bytes | None
    code: Code | None
    message: str = ""

    @property
    def accepted(self) -> bool:
        return self.code is None


@dataclass(frozen=True, slots=True)
class BlockResult:
    """The block a batch became (None if nothing in it was accepted) and each outcome."""

    head: SignedHead | None
    outcomes: list[Outcome]


class Ledger:
    """One chain's ledger over a store. Not thread-safe: one sequencer feeds `append_block`."""

    def __init__(
        self,
        store: Store,
        genesis: Genesis,
        sequencer_key: Keypair | None = None,
        verifier: SignatureVerifier | None = None,
    ) -> None:
        self.store = store
        self.genesis = genesis
        self.chain = chain_id(genesis)
        store.init_genesis(canonical_json(genesis_to_wire(genesis)))
        # Without the genesis's sequencer key (a conformance replay), heads are signed by a
        # throw-away key: roots and outcomes are the same, the heads just don't verify.
        self.sequencer_key = sequencer_key or Keypair.generate()
        if sequencer_key is not None and sequencer_key.public_key not in genesis.sequencer_keys:
            raise ValueError("the sequencer key is not one of the genesis's sequencer_keys")
        self.verifier = verifier or SerialVerifier()
        self._load()

    def _load(self) -> None:
        """(Re)build the in-memory state and the Merkle right edge from the store."""
        self.head = self.store.head()
        self.state = LedgerState()
        for stored in self.store.state_transactions():
            self._apply_state(decode_transaction(stored.body).tx, stored.seq)
        size = 0 if self.head is None else self.head.header.tree_size
        self.tree = merkle.CompactRange.from_nodes(self.store, size)

    def _apply_state(self, tx: Transfer | Issue | Regulate, seq: int) -> None:
        if isinstance(tx, Issue):
            self.state.apply_issue(tx)
        elif isinstance(tx, Regulate):
            self.state.apply_regulate(tx, seq)

    @property
    def size(self) -> int:
        """Transactions on the ledger."""
        return self.tree.size

    @property
    def time(self) -> int:
        """The ledger's clock: the last block's time, or the epoch before the first block."""
        return self.genesis.epoch if self.head is None else self.head.header.time

    def append_block(self, raws: Sequence[bytes], time: int) -> BlockResult:
        """Validate `raws` in order at block time `time` (unix seconds) and commit the
        accepted ones as one block. Durable when this returns; on a storage error nothing of
        the block is kept and the exception propagates."""
        if time < self.time:
            raise ValueError(f"block time {time} is before the previous block's {self.time}")
        now = self.genesis.interval_at(time)
        statics: list[Decoded | Rejected] = []
        for raw in raws:
            try:
                statics.append(rules.check_static(raw, self.genesis, self.chain))
            except Rejected as rejected:
                statics.append(rejected)
        decoded = [s for s in statics if isinstance(s, Decoded)]
        verdicts = self._verify_signatures(decoded, now)
        view = BlockView(
            self.state,
            self.store.known_txids([d.txid for d in decoded]),
            self.store.outputs(
                {i for d in decoded if isinstance(d.tx, Transfer) for i in d.tx.inputs}
            ),
        )
        try:
            return self._build_block(statics, verdicts, view, now, time)
        except BaseException:
            self._load()  # the in-memory state may hold the failed block's effects
            raise

    def _verify_signatures(self, decoded: list[Decoded], now: int) -> dict[bytes, bool]:
        """All signatures of the block at once; a transaction's verdict is True iff all hold."""
        owners: list[bytes] = []
        checks: list[rules.SignatureCheck] = []
        for d in decoded:
            meter_key = None
            if isinstance(d.tx, Issue):
                status = self.state.schedule.meter_at(d.tx.meter, now)
                meter_key = status.public_key if status is not None else None
            for check in rules.signature_checks(d, self.genesis, meter_key):
                owners.append(d.txid)
                checks.append(check)
        verdicts = dict.fromkeys((d.txid for d in decoded), True)
        for txid, ok in zip(owners, self.verifier.verify_all(checks), strict=True):
            verdicts[txid] = verdicts[txid] and ok
        return verdicts

    def _build_block(
        self,
        statics: list[Decoded | Rejected],
        verdicts: dict[bytes, bool],
        view: BlockView,
        now: int,
        time: int,
    ) -> BlockResult:
        outcomes: list[Outcome] = []
        write = BlockWrite(transactions=[], outputs=[], spends=[], nodes=[])
        for item in statics:
            if isinstance(item, Rejected):
                outcomes.append(Outcome(item.txid, item.code, item.message))
                continue
            try:
                self._check(item, verdicts[item.txid], view, now)
            except Rejected as rejected:
                outcomes.append(Outcome(item.txid, rejected.code, rejected.message))
                continue
            seq = self.tree.size
            tx = item.tx
            created = (
                []
                if isinstance(tx, Regulate)
                else [(Outpoint(item.txid, n), o) for n, o in enumerate(tx.outputs)]
            )
            spent = list(tx.inputs) if isinstance(tx, Transfer) else []
            view.record(item.txid, created, spent)
            self._apply_state(tx, seq)
            write.transactions.append(StoredTransaction(seq, item.txid, tx.type, item.raw))
            write.outputs.extend((outpoint, o, seq) for outpoint, o in created)
            write.spends.extend((outpoint, seq) for outpoint in spent)
            write.nodes.extend(self.tree.append(merkle.leaf_hash(item.raw)))
            outcomes.append(Outcome(item.txid, None))
        if not write.transactions:
            return BlockResult(None, outcomes)
        header = BlockHeader(
            chain=self.chain,
            height=1 if self.head is None else self.head.header.height + 1,
            prev=self.chain if self.head is None else self.head.header.hash,
            time=time,
            tree_size=self.tree.size,
            root=self.tree.root(),
        )
        head = SignedHead.sign(header, self.sequencer_key)
        self.store.write_block(head, write)
        self.head = head
        return BlockResult(head, outcomes)

    def _check(self, item: Decoded, signatures_ok: bool, view: BlockView, now: int) -> None:
        """The dynamic rules, in DESIGN.md section 5's order, for a statically valid tx."""
        tx = item.tx
        if isinstance(tx, Issue):
            rules.check_not_duplicate(view, item)
            rules.meter_in_force(view, item, now)
            if not signatures_ok:
                raise rules.bad_signature(item)
            rules.check_issue(view, item, now)
            return
        if not signatures_ok:
            raise rules.bad_signature(item)
        rules.check_not_duplicate(view, item)
        if isinstance(tx, Transfer):
            rules.check_transfer(view, item)
        else:
            rules.check_regulate(item, now)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof of leaf `index` in the tree of `size` (default: now)."""
        return merkle.inclusion_proof(self.store, index, self.size if size is None else size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof between two tree sizes."""
        return merkle.consistency_proof(
            self.store, old_size, self.size if new_size is None else new_size
        )


def open_ledger(
    url: str,
    genesis_raw: bytes,
    sequencer_key: Keypair | None = None,
    verifier: SignatureVerifier | None = None,
) -> Ledger:
    """A ledger over the store at `url` for the genesis in `genesis_raw` (JSON bytes)."""
    return Ledger(Store(url), parse_genesis(genesis_raw), sequencer_key, verifier)
