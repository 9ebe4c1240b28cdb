"""The DSO node's own database (SQLAlchemy 2 Core; SQLite by default, PostgreSQL by URL).

It holds what the ledger does not: operators and their hashed tokens, the append-only audit log,
the regulations this node signed and what became of them, meter owners and default limits,
bills and their reconciliation, controller settings and proposals, and an index of the ledger's
blocks and transactions that the follower keeps.

The audit log is append-only twice over: database triggers refuse UPDATE and DELETE, and each
entry carries the SHA-256 of the previous one, so `verify_audit` finds a row changed behind the
triggers' back.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from assets import Outpoint, canonical_json
from service.database import (
    StoreBusy,
    StoreError,
    StoreSchema,
    hold_store,
    open_service_database,
    service_meta,
)

SCHEMA_VERSION = "2"  # the meta table's schema, which releases before revisions refuse
SCHEMA_REVISION = "0002"  # the head of dso/migrations
_WRITER_LOCK = 0x5045_5452_4144  # "PETRAD": one DSO writer at a time on PostgreSQL
STORE_ROLE = "DSO"  # the role `hold_store` holds the database as
GENESIS_HASH = bytes(32)  # the audit chain's first `prev`

metadata = MetaData()

meta = service_meta("dso", metadata)
operators = Table(
    "dso_operators",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(80), nullable=False),
    Column("revoked_at", BigInteger),
)
audit_log = Table(
    "dso_audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("actor", String(80), nullable=False),
    Column("role", String(16), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(200), nullable=False),
    Column("detail", Text, nullable=False),
    Column("outcome", String(64), nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("entry_hash", LargeBinary(32), nullable=False, unique=True),
)
regulations = Table(
    "dso_regulations",
    metadata,
    Column("nonce", BigInteger, primary_key=True, autoincrement=False),
    Column("txid", LargeBinary(32), nullable=False, unique=True),
    Column("time", BigInteger, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("actor", String(80), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # pending, accepted, rejected
    Column("code", String(64)),
    Column("message", Text),
    Column("height", BigInteger),
    # What the change was (for the audit entry of its outcome) and what to record once the
    # ledger accepts it, so a regulation accepted on a later retry completes the same way.
    Column("role", String(16), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(200), nullable=False),
    Column("detail", Text, nullable=False),
    Column("effect", Text, nullable=False),
)
meter_owners = Table(
    "dso_meter_owners",
    metadata,
    Column("meter", String(64), primary_key=True),
    Column("owner", String(128)),
    Column("follows_default", Boolean, nullable=False),
)
default_limits = Table(
    "dso_default_limits",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("time", BigInteger, nullable=False),
    Column("max_epa", BigInteger, nullable=False),
    Column("max_eca", BigInteger, nullable=False),
)
bills = Table(
    "dso_bills",
    metadata,
    Column("id", LargeBinary(32), primary_key=True),
    Column("meter", String(64), nullable=False),
    Column("interval", BigInteger, nullable=False),
    Column("owner", String(128)),
    Column("closed_height", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # pending, reconciled, flagged
    Column("discrepancies", Text, nullable=False),
    UniqueConstraint("meter", "interval", name="dso_bills_one_per_interval"),
)
Index("dso_bills_by_interval", bills.c.interval)
Index("dso_bills_by_owner", bills.c.owner, bills.c.interval)
Index("dso_bills_by_status", bills.c.status)  # the bills counted by status at every scrape
bill_deposits = Table(
    "dso_bill_deposits",
    metadata,
    Column("tx", LargeBinary(32), primary_key=True),
    Column("index", Integer, primary_key=True, autoincrement=False),
    Column("bill", LargeBinary(32), primary_key=True),
    Column("meter", String(64), nullable=False),
    Column("interval", BigInteger, nullable=False),
)
chain_blocks = Table(
    "dso_chain_blocks",
    metadata,
    Column("height", BigInteger, primary_key=True, autoincrement=False),
    Column("time", BigInteger, nullable=False),
    Column("tree_size", BigInteger, nullable=False),
)
chain_transactions = Table(
    # Every transaction on the ledger, in ledger order: issues and regulations for the
    # schedule and the forecast, transfers for the deposits bills list (a database indexed
    # before transfers were kept has none of the earlier ones: those are read from the ledger).
    "dso_chain_transactions",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("txid", LargeBinary(32), nullable=False, unique=True),
    Column("height", BigInteger, nullable=False),
    Column("type", String(16), nullable=False),
    Column("meter", String(64)),
    Column("body", LargeBinary, nullable=False),
    Column("interval", BigInteger, nullable=False),  # of its block's time
    # An issue's EPA span (first start, last end), so a bill's reconciliation reads only the
    # issues that can count for its interval, not the meter's whole history.
    Column("epa_first", BigInteger),
    Column("epa_last", BigInteger),
)
Index("dso_chain_by_meter", chain_transactions.c.meter, chain_transactions.c.height)
settings = Table(
    "dso_settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
proposals = Table(
    "dso_proposals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("interval", BigInteger, nullable=False),
    Column("price_consumption", BigInteger, nullable=False),
    Column("price_production", BigInteger, nullable=False),
    Column("net_load_w", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # open, accepted, superseded
    Column("regulation", BigInteger),
)

_APPEND_ONLY = {
    "sqlite": [
        f"CREATE TRIGGER IF NOT EXISTS dso_audit_no_{verb.lower()} BEFORE {verb} ON dso_audit_log "
        "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        for verb in ("UPDATE", "DELETE")
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION dso_audit_append_only() RETURNS trigger AS $$ BEGIN "
        "RAISE EXCEPTION 'the audit log is append-only'; END $$ LANGUAGE plpgsql",
        "DROP TRIGGER IF EXISTS dso_audit_append_only ON dso_audit_log",
        "CREATE TRIGGER dso_audit_append_only BEFORE UPDATE OR DELETE ON dso_audit_log "
        "FOR EACH ROW EXECUTE FUNCTION dso_audit_append_only()",
    ],
}


SCHEMA = StoreSchema(
    metadata,
    meta,
    SCHEMA_VERSION,
    SCHEMA_REVISION,
    "dso_alembic_version",
    Path(__file__).with_name("migrations"),
    "the DSO database",
    "the DSO",
    "petra dso migrate",
    _APPEND_ONLY,
)

DsoStoreError = StoreError  # the DSO database cannot be used as asked


class NodeRunning(StoreBusy):
    """Another process (a serving node, or an offline recovery) holds the database."""


class Conflict(Exception):
    """A row that must be unique exists already (an operator name)."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    role: str
    created_at: int
    created_by: str
    revoked_at: int | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at_ms: int
    actor: str
    role: str
    action: str
    target: str
    detail: dict[str, Any]
    outcome: str
    prev_hash: bytes
    entry_hash: bytes

    def to_wire(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at_ms": self.at_ms,
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
            "outcome": self.outcome,
            "hash": self.entry_hash.hex(),
        }


