"""Checking a ledger store, typically one restored from a backup, against its genesis and a
head kept by `petra ledger audit`.

Every stored block is replayed from the genesis through the ledger's own rules into a fresh
ledger (`Ledger.append_block` with the stored head as the expected one, as a replica
re-validates its primary's blocks), so each recomputed header, root included, must be the
stored one; the stored rows must be the rows the replay writes. A kept head must be signed by
the genesis's sequencer and be a prefix of the store: same header at its height, same root at
its tree size. A store behind the kept head lost blocks the node had acknowledged."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any

from sqlalchemy import Table, select

from assets import Genesis
from assets.canonical import canonical_json
from assets.codec import genesis_to_wire
from ledger import merkle
from ledger.blocks import SignedHead
from ledger.client import head_problem
from ledger.ledger import Divergence, Ledger
from ledger.store import Store, StoredTransaction, merkle_nodes, outputs, spends

PAGE_BLOCKS = 500  # stored heads read per query
SCRATCH_STORE = "sqlite://"  # the fresh ledger the blocks are replayed into: memory only

BlockDone = Callable[[int, int], None]  # (height replayed, height of the store's head)


@dataclass(frozen=True, slots=True)
class Finding:
    """What is wrong with the store, in one sentence, and the evidence (JSON values)."""

    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoreAudit:
    """The outcome of `check_store`: the blocks replayed, the store's head (None when it holds
    no block), and the first finding (None when the store is clean)."""

    blocks: int
    head: SignedHead | None
    finding: Finding | None

    @property
    def clean(self) -> bool:
        return self.finding is None


class _Found(Exception):
    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.reason)
        self.finding = finding


def check_store(
    store: Store,
    genesis: Genesis,
    kept: SignedHead | None = None,
    block_done: BlockDone | None = None,
    scratch_url: str = SCRATCH_STORE,
) -> StoreAudit:
    """Replay every block of `store` from `genesis` into a fresh ledger at `scratch_url` and
    compare; then, given `kept`, check it against the store. Stops at the first finding."""
    fresh = Ledger(Store(scratch_url), genesis)
    replayed = 0
    try:
        _check_genesis(store, genesis)
        last = store.head()
        total = 0 if last is None else last.header.height
        for head in _stored_heads(store):
            _replay_block(store, fresh, head)
            replayed = head.header.height
            if block_done is not None:
                block_done(replayed, total)
        _check_rows_beyond_head(store, fresh.durable_head)
        for table in (outputs, spends, merkle_nodes):
            _compare_table(store, fresh.store, table)
        if kept is not None:
            _check_kept(fresh, kept)
    except _Found as found:
        return StoreAudit(replayed, fresh.durable_head, found.finding)
    finally:
        fresh.store.close()
    return StoreAudit(replayed, fresh.durable_head, None)


def _check_genesis(store: Store, genesis: Genesis) -> None:
    stored = store.genesis()
    if stored is None:
        raise _Found(Finding("the store holds no genesis: it is not a ledger's store"))
    if stored != canonical_json(genesis_to_wire(genesis)):
        raise _Found(
            Finding(
                "the store belongs to another genesis than the one given",
                {"stored_genesis": stored.decode(errors="replace")},
            )
        )


def _stored_heads(store: Store) -> Iterator[SignedHead]:
    """Every stored head by height, a page at a time (no query stays open while replaying)."""
    height = 1
    while page := store.blocks_from(height, PAGE_BLOCKS):
        yield from page
        height = page[-1].header.height + 1


def _replay_block(store: Store, fresh: Ledger, head: SignedHead) -> None:
    """Re-validate one stored block after the ones replayed so far; its rows must be the
    replay's."""
    height = head.header.height
    evidence: dict[str, Any] = {"stored_head": head.to_wire()}
    problem = head_problem(head, fresh.genesis)
    if problem is not None:
        raise _Found(Finding(problem, evidence))
    last = fresh.durable_head
    expected_height = 1 if last is None else last.header.height + 1
    if height != expected_height:
        raise _Found(Finding(f"block {expected_height} is missing from the store", evidence))
    first = 0 if last is None else last.header.tree_size
    stored = store.transactions_in(first, head.header.tree_size)
    if len(stored) != head.header.tree_size - first:
        raise _Found(
            Finding(
                f"block {height} covers log positions {first} to {head.header.tree_size - 1}, "
                f"but the store holds {len(stored)} transactions there",
                evidence,
            )
        )
    try:
        fresh.append_block([t.body for t in stored], head.header.time, expected=head)
    except Divergence as exc:
        computed = None if exc.computed is None else exc.computed.to_wire()
        raise _Found(Finding(str(exc), {**evidence, "computed_header": computed})) from None
    except ValueError as exc:  # a block time out of range or before the previous block's
        raise _Found(Finding(f"block {height}: {exc}", evidence)) from None
    replayed = fresh.store.transactions_in(first, head.header.tree_size)
    for kept, made in zip(stored, replayed, strict=True):
        if kept != made:
            raise _Found(
                Finding(
                    f"the stored row of transaction {kept.seq} is not the one its replay makes",
                    {**evidence, "stored_row": _row(kept), "replayed_row": _row(made)},
                )
            )


