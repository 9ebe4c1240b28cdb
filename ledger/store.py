"""Durable storage of the ledger through SQLAlchemy 2 Core (DESIGN.md section 6).

SQLite (WAL, synchronous=FULL: a commit is on disk when it returns) is the embedded default;
PostgreSQL by URL. A block, with its transactions, outputs, spends and Merkle nodes, is written
in one database transaction: it is there entirely or not at all. Rows are never updated.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from assets import Eca, Epa, Fa, Outpoint, Output, chain_id, parse_genesis
from ledger.blocks import BlockHeader, SignedHead
from service.database import (
    BUSY_TIMEOUT_MS,
    StoreError,
    StoreSchema,
    create_store_engine,
    open_schema,
    sqlite_file,
)

SCHEMA_VERSION = b"5"  # the meta table's schema, which releases before revisions refuse
SCHEMA_REVISION = "0002"  # the head of ledger/migrations
log = logging.getLogger(__name__)
# Serialises block writes on PostgreSQL, so that a restarted ledger waits for a COMMIT that a
# killed one sent before loading the state (the server completes it, however late).
_WRITER_LOCK = 0x5045_5452_4131  # "PETRA1"
_CHUNK = 500  # bound parameters per IN (...) query
# Bound parameters per query of a block's prefetch: one query for a block of thousands (both
# SQLite, 32,766, and PostgreSQL, 65,535, take more), the index probed in sorted order.
_PREFETCH_CHUNK = 16_000
_INSERT_CHUNK = 16_000  # values bound to one INSERT on SQLite (it allows 32,766)
_MANY_ROWS = 256  # rows of one table in a block from which they go many to an INSERT
_INSERT_STATEMENTS = 64  # INSERT statements kept, by table and row count
TXID_SIZE = 32
# The ledger's SQLite store is checkpointed by a thread of its own (`_Checkpointer`), never
# inside a block's commit: at 10^6 transactions a checkpoint copies back tens of megabytes of
# the txid index (a block dirties a random page of it per transaction) and syncs the file, and
# the writer used to stall for it, a third of the rate over the second it fell in.
CHECKPOINT_EVERY_S = 0.5  # how often the checkpointer looks at what was written
# Transactions written between passive checkpoints: each copies back the pages they dirtied,
# and a page dirtied by several blocks is copied once (more often costs CPU the blocks need).
CHECKPOINT_TRANSACTIONS = 20_000
CHECKPOINT_AT_LEAST_S = 30.0  # and at least this often while any block is written
# WAL pages past which the checkpointer also restarts the WAL (briefly holding writers back
# while it copies what they wrote meanwhile), so that it does not grow without end.
_WAL_RESTART_PAGES = 50_000
_RESTART_WAIT_MS = 100  # the longest a restarting checkpoint holds writers back
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)
blocks = Table(
    "blocks",
    metadata,
    Column("height", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False, unique=True),
    Column("prev", LargeBinary(32), nullable=False),
    Column("time", BigInteger, nullable=False),
    Column("tree_size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("sequencer_key", LargeBinary(32), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    # How far into its source (a replay's line number, a log's offset) the block reaches, so
    # that a restarted feeder resumes exactly after it; None when the source has no positions.
    Column("source_offset", BigInteger, nullable=True),
)
transactions = Table(
    "transactions",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),  # leaf index in the log
    Column("txid", LargeBinary(32), nullable=False, unique=True),
    Column("height", BigInteger, nullable=False),
    Column("type", String(16), nullable=False),
    Column("body", LargeBinary, nullable=False),  # canonical JSON with signatures: the leaf
    Column("leaf_hash", LargeBinary(32), nullable=False),  # the Merkle tree's level 0
)
# Issues and regulations rebuild the in-memory state at start-up; transfers need not be read.
Index(
    "ix_transactions_state",
    transactions.c.seq,
    sqlite_where=transactions.c.type != "transfer",
    postgresql_where=transactions.c.type != "transfer",
)
# Outputs and spends are keyed by the creating transaction's log position and the output's
# index: new rows land at the end of the tree instead of at random ids, so writing a block
# stays as cheap in a ledger of millions of transactions as in an empty one.
outputs = Table(
    "outputs",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),  # the creating tx
    Column("index", Integer, primary_key=True, autoincrement=False),
    Column("address", LargeBinary(32), nullable=False, index=True),
    Column("kind", String(3), nullable=False),
    Column("power", BigInteger),
    Column("start_interval", BigInteger),
    Column("end_interval", BigInteger),
    Column("amount", BigInteger),
    sqlite_with_rowid=False,
)
spends = Table(
    "spends",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),  # the spent output's
    Column("index", Integer, primary_key=True, autoincrement=False),
    Column("spender", BigInteger, nullable=False),  # the spending transaction
    sqlite_with_rowid=False,
)
# Perfect subtree hashes above the leaves (level >= 1); level 0 is transactions.leaf_hash.
merkle_nodes = Table(
    "merkle_nodes",
    metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("index", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
    sqlite_with_rowid=False,
)


SCHEMA = StoreSchema(
    metadata,
    meta,
    SCHEMA_VERSION,
    SCHEMA_REVISION,
    "ledger_alembic_version",
    Path(__file__).with_name("migrations"),
    "the ledger's store",
    "the ledger node",
    "petra ledger migrate",
)


@dataclass(frozen=True, slots=True)
class StoredTransaction:
    seq: int
    txid: bytes
    type: str
    body: bytes
    leaf_hash: bytes
    height: int | None = None  # the block holding it, once stored


@dataclass(frozen=True, slots=True)
class StoredOutput:
    outpoint: Outpoint
    output: Output
    seq: int  # the transaction that created it
    spent_by: int | None  # the transaction that spent it, if any


# An output by its transaction's id and its index: the builder's key, a plain tuple since it
# hashes in C (an `Outpoint` hashes in Python, a dozen times per transfer).
OutputKey = tuple[bytes, int]
# What the builder reads of a stored output: the output, the seq of the transaction that
# created it, and the seq and id of the one that spent it (both None if unspent).
OutputRow = tuple[Output, int, int | None, bytes | None]


@dataclass(slots=True)
class BlockWrite:
    """Everything one block adds, written atomically by `Store.write_block`."""

    transactions: list[StoredTransaction]
    outputs: list[tuple[OutputKey, Output, int]]  # the output, and its transaction's seq
    spends: list[tuple[OutputKey, int, int]]  # the spent output, its seq, the spender's seq
    nodes: list[tuple[int, int, bytes]]


class Store:
    """The ledger's tables. Reads are safe from any thread; one writer appends blocks."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._chain: bytes | None = None
        self._insert_sql: dict[tuple[str, int], str] = {}
        try:
            self.engine = create_store_engine(url)
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _no_checkpoint_in_commits)
            open_schema(self.engine, SCHEMA, url)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the store at {url}: {exc.args[0]}") from exc
        self._checkpointer: _Checkpointer | None = None
        self._checkpoints = sqlite_file(url) is not None  # a WAL to checkpoint, once written
        # SQLite: blocks are written through one connection, kept. A connection's page cache
        # is dropped whenever another connection committed since its last transaction, and
        # the pool hands out whichever was returned first: the writer then read back most of
        # the txid index's pages it was about to change, every block.
        self._writer: Connection | None = None
        self._writer_lock = threading.Lock()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        self.engine.dispose()

    # ------------------------------------------------------------- genesis

    def genesis(self) -> bytes | None:
        with self.engine.connect() as conn:
            return conn.scalar(select(meta.c.value).where(meta.c.key == "genesis"))

    def init_genesis(self, raw: bytes) -> None:
        """Bind the store to a genesis; refuse a store that already belongs to another."""
        existing = self.genesis()
        if existing is None:
            with self.engine.begin() as conn:
                conn.execute(meta.insert(), {"key": "genesis", "value": raw})
        elif existing != raw:
            raise StoreError(f"the store at {self.url} belongs to another genesis")

    # ------------------------------------------------------------- writing

    def write_block(
        self, head: SignedHead, block: BlockWrite, source_offset: int | None = None
    ) -> None:
        """Append one block atomically: all of it is durable when this returns, or none of it."""
        header = head.header
        if self._checkpoints:
            if self._checkpointer is None:
                self._checkpointer = _Checkpointer(self.engine)
            self._checkpointer.written += len(block.transactions)
        with self._writer_lock, self._write_transaction() as conn:
            self._lock_writers(conn)
            self._insert(
                conn,
                transactions,
                [
                    (t.seq, t.txid, header.height, t.type, t.body, t.leaf_hash)
                    for t in block.transactions
                ],
            )
            self._insert(conn, outputs, [_output_row(*o) for o in block.outputs])
            self._insert(
                conn, spends, [(seq, key[1], spender) for key, seq, spender in block.spends]
            )
            self._insert(conn, merkle_nodes, [n for n in block.nodes if n[0] > 0])
            self._insert(
                conn,
                blocks,
                [
                    (
                        header.height,
                        header.hash,
                        header.prev,
                        header.time,
                        header.tree_size,
                        header.root,
                        head.sequencer_key,
                        head.signature,
                        source_offset,
                    )
                ],
            )

    @contextmanager
    def _write_transaction(self) -> Iterator[Connection]:
        """A transaction on the writer's own connection (SQLite), or on one from the pool."""
        if self.engine.dialect.name != "sqlite":
            with self.engine.begin() as conn:
                yield conn
            return
        if self._writer is None:
            self._writer = self.engine.connect()
        try:
            with self._writer.begin():
                yield self._writer
        except BaseException:
            if self._writer.invalidated:  # its database connection was lost: a new one next
                self._writer.close()
                self._writer = None
            raise

    def _lock_writers(self, conn: Connection) -> None:
        if self.engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_WRITER_LOCK})")

    def wait_for_writers(self) -> None:
        """Return once no block write is in flight, even one by a process that died after
        sending its COMMIT: what is read next is all there is."""
        with self.engine.begin() as conn:
            self._lock_writers(conn)

    def checkpoint(self) -> None:
        """Copy back into the database file now what the WAL holds, as the checkpointer does
        from time to time (SQLite; elsewhere nothing to do), and start its count again: for a
        caller that wants the store quiet before it measures something else."""
        if self._checkpointer is not None:
            self._checkpointer.written = 0
            self._checkpointer.checkpoint()

    def source_offset(self) -> int | None:
        """How far into its source the last block reaches, if the source said."""
        with self.engine.connect() as conn:
            return conn.scalar(
                select(blocks.c.source_offset).order_by(blocks.c.height.desc()).limit(1)
            )

    @property
    def _mark(self) -> str:
        """The driver's positional parameter marker, for the SQL written by hand here."""
        return "?" if self.engine.dialect.paramstyle == "qmark" else "%s"

    def _insert(self, conn: Connection, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert `rows` (values in the table's column order) through the driver: a block
        writes thousands of rows, and per-row binding would dominate.

        On SQLite, `_MANY_ROWS` rows or more go many to a statement (`_INSERT_CHUNK` values):
        the driver lets go of the interpreter lock around each statement it runs, and, one
        statement a row, a large block's writer waited to take it back once a row, for most
        of the write. Fewer rows go one to a statement, which is compiled once: a statement
        of many rows is compiled for each count it is made for. `OR FAIL`: a conflict ends
        the statement where it is, not undoing the rows before it (a statement that may undo
        itself keeps a journal of its own, of every page it changes), and the whole block's
        transaction is rolled back anyway."""
        if not rows:
            return
        if self.engine.dialect.name != "sqlite" or len(rows) < _MANY_ROWS:
            conn.exec_driver_sql(self._insert_statement(table, 1), list(rows))
            return
        per_chunk = _INSERT_CHUNK // len(table.c)
        for start in range(0, len(rows), per_chunk):
            chunk = rows[start : start + per_chunk]
            values = tuple(value for row in chunk for value in row)
            conn.exec_driver_sql(self._insert_statement(table, len(chunk)), values)

    def _insert_statement(self, table: Table, count: int) -> str:
        """The INSERT of `count` rows into `table`, made once."""
        key = (table.name, count)
        sql = self._insert_sql.get(key)
        if sql is None:
            quote = self.engine.dialect.identifier_preparer.quote
            row = f"({', '.join(self._mark for _ in table.c)})"
            verb = "INSERT OR FAIL" if self.engine.dialect.name == "sqlite" else "INSERT"
            sql = (
                f"{verb} INTO {quote(table.name)} ({', '.join(quote(c.name) for c in table.c)}) "
                f"VALUES {', '.join([row] * count)}"
            )
            if len(self._insert_sql) >= _INSERT_STATEMENTS:  # blocks of every size: not all kept
                self._insert_sql.clear()
            self._insert_sql[key] = sql
        return sql

    # ------------------------------------------------------------- reading

    def head(self) -> SignedHead | None:
        """The latest block's signed head, or None before the first block."""
        with self.engine.connect() as conn:
            row = conn.execute(select(blocks).order_by(blocks.c.height.desc()).limit(1)).first()
        return None if row is None else self._head(row)

    def block(self, height: int) -> SignedHead | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(blocks).where(blocks.c.height == height)).first()
        return None if row is None else self._head(row)

    def heads(self) -> Iterator[SignedHead]:
        """Every block's signed head, by height."""
        with self.engine.connect() as conn:
            for row in conn.execute(select(blocks).order_by(blocks.c.height)):
                yield self._head(row)

    def _head(self, row: Any) -> SignedHead:
        chain = self._chain_id()
        header = BlockHeader(chain, row.height, row.prev, row.time, row.tree_size, row.root)
        return SignedHead(header, row.sequencer_key, row.signature)

    def _chain_id(self) -> bytes:
        if self._chain is None:
            raw = self.genesis()
            if raw is None:
                raise StoreError("the store has no genesis yet")
            self._chain = chain_id(parse_genesis(raw))
        return self._chain

    def outputs(self, outpoints: Collection[Outpoint]) -> dict[Outpoint, StoredOutput]:
        """The outputs among `outpoints` that exist, with whether and by what they were spent."""
        # Keyed by plain tuples, which hash in C: a block looks up thousands of rows here, and
        # the rows of a wanted transaction's other outputs are skipped before any object is made.
        wanted = {(o.txid, o.index): o for o in outpoints}
        found: dict[Outpoint, StoredOutput] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list({o.txid for o in outpoints})):
                for row in self._select_in(conn, _OUTPUT_ROWS, "t.txid", chunk):
                    outpoint = wanted.get((bytes(row[0]), row[1]))
                    if outpoint is not None:
                        found[outpoint] = _stored_output(outpoint, row)
        return found

    def prefetch(
        self, txids: Collection[bytes], inputs: Collection[OutputKey]
    ) -> tuple[set[bytes], dict[OutputKey, OutputRow]]:
        """What a block's build reads, in one query: which of `txids` (and of the inputs'
        transactions) are on the ledger, and the outputs among `inputs` that exist, with what
        spent them. Only the outputs asked for are read: spending one output of an issue of
        hundreds reads one row."""
        # (txid, index) pairs; index -1 (no output has it) asks only whether the txid is known
        pairs = list(dict.fromkeys([*((txid, -1) for txid in txids), *inputs]))
        known: set[bytes] = set()
        found: dict[OutputKey, OutputRow] = {}
        if not pairs:  # a block of transfers whose inputs were all in the ledger's memory
            return known, found
        with self.engine.connect() as conn:
            for chunk in _chunks(pairs, _PREFETCH_CHUNK // 2):
                row_marks = f"({self._mark}, {self._mark})"
                sql = (
                    f"WITH wanted(txid, idx) AS (VALUES {', '.join([row_marks] * len(chunk))}) "
                    f"{_PREFETCH_ROWS}"
                )
                values = tuple(value for pair in chunk for value in pair)
                for row in conn.exec_driver_sql(sql, values).all():
                    txid = bytes(row[0])
                    known.add(txid)
                    if row[1] is not None:
                        spender = None if row[10] is None else bytes(row[10])
                        found[(txid, row[1])] = (_output(row), row[2], row[9], spender)
        return known, found

    def _select_in(
        self, conn: Connection, base: str, column: str, values: Sequence[Any]
    ) -> Sequence[tuple[Any, ...]]:
        """`base WHERE column IN (values)`, through the driver: the hot reads of every block."""
        sql = f"{base} WHERE {column} IN ({', '.join(self._mark for _ in values)})"
        return conn.exec_driver_sql(sql, tuple(values)).all()

    def unspent(self, address: bytes) -> list[StoredOutput]:
        """The unspent outputs owned by `address`, oldest first."""
        sql = (
            f"{_OUTPUT_ROWS} WHERE o.address = {self._mark} AND s.spender IS NULL "
            'ORDER BY o.seq, o."index"'
        )
        with self.engine.connect() as conn:
            return [
                _stored_output(Outpoint(bytes(row[0]), row[1]), row)
                for row in conn.exec_driver_sql(sql, (address,))
            ]

    def transaction(self, txid: bytes) -> StoredTransaction | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(transactions).where(transactions.c.txid == txid)).first()
        return None if row is None else _stored_transaction(row)

    def txids_with_prefix(self, prefix: str, limit: int) -> list[bytes]:
        """Up to `limit` ids of transactions whose hex starts with `prefix` (hex digits, either
        case), smallest first. A range of the txid index, never LIKE or GLOB: no character of
        `prefix` is a wildcard, and a prefix that is not hex is a ValueError."""
        if not 0 < len(prefix) <= 2 * TXID_SIZE or not set(prefix) <= _HEX_DIGITS:
            raise ValueError(f"a txid prefix is 1 to {2 * TXID_SIZE} hex digits")
        lowest = bytes.fromhex(prefix.ljust(2 * TXID_SIZE, "0"))
        highest = bytes.fromhex(prefix.ljust(2 * TXID_SIZE, "f"))
        query = (
            select(transactions.c.txid)
            .where(transactions.c.txid.between(lowest, highest))
            .order_by(transactions.c.txid)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [bytes(row.txid) for row in conn.execute(query)]

    def state_transactions(self) -> Iterator[StoredTransaction]:
        """Every issue and regulate, in ledger order: what the in-memory state is built from."""
        query = (
            select(transactions)
            .where(transactions.c.type != "transfer")
            .order_by(transactions.c.seq)
        )
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=1000).execute(query):
                yield _stored_transaction(row)

    def transactions_in(self, first_seq: int, end_seq: int) -> list[StoredTransaction]:
        """Transactions at log positions first_seq <= seq < end_seq, in order."""
        query = (
            select(transactions)
            .where(transactions.c.seq >= first_seq, transactions.c.seq < end_seq)
            .order_by(transactions.c.seq)
        )
        with self.engine.connect() as conn:
            return [_stored_transaction(row) for row in conn.execute(query)]

    def block_transactions(self, head: SignedHead) -> list[StoredTransaction]:
        """The transactions of the block `head`, in order."""
        previous = self.block(head.header.height - 1)
        first = 0 if previous is None else previous.header.tree_size
        return self.transactions_in(first, head.header.tree_size)

    def blocks_from(self, height: int, limit: int) -> list[SignedHead]:
        """Up to `limit` signed heads from `height` on, in order."""
        query = (
            select(blocks).where(blocks.c.height >= height).order_by(blocks.c.height).limit(limit)
        )
        with self.engine.connect() as conn:
            return [self._head(row) for row in conn.execute(query)]

    def transaction_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(transactions)) or 0

    def perfect_node(self, level: int, index: int) -> bytes:
        """The Merkle hash of the perfect subtree (level, index); KeyError if not stored."""
        query = (
            select(transactions.c.leaf_hash).where(transactions.c.seq == index)
            if level == 0
            else select(merkle_nodes.c.hash).where(
                merkle_nodes.c.level == level, merkle_nodes.c.index == index
            )
        )
        with self.engine.connect() as conn:
            value = conn.scalar(query)
        if value is None:
            raise KeyError((level, index))
        return bytes(value)