def audit_hash(prev: bytes, fields: dict[str, Any]) -> bytes:
    """SHA-256 over the previous entry's hash and this entry's canonical JSON."""
    return hashlib.sha256(prev + canonical_json(fields)).digest()


@dataclass(frozen=True, slots=True)
class RegulationRecord:
    nonce: int
    txid: bytes
    time: int
    body: bytes
    actor: str
    created_ms: int
    status: str
    code: str | None
    message: str | None
    height: int | None
    role: str
    action: str
    target: str
    detail: dict[str, Any]
    effect: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredBill:
    id: bytes
    meter: str
    interval: int
    owner: str | None
    closed_height: int
    amount: int
    body: bytes
    received_ms: int
    status: str
    discrepancies: list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class ChainTransaction:
    seq: int
    txid: bytes
    height: int
    type: str
    meter: str | None
    body: bytes
    interval: int
    epa_first: int | None = None
    epa_last: int | None = None


@dataclass(frozen=True, slots=True)
class IndexedTransaction:
    """A transaction as the index holds it: its block's height and time (unix seconds)."""

    height: int
    time: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Proposal:
    id: int
    interval: int
    price_consumption: int
    price_production: int
    net_load_w: int
    reason: str
    created_ms: int
    status: str
    regulation: int | None


class DsoStore:
    """The DSO node's tables. Safe to use from several threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = open_service_database(url, SCHEMA)
        self._write_lock = threading.Lock()
        # The driver's positional parameter marker, for the SQL of the intake written by hand:
        # a batch of bills reads and writes through the driver, without building statements.
        self._mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"

    def close(self) -> None:
        self.engine.dispose()

    def _marks(self, values: Collection[Any]) -> str:
        return ", ".join([self._mark] * len(values))

    @staticmethod
    def _rows(conn: Connection, sql: str, values: Sequence[Any]) -> Sequence[tuple[Any, ...]]:
        """The rows `sql` reads, as plain tuples, on a cursor of the driver's own within
        `conn`'s transaction: SQLAlchemy's execution context and result object cost more than
        one of the intake's small reads."""
        cursor = conn.connection.cursor()
        try:
            cursor.execute(sql, tuple(values))
            rows: Sequence[tuple[Any, ...]] = cursor.fetchall()
            return rows
        finally:
            cursor.close()

    @staticmethod
    def _write_many(conn: Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """`sql` once per row, as `_rows` reads: on a cursor of the driver's within `conn`."""
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(sql, rows)
        finally:
            cursor.close()

    def _insert_sql(self, table: Table) -> str:
        """INSERT of every column of `table`, values given as tuples in the columns' order."""
        quote = self.engine.dialect.identifier_preparer.quote
        columns = ", ".join(quote(c.name) for c in table.c)
        return f"INSERT INTO {table.name} ({columns}) VALUES ({self._marks(list(table.c))})"

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A write transaction. Writers take turns, within this process and (on PostgreSQL)
        across processes, because each audit entry chains on the one before it."""
        with self._write_lock, self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _WRITER_LOCK})
            elif self.engine.dialect.name == "sqlite":
                # pysqlite begins no transaction before a savepoint, whose release would then
                # commit (and sync) on its own: begin one, so the whole block commits once.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn

    @contextmanager
    def exclusive(self, command: str = "petra dso serve") -> Iterator[None]:
        """Hold the database for one process: the node serving it, or an offline command that
        must run while no node does, `command` naming it to whoever is refused. NodeRunning
        names the process that holds it already (`service.database.hold_store`)."""
        held = ExitStack()
        try:
            held.enter_context(hold_store(self.engine, STORE_ROLE, command))
        except StoreBusy as exc:
            raise NodeRunning(str(exc)) from None
        with held:
            yield

    # ------------------------------------------------------------- meta and settings

    def bind_chain(self, chain: bytes) -> None:
        """Tie the database to one chain; refuse a database that belongs to another."""
        with self.engine.begin() as conn:
            existing = conn.scalar(select(meta.c.value).where(meta.c.key == "chain"))
            if existing is None:
                conn.execute(meta.insert(), {"key": "chain", "value": chain.hex()})
            elif existing != chain.hex():
                raise DsoStoreError(f"the DSO database at {self.url} belongs to another chain")

    def setting(self, key: str) -> Any:
        with self.engine.connect() as conn:
            raw = conn.scalar(select(settings.c.value).where(settings.c.key == key))
        return None if raw is None else json.loads(raw)

    def put_setting(self, conn: Connection, key: str, value: Any) -> None:
        raw = json.dumps(value, sort_keys=True)
        done = conn.execute(update(settings).where(settings.c.key == key).values(value=raw))
        if done.rowcount == 0:
            conn.execute(insert(settings), {"key": key, "value": raw})

    # ------------------------------------------------------------- operators

    def add_operator(self, conn: Connection, operator: Operator, token_hash: bytes) -> None:
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(operators),
                    {
                        "name": operator.name,
                        "role": operator.role,
                        "token_hash": token_hash,
                        "created_at": operator.created_at,
                        "created_by": operator.created_by,
                        "revoked_at": None,
                    },
                )
        except IntegrityError:
            raise Conflict(f"an operator named {operator.name!r} exists already") from None

    def operator_by_token(self, token_hash: bytes) -> Operator | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(operators).where(operators.c.token_hash == token_hash)
            ).first()
        return None if row is None else _operator(row)

    def operators(self) -> list[Operator]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(operators).order_by(operators.c.name)).all()
        return [_operator(r) for r in rows]

    def active_admins(self, conn: Connection) -> list[str]:
        """The names of the admins whose tokens are not revoked, within `conn`'s transaction."""
        query = select(operators.c.name).where(
            operators.c.role == "admin", operators.c.revoked_at.is_(None)
        )
        return sorted(conn.scalars(query))

    def revoke_operator(self, conn: Connection, name: str) -> bool:
        done = conn.execute(
            update(operators)
            .where(operators.c.name == name, operators.c.revoked_at.is_(None))
            .values(revoked_at=int(time.time()))
        )
        return bool(done.rowcount)

    # ------------------------------------------------------------- audit log

    def audit(
        self,
        conn: Connection,
        actor: str,
        role: str,
        action: str,
        target: str,
        detail: dict[str, Any],
        outcome: str = "ok",
    ) -> AuditEntry:
        """Append an entry in `conn`'s transaction: it is durable exactly when the change is."""
        prev = conn.scalar(select(audit_log.c.entry_hash).order_by(audit_log.c.seq.desc()).limit(1))
        prev_hash = GENESIS_HASH if prev is None else bytes(prev)
        seq = (conn.scalar(select(func.max(audit_log.c.seq))) or 0) + 1
        fields: dict[str, Any] = {
            "seq": seq,
            "at_ms": now_ms(),
            "actor": actor,
            "role": role,
            "action": action,
            "target": target,
            "detail": detail,
            "outcome": outcome,
        }
        entry_hash = audit_hash(prev_hash, fields)
        conn.execute(
            insert(audit_log),
            {
                **fields,
                "detail": canonical_json(detail).decode(),
                "prev_hash": prev_hash,
                "entry_hash": entry_hash,
            },
        )
        return AuditEntry(**{**fields, "prev_hash": prev_hash, "entry_hash": entry_hash})

    def audit_entries(self, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(audit_log)
                .where(audit_log.c.seq > after)
                .order_by(audit_log.c.seq)
                .limit(limit)
            ).all()
        return [_audit_entry(r) for r in rows]

    def verify_audit(self) -> tuple[int, str | None]:
        """(entries checked, the first problem found or None): the hash chain, seq by seq."""
        prev, count = GENESIS_HASH, 0
        with self.engine.connect() as conn:
            for row in conn.execute(select(audit_log).order_by(audit_log.c.seq)):
                entry = _audit_entry(row)
                count += 1
                if entry.seq != count:
                    return count, f"entry {count} is missing (the next is {entry.seq})"
                fields = {
                    k: getattr(entry, k)
                    for k in ("seq", "at_ms", "actor", "role", "action", "target", "detail")
                }
                fields["outcome"] = entry.outcome
                if entry.prev_hash != prev or audit_hash(prev, fields) != entry.entry_hash:
                    return count, f"entry {entry.seq} was changed after it was written"
                prev = entry.entry_hash
        return count, None

    # ------------------------------------------------------------- regulations

    def next_nonce(self, conn: Connection) -> int:
        """Above every nonce this node used, and above the clock in µs, so a database
        restored from a backup never reuses one."""
        last = conn.scalar(select(func.max(regulations.c.nonce))) or 0
        return max(last + 1, time.time_ns() // 1000)

    def add_regulation(self, conn: Connection, record: RegulationRecord) -> None:
        row = {f: getattr(record, f) for f in RegulationRecord.__slots__}
        row["detail"] = json.dumps(record.detail, sort_keys=True)
        row["effect"] = json.dumps(record.effect, sort_keys=True)
        conn.execute(insert(regulations), row)

    def settle_regulation(
        self,
        conn: Connection,
        nonce: int,
        status: str,
        code: str | None,
        message: str | None,
        height: int | None,
    ) -> bool:
        """Record the ledger's answer to a pending regulation; False if it was settled already
        (a retry and a request raced)."""
        done = conn.execute(
            update(regulations)
            .where(regulations.c.nonce == nonce, regulations.c.status == "pending")
            .values(status=status, code=code, message=message, height=height)
        )
        return bool(done.rowcount)

    def regulation(self, nonce: int) -> RegulationRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(regulations).where(regulations.c.nonce == nonce)).first()
        return None if row is None else _regulation(row)

    def regulations(self, status: str | None = None, limit: int = 1000) -> list[RegulationRecord]:
        query = select(regulations).order_by(regulations.c.nonce.desc()).limit(limit)
        if status is not None:
            query = query.where(regulations.c.status == status)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_regulation(r) for r in rows]

    # ------------------------------------------------------------- meters and defaults

    def set_meter_owner(
        self, conn: Connection, meter: str, owner: str | None, follows_default: bool
    ) -> None:
        values = {"owner": owner, "follows_default": follows_default}
        done = conn.execute(
            update(meter_owners).where(meter_owners.c.meter == meter).values(**values)
        )
        if done.rowcount == 0:
            conn.execute(insert(meter_owners), {"meter": meter, **values})

    def meter_owner(self, meter: str) -> str | None:
        with self.engine.connect() as conn:
            owner: str | None = conn.scalar(
                select(meter_owners.c.owner).where(meter_owners.c.meter == meter)
            )
        return owner

    def owners_of(self, conn: Connection, meters: set[str]) -> dict[str, str | None]:
        """The owners of those of `meters` that have one recorded, within `conn`."""
        if not meters:
            return {}
        sql = f"SELECT meter, owner FROM {meter_owners.name} WHERE meter IN ({self._marks(meters)})"
        return dict(self._rows(conn, sql, sorted(meters)))

    def meter_owners(self) -> dict[str, tuple[str | None, bool]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(meter_owners)).all()
        return {r.meter: (r.owner, r.follows_default) for r in rows}

    def add_default_limits(self, conn: Connection, time_: int, max_epa: int, max_eca: int) -> None:
        conn.execute(
            insert(default_limits), {"time": time_, "max_epa": max_epa, "max_eca": max_eca}
        )

    def default_limits(self) -> list[tuple[int, int, int]]:
        """(time, max_epa, max_eca) in the order they were set."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(default_limits).order_by(default_limits.c.seq)).all()
        return [(r.time, r.max_epa, r.max_eca) for r in rows]

    # ------------------------------------------------------------- bills

    def add_bills(
        self, conn: Connection, new: Sequence[tuple[StoredBill, Sequence[Outpoint]]]
    ) -> None:
        """Store new bills at once, within `conn`'s transaction; the caller checked, under the
        writer's turn, that none is stored and no meter has another for the same interval."""
        if not new:
            return
        self._write_many(conn, self._insert_sql(bills), [_bill_tuple(bill) for bill, _ in new])
        listed = [
            (d.txid, d.index, b.id, b.meter, b.interval) for b, deposits in new for d in deposits
        ]
        if listed:
            self._write_many(conn, self._insert_sql(bill_deposits), listed)

    def bills_of_intervals(
        self, conn: Connection, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], StoredBill]:
        """The stored bills of these (meter, interval), within `conn`'s transaction."""
        if not keys:
            return {}
        # Two lists rather than pairs, which SQLite would answer by scanning every bill: the
        # unique index on (meter, interval) finds the rows, and the pairs not asked are dropped.
        meters = sorted({meter for meter, _ in keys})
        intervals = sorted({interval for _, interval in keys})
        sql = (
            f"{_BILL_ROWS} WHERE meter IN ({self._marks(meters)}) "
            f'AND "interval" IN ({self._marks(intervals)})'
        )
        wanted = set(keys)
        found = (_bill_of_row(row) for row in self._rows(conn, sql, [*meters, *intervals]))
        return {(b.meter, b.interval): b for b in found if (b.meter, b.interval) in wanted}

    def bill(self, bill_id: bytes) -> StoredBill | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(bills).where(bills.c.id == bill_id)).first()
        return None if row is None else _stored_bill(row)

    def bills(
        self,
        first: int | None = None,
        last: int | None = None,
        meter: str | None = None,
        owner: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[StoredBill]:
        query = select(bills).order_by(bills.c.interval, bills.c.meter)
        if first is not None:
            query = query.where(bills.c.interval >= first)
        if last is not None:
            query = query.where(bills.c.interval <= last)
        if meter is not None:
            query = query.where(bills.c.meter == meter)
        if owner is not None:
            query = query.where(bills.c.owner == owner)
        if status is not None:
            query = query.where(bills.c.status == status)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_stored_bill(r) for r in conn.execute(query)]

    def set_bill_status(self, bill_id: bytes, status: str, discrepancies: list[Any]) -> None:
        with self.engine.begin() as conn:
            self.settle_bills(conn, [(bill_id, status, discrepancies)])

    def settle_bills(
        self, conn: Connection, settled: Sequence[tuple[bytes, str, list[Any]]]
    ) -> None:
        """Record each (bill id, status, discrepancies) within `conn`'s transaction."""
        if not settled:
            return
        conn.execute(
            update(bills)
            .where(bills.c.id == bindparam("bill_id"))
            .values(status=bindparam("new_status"), discrepancies=bindparam("found")),
            [
                {"bill_id": the_id, "new_status": status, "found": json.dumps(found)}
                for the_id, status, found in settled
            ],
        )

    def listings(
        self, conn: Connection, txids: Sequence[bytes]
    ) -> dict[Outpoint, list[tuple[bytes, str, int]]]:
        """For each output of `txids` that stored bills list, (bill, meter, interval) of each."""
        found: dict[Outpoint, list[tuple[bytes, str, int]]] = {}
        sql = (
            f'SELECT tx, "index", bill, meter, "interval" FROM {bill_deposits.name} '
            f"WHERE tx IN ({self._marks(txids)})"
        )
        for tx, index, bill, meter, interval in self._rows(conn, sql, txids):
            found.setdefault(Outpoint(bytes(tx), index), []).append((bytes(bill), meter, interval))
        return found

    # ------------------------------------------------------------- the ledger index

    def indexed_height(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.max(chain_blocks.c.height))) or 0)

    def index_block(
        self, height: int, time_: int, tree_size: int, found: Sequence[ChainTransaction]
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(chain_blocks), {"height": height, "time": time_, "tree_size": tree_size}
            )
            if found:
                conn.execute(
                    insert(chain_transactions),
                    [{f: getattr(t, f) for f in ChainTransaction.__slots__} for t in found],
                )

    def block_times(self, heights: Sequence[int]) -> dict[int, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(chain_blocks.c.height, chain_blocks.c.time).where(
                    chain_blocks.c.height.in_(list(heights))
                )
            ).all()
        return {r.height: r.time for r in rows}

    def chain_transactions(
        self,
        type_: str | Sequence[str] | None = None,
        meter: str | None = None,
        max_height: int | None = None,
    ) -> Iterator[ChainTransaction]:
        query = select(chain_transactions).order_by(chain_transactions.c.seq)
        if isinstance(type_, str):
            query = query.where(chain_transactions.c.type == type_)
        elif type_ is not None:
            query = query.where(chain_transactions.c.type.in_(list(type_)))
        if meter is not None:
            query = query.where(chain_transactions.c.meter == meter)
        if max_height is not None:
            query = query.where(chain_transactions.c.height <= max_height)
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                yield _chain_transaction(row)

    def indexed_transactions(
        self, conn: Connection, txids: Sequence[bytes]
    ) -> dict[bytes, IndexedTransaction]:
        """The transactions among `txids` the index holds, with their block's time."""
        if not txids:
            return {}
        sql = (
            f"SELECT t.txid, t.height, b.time, t.body FROM {chain_transactions.name} t "
            f"JOIN {chain_blocks.name} b ON b.height = t.height "
            f"WHERE t.txid IN ({self._marks(txids)})"
        )
        return {
            bytes(txid): IndexedTransaction(height, time_, bytes(body))
            for txid, height, time_, body in self._rows(conn, sql, txids)
        }

    def issues_of(
        self, conn: Connection, meters: Sequence[str], first: int, last: int, max_height: int
    ) -> list[ChainTransaction]:
        """The issues of `meters` up to `max_height` that can count in a bill of an interval
        from `first` to `last` (those with EPA covering one of them, and those in a block of
        one: their FA), in ledger order."""
        if not meters:
            return []
        m = self._mark
        sql = (
            f"{_CHAIN_ROWS} WHERE type = 'issue' AND meter IN ({self._marks(meters)}) "
            f'AND height <= {m} AND ("interval" BETWEEN {m} AND {m} '
            f"OR (epa_first <= {m} AND epa_last >= {m})) ORDER BY seq"
        )
        values = (*meters, max_height, first, last, last, first)
        return [_chain_of_row(row) for row in self._rows(conn, sql, values)]

    # ------------------------------------------------------------- proposals

    def add_proposal(self, conn: Connection, proposal: Proposal) -> int:
        conn.execute(
            update(proposals).where(proposals.c.status == "open").values(status="superseded")
        )
        values = {f: getattr(proposal, f) for f in Proposal.__slots__ if f != "id"}
        key = conn.execute(insert(proposals), values).inserted_primary_key
        assert key is not None
        return int(key[0])

    def proposal(self, proposal_id: int) -> Proposal | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(proposals).where(proposals.c.id == proposal_id)).first()
        return None if row is None else Proposal(**row._mapping)

    def proposals(self, limit: int = 100) -> list[Proposal]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(proposals).order_by(proposals.c.id.desc()).limit(limit))
            return [Proposal(**r._mapping) for r in rows]

    def accept_proposal(self, conn: Connection, proposal_id: int, regulation: int) -> bool:
        """Mark an open proposal accepted by `regulation`; False if it is not open (any more)."""
        done = conn.execute(
            update(proposals)
            .where(proposals.c.id == proposal_id, proposals.c.status == "open")
            .values(status="accepted", regulation=regulation)
        )
        return bool(done.rowcount)

    def set_proposal_status(self, conn: Connection, proposal_id: int, status: str) -> None:
        conn.execute(update(proposals).where(proposals.c.id == proposal_id).values(status=status))