def _row(stored: StoredTransaction) -> dict[str, Any]:
    return {
        "seq": stored.seq,
        "txid": stored.txid.hex(),
        "height": stored.height,
        "type": stored.type,
        "leaf_hash": stored.leaf_hash.hex(),
    }


def _check_rows_beyond_head(store: Store, head: SignedHead | None) -> None:
    size = 0 if head is None else head.header.tree_size
    count = store.transaction_count()
    if count != size:
        raise _Found(
            Finding(
                f"the store holds {count} transactions but its blocks cover {size}",
                {"transactions": count, "tree_size": size},
            )
        )


def _compare_table(store: Store, fresh: Store, table: Table) -> None:
    """Every row of `table` in `store` is the row the replay wrote, and no row more."""
    for stored, made in zip_longest(_rows(store, table), _rows(fresh, table)):
        if stored != made:
            raise _Found(
                Finding(
                    f"the store's {table.name} table is not the one its blocks make",
                    {
                        "table": table.name,
                        "stored_row": _shown(stored),
                        "replayed_row": _shown(made),
                    },
                )
            )


def _rows(store: Store, table: Table) -> Iterator[tuple[Any, ...]]:
    query = select(table).order_by(*table.primary_key.columns)
    with store.engine.connect() as conn:
        for row in conn.execution_options(yield_per=5000).execute(query):
            yield tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)


def _shown(row: tuple[Any, ...] | None) -> list[Any] | None:
    if row is None:
        return None
    return [v.hex() if isinstance(v, bytes) else v for v in row]


def _check_kept(fresh: Ledger, kept: SignedHead) -> None:
    """The kept head is the genesis's sequencer's and a prefix of the replayed store."""
    evidence: dict[str, Any] = {"kept_head": kept.to_wire()}
    problem = head_problem(kept, fresh.genesis)
    if problem is not None:
        raise _Found(Finding(f"the kept head: {problem}", evidence))
    head = fresh.durable_head
    evidence["store_head"] = None if head is None else head.to_wire()
    height = 0 if head is None else head.header.height
    size = 0 if head is None else head.header.tree_size
    if kept.header.height > height or kept.header.tree_size > size:
        raise _Found(
            Finding(
                f"the store is older than the kept head: it ends at block {height} (tree size "
                f"{size}), the node had acknowledged block {kept.header.height} (tree size "
                f"{kept.header.tree_size}); blocks were lost in the restore",
                evidence,
            )
        )
    stored = fresh.store.block(kept.header.height)
    root = merkle.tree_root(fresh.store, kept.header.tree_size)
    if stored is None or stored.header != kept.header or root != kept.header.root:
        evidence["store_block"] = None if stored is None else stored.to_wire()
        evidence["store_root_at_kept_size"] = root.hex()
        raise _Found(
            Finding(
                f"the kept head is not consistent with the store: block {kept.header.height} "
                "or the root at its tree size differs",
                evidence,
            )
        )