def _no_checkpoint_in_commits(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")  # `_Checkpointer` does it


class _Checkpointer:
    """Checkpoints a SQLite store's WAL from a thread of its own, beside the writer, once
    `CHECKPOINT_TRANSACTIONS` were written or `CHECKPOINT_AT_LEAST_S` after any was.

    A passive checkpoint copies back what is committed without holding anyone back (SQLite
    runs it without the interpreter lock). Once the WAL holds more than `_WAL_RESTART_PAGES`
    pages, a restarting one then copies the little written meanwhile and lets the next block
    start the WAL over; writers wait for it `_RESTART_WAIT_MS` at most, past which it gives up
    until next time. A failure is logged and tried again: until then the WAL only grows."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.written = 0  # transactions written since the last checkpoint (by the writer)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        waited = 0.0
        while not self._stop.wait(CHECKPOINT_EVERY_S):
            waited += CHECKPOINT_EVERY_S
            if not self.written or (
                self.written < CHECKPOINT_TRANSACTIONS and waited < CHECKPOINT_AT_LEAST_S
            ):
                continue
            self.written, waited = 0, 0.0  # a block counted twice or not at all moves nothing
            try:
                self.checkpoint()
            except SQLAlchemyError as exc:
                log.warning("the ledger's WAL could not be checkpointed: %s", exc.args[0])

    def checkpoint(self) -> None:
        with self.engine.connect() as conn:
            row = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
            busy, pages = int(row[0]), int(row[1])  # and row[2], the pages copied back
            if not busy and pages > _WAL_RESTART_PAGES:
                # writers wait while it is pending: a reader that holds the WAL longer (a
                # backup) makes it give up after a moment, and it is tried again next time
                conn.exec_driver_sql(f"PRAGMA busy_timeout={_RESTART_WAIT_MS}")
                try:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(RESTART)").one()
                finally:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# Outputs with their transaction's id and their spend, if any: the columns _stored_output reads.
_OUTPUT_ROWS = (
    'SELECT t.txid, o."index", o.seq, o.address, o.kind, o.power, o.start_interval, '
    "o.end_interval, o.amount, s.spender FROM outputs o "
    "JOIN transactions t ON t.seq = o.seq "
    'LEFT JOIN spends s ON s.seq = o.seq AND s."index" = o."index"'
)
# The same columns, and the spender's id, for the (txid, index) pairs of a `wanted` table: a
# row for each wanted transaction on the ledger, with the wanted output if it has one (a
# regulation has none).
_PREFETCH_ROWS = (
    'SELECT t.txid, o."index", o.seq, o.address, o.kind, o.power, o.start_interval, '
    "o.end_interval, o.amount, s.spender, spender.txid FROM wanted w "
    "JOIN transactions t ON t.txid = w.txid "
    'LEFT JOIN outputs o ON o.seq = t.seq AND o."index" = w.idx '
    'LEFT JOIN spends s ON s.seq = o.seq AND s."index" = o."index" '
    "LEFT JOIN transactions spender ON spender.seq = s.spender"
)


def _stored_transaction(row: Any) -> StoredTransaction:
    return StoredTransaction(row.seq, row.txid, row.type, row.body, row.leaf_hash, row.height)


def _output_row(key: OutputKey, output: Output, seq: int) -> tuple[Any, ...]:
    """A row of `outputs`, in column order."""
    asset = output.asset
    at = (seq, key[1], output.address)
    if isinstance(asset, Fa):
        return (*at, "FA", None, None, None, asset.amount)
    return (*at, str(asset.kind), asset.power, asset.start, asset.end, None)


def _stored_output(outpoint: Outpoint, row: Sequence[Any]) -> StoredOutput:
    """The StoredOutput at `outpoint` from its row of `_OUTPUT_ROWS`."""
    return StoredOutput(outpoint, _output(row), row[2], row[9])


def _output(row: Sequence[Any]) -> Output:
    """The output in a row of `_OUTPUT_ROWS` or `_PREFETCH_ROWS`."""
    address, kind, power, start, end, amount = row[3:9]
    asset: Epa | Eca | Fa
    if kind == "FA":
        assert amount is not None
        asset = Fa(amount)
    else:
        assert power is not None and start is not None and end is not None
        asset = (Epa if kind == "EPA" else Eca)(power, start, end)
    return Output(asset, bytes(address))