def _chain_transaction(row: Any) -> ChainTransaction:
    values = dict(row._mapping)
    values["txid"], values["body"] = bytes(values["txid"]), bytes(values["body"])
    return ChainTransaction(**values)


def _operator(row: Any) -> Operator:
    return Operator(row.name, row.role, row.created_at, row.created_by, row.revoked_at)


def _audit_entry(row: Any) -> AuditEntry:
    return AuditEntry(
        row.seq,
        row.at_ms,
        row.actor,
        row.role,
        row.action,
        row.target,
        json.loads(row.detail),
        row.outcome,
        bytes(row.prev_hash),
        bytes(row.entry_hash),
    )


def _regulation(row: Any) -> RegulationRecord:
    values = dict(row._mapping)
    values["txid"], values["body"] = bytes(values["txid"]), bytes(values["body"])
    values["detail"], values["effect"] = json.loads(values["detail"]), json.loads(values["effect"])
    return RegulationRecord(**values)


def _bill_row(bill: StoredBill) -> dict[str, Any]:
    row = {f: getattr(bill, f) for f in StoredBill.__slots__}
    row["discrepancies"] = json.dumps(bill.discrepancies)
    return row


def _select(fields: Sequence[str], table: Table) -> str:
    """SELECT of `fields` (quoted: "interval" is a word of SQL) from `table`."""
    columns = ", ".join(f'"{f}"' for f in fields)
    return f"SELECT {columns} FROM {table.name}"


# A bill and an indexed transaction, the columns in their dataclasses' order.
_BILL_ROWS = _select(StoredBill.__slots__, bills)
_CHAIN_ROWS = _select(ChainTransaction.__slots__, chain_transactions)


def _chain_of_row(row: Sequence[Any]) -> ChainTransaction:
    """An indexed transaction from a row of `_CHAIN_ROWS`."""
    seq, txid, height, type_, meter, body, interval, epa_first, epa_last = row
    return ChainTransaction(
        seq, bytes(txid), height, type_, meter, bytes(body), interval, epa_first, epa_last
    )


def _bill_tuple(bill: StoredBill) -> tuple[Any, ...]:
    """A bill's row as `_insert_sql` takes it (the table's columns are the dataclass's)."""
    return (
        bill.id,
        bill.meter,
        bill.interval,
        bill.owner,
        bill.closed_height,
        bill.amount,
        bill.body,
        bill.received_ms,
        bill.status,
        json.dumps(bill.discrepancies),
    )


def _bill_of_row(row: Sequence[Any]) -> StoredBill:
    """A bill from a row of `_BILL_ROWS`."""
    the_id, meter, interval, owner, closed_height, amount, body, received_ms, status, found = row
    return StoredBill(
        bytes(the_id),
        meter,
        interval,
        owner,
        closed_height,
        amount,
        bytes(body),
        received_ms,
        status,
        json.loads(found),
    )


def _stored_bill(row: Any) -> StoredBill:
    values = dict(row._mapping)
    values["discrepancies"] = json.loads(values["discrepancies"])
    values["id"] = bytes(values["id"])
    values["body"] = bytes(values["body"])
    return StoredBill(**values)
