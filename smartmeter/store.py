"""The smart meter's own durable storage (SQLAlchemy Core; SQLite by default, with
`synchronous=FULL`, so a reading is on disk when `add_reading` returns).

The daemon writes every reading here before anything else happens to it, so a restart, a dead
broker or an unreachable device loses none; the outbox holds what must reach another service
(bills for the DSO) until it is acknowledged, so the DSO being down delays them, never loses
them; `state` keeps small named JSON documents (the interval accumulator's checkpoint);
`meter_intervals` keeps each source's closed intervals, written in one transaction with the
accumulator's checkpoint, so neither is ever stored without the other; `meter_chain` keeps
what the meter's ledger index learnt (every regulation, the meter's own issues, the deposits
to its addresses) and `meter_chain_head` the last block it indexed, both written in one
transaction per block, so a restart continues where it stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from service.database import StoreError, StoreSchema, open_service_database, service_meta
from smartmeter.energy import IntervalEnergy, IntervalStatus

SCHEMA_VERSION = "2"  # the meta table's schema, which releases before revisions refuse
SCHEMA_REVISION = "0002"  # the head of smartmeter/migrations

metadata = MetaData()

meta = service_meta("meter", metadata)
readings = Table(
    "meter_readings",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("at", Float, nullable=False),  # unix seconds, as the reading says or as received
    Column("import_wh", Float),
    Column("export_wh", Float),
    Column("power_w", Float),
    Column("problem", Text),  # why the reading was refused; null for a good one
)
Index("meter_readings_by_source", readings.c.source, readings.c.seq)
outbox = Table(
    "meter_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("key", String(128), nullable=False, unique=True),  # one message per key, ever
    Column("body", LargeBinary, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_ms", BigInteger, nullable=False),
    Column("last_error", Text),
    Column("delivered_ms", BigInteger),
)
Index("meter_outbox_queued", outbox.c.kind, outbox.c.delivered_ms)  # bills queued, per scrape
state = Table(
    "meter_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
intervals = Table(
    "meter_intervals",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("interval", BigInteger, primary_key=True),
    Column("import_j", BigInteger, nullable=False),
    Column("export_j", BigInteger, nullable=False),
    Column("net_j", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("reasons", Text, nullable=False),  # a JSON list of strings
)

chain = Table(
    "meter_chain",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # "regulate", "issue" or "deposit"
    Column("seq", BigInteger, nullable=False),  # the transaction's log position
    Column("height", BigInteger, nullable=False),
    Column("interval", BigInteger, nullable=False),  # of the block's time
    Column("body", LargeBinary, nullable=False),  # the transaction, signatures included
    Column("output", Integer),  # a deposit: the index of the output paid to the meter
    Column("key_index", BigInteger),  # a deposit: the index of the deposit key it pays
)
Index("meter_chain_by_seq", chain.c.seq)
chain_head = Table(
    "meter_chain_head",
    metadata,
    Column("id", Integer, primary_key=True),  # one row, id 1
    Column("height", BigInteger, nullable=False),
    Column("head", LargeBinary, nullable=False),  # the block's signed head, canonical JSON
)

# From best to worst: a total across sources is as trustworthy as its worst part.
STATUS_ORDER = (
    IntervalStatus.MEASURED,
    IntervalStatus.PARTIAL,
    IntervalStatus.SUSPECT,
    IntervalStatus.MISSING,
)


SCHEMA = StoreSchema(
    metadata,
    meta,
    SCHEMA_VERSION,
    SCHEMA_REVISION,
    "meter_alembic_version",
    Path(__file__).with_name("migrations"),
    "the meter's database",
    "the meter daemon",
    "petra meter migrate",
    sqlite_cache_mib=8,  # a small board: a month of readings is a few MiB
)


class MeterStoreError(StoreError):
    """The meter's database cannot be used as asked."""


@dataclass(frozen=True, slots=True)
class StoredReading:
    seq: int
    source: str
    at: float
    import_wh: float | None
    export_wh: float | None
    power_w: float | None
    problem: str | None


@dataclass(frozen=True, slots=True)
class IntervalTotal:
    """One interval's energy across sources, joules; `status` is the worst source's (`missing`
    if a source has not stored it); `reasons` are the sources' reasons, each after its source."""

    interval: int
    import_j: int
    export_j: int
    net_j: int
    status: IntervalStatus
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    kind: str
    key: str
    body: bytes
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class ChainFact:
    """A transaction of the ledger the meter keeps: a regulation, one of its own issues, or
    (one row per output) a deposit to one of its deposit addresses."""

    kind: str  # "regulate", "issue" or "deposit"
    seq: int
    height: int
    interval: int
    body: bytes
    output: int | None = None
    key_index: int | None = None


class MeterStore:
    """The meter's tables. Safe from several threads (each call is its own transaction)."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = open_service_database(url, SCHEMA)
        except StoreError as exc:
            raise MeterStoreError(str(exc)) from exc

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------- readings

    def add_reading(
        self,
        source: str,
        at: float,
        import_wh: float | None,
        export_wh: float | None,
        power_w: float | None,
        problem: str | None = None,
    ) -> int:
        """Store one reading (or a refused one, with why); its sequence number, once durable."""
        with self.engine.begin() as conn:
            key = conn.execute(
                insert(readings),
                {
                    "source": source,
                    "at": at,
                    "import_wh": _finite(import_wh),
                    "export_wh": _finite(export_wh),
                    "power_w": _finite(power_w),
                    "problem": problem,
                },
            ).inserted_primary_key
        assert key is not None
        return int(key[0])

    def readings(self, after: int = 0, limit: int = 10_000) -> list[StoredReading]:
        """Readings with seq > `after`, in the order they were stored."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(readings).where(readings.c.seq > after).order_by(readings.c.seq).limit(limit)
            ).all()
        return [StoredReading(**r._mapping) for r in rows]

    def source_readings(
        self, source: str, after: int = 0, limit: int = 10_000
    ) -> list[StoredReading]:
        """`source`'s readings with seq > `after`, in the order they were stored."""
        query = (
            select(readings)
            .where(readings.c.source == source, readings.c.seq > after)
            .order_by(readings.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [StoredReading(**r._mapping) for r in rows]

    def refuse_reading(self, seq: int, problem: str) -> None:
        """Record why the stored reading `seq` was refused after it was stored; a reason it
        already has is kept."""
        with self.engine.begin() as conn:
            conn.execute(
                update(readings)
                .where(readings.c.seq == seq, readings.c.problem.is_(None))
                .values(problem=problem)
            )

    # ------------------------------------------------------------- interval energy

    def close_intervals(
        self, source: str, closed: Sequence[IntervalEnergy], checkpoint: Any
    ) -> None:
        """Store `source`'s newly closed intervals and its accumulator's `checkpoint` (a JSON
        document) in one transaction; MeterStoreError if an interval was stored before."""
        raw = json.dumps(checkpoint, sort_keys=True)
        name = _checkpoint_name(source)
        try:
            with self.engine.begin() as conn:
                if closed:
                    conn.execute(insert(intervals), [_interval_row(source, e) for e in closed])
                done = conn.execute(update(state).where(state.c.name == name).values(value=raw))
                if done.rowcount == 0:
                    conn.execute(insert(state), {"name": name, "value": raw})
        except IntegrityError as exc:
            raise MeterStoreError(f"{source} closed an interval it had closed before") from exc

    def interval_checkpoint(self, source: str) -> Any:
        """The checkpoint `close_intervals` last stored for `source`, or None."""
        return self.get_state(_checkpoint_name(source))

    def intervals(
        self, first: int, last: int, sources: Sequence[str] | None = None
    ) -> list[IntervalTotal]:
        """Totals of intervals `first` to `last` (inclusive) across `sources` (by default every
        source that stored an interval), one per interval, in order."""
        with self.engine.connect() as conn:
            if sources is None:
                sources = list(conn.scalars(select(intervals.c.source).distinct()))
            rows = conn.execute(
                select(intervals).where(
                    intervals.c.interval >= first,
                    intervals.c.interval <= last,
                    intervals.c.source.in_(list(sources)),
                )
            ).all()
        by_interval: dict[int, dict[str, Any]] = {}
        for row in rows:
            by_interval.setdefault(int(row.interval), {})[row.source] = row
        totals = []
        for interval in range(first, last + 1):
            found = by_interval.get(interval, {})
            statuses = [IntervalStatus(found[s].status) for s in found]
            reasons = [f"{s}: {r}" for s in sorted(found) for r in json.loads(found[s].reasons)]
            absent = sorted(set(sources) - set(found))
            if absent or not sources:
                statuses.append(IntervalStatus.MISSING)
                reasons.extend(f"{s}: not closed" for s in absent)
            totals.append(
                IntervalTotal(
                    interval=interval,
                    import_j=sum(int(r.import_j) for r in found.values()),
                    export_j=sum(int(r.export_j) for r in found.values()),
                    net_j=sum(int(r.net_j) for r in found.values()),
                    status=max(statuses, key=STATUS_ORDER.index),
                    reasons=tuple(reasons),
                )
            )
        return totals

    def first_interval(self, sources: Sequence[str] | None) -> int | None:
        """The earliest interval one of `sources` (default: any) stored; None before the first."""
        query = select(func.min(intervals.c.interval))
        if sources is not None:
            query = query.where(intervals.c.source.in_(list(sources)))
        with self.engine.connect() as conn:
            first = conn.scalar(query)
        return None if first is None else int(first)

    def interval_sources(self) -> list[str]:
        """Every source that ever stored an interval (those `MeterStore.intervals` totals over)."""
        with self.engine.connect() as conn:
            return list(conn.scalars(select(intervals.c.source).distinct()))

    def sources_per_interval(self, first: int, last: int, sources: Sequence[str]) -> dict[int, int]:
        """How many of `sources` stored each of intervals `first` to `last`."""
        query = (
            select(intervals.c.interval, func.count())
            .where(
                intervals.c.interval >= first,
                intervals.c.interval <= last,
                intervals.c.source.in_(list(sources)),
            )
            .group_by(intervals.c.interval)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {int(row[0]): int(row[1]) for row in rows}

    # ------------------------------------------------------------- the outbox

    def enqueue(self, kind: str, key: str, body: bytes) -> bool:
        """Queue a message once per `key`; False if that key was queued before."""
        now = _now_ms()
        with self.engine.begin() as conn:
            if conn.scalar(select(outbox.c.id).where(outbox.c.key == key)) is not None:
                return False
            conn.execute(
                insert(outbox),
                {
                    "kind": kind,
                    "key": key,
                    "body": body,
                    "created_ms": now,
                    "attempts": 0,
                    "next_ms": now,
                    "last_error": None,
                    "delivered_ms": None,
                },
            )
        return True

    def due(self, kind: str, limit: int = 100) -> list[OutboxMessage]:
        """Undelivered messages of `kind` whose next attempt is due, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbox)
                .where(
                    outbox.c.kind == kind,
                    outbox.c.delivered_ms.is_(None),
                    outbox.c.next_ms <= _now_ms(),
                )
                .order_by(outbox.c.id)
                .limit(limit)
            ).all()
        return [
            OutboxMessage(r.id, r.kind, r.key, bytes(r.body), r.attempts, r.last_error)
            for r in rows
        ]

    def delivered(self, message_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(outbox).where(outbox.c.id == message_id).values(delivered_ms=_now_ms())
            )

    def failed(self, message_id: int, error: str, retry_in_s: float) -> None:
        """Record a failed attempt; the message is due again in `retry_in_s` seconds."""
        with self.engine.begin() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.id == message_id)
                .values(
                    attempts=outbox.c.attempts + 1,
                    last_error=error,
                    next_ms=_now_ms() + int(retry_in_s * 1000),
                )
            )

    def pending(self, kind: str) -> int:
        """How many messages of `kind` are not delivered yet."""
        with self.engine.connect() as conn:
            count = conn.scalar(
                select(func.count())
                .select_from(outbox)
                .where(outbox.c.kind == kind, outbox.c.delivered_ms.is_(None))
            )
        return int(count or 0)

    # ------------------------------------------------------------- named state

    def put_state(self, name: str, value: Any) -> None:
        raw = json.dumps(value, sort_keys=True)
        with self.engine.begin() as conn:
            done = conn.execute(update(state).where(state.c.name == name).values(value=raw))
            if done.rowcount == 0:
                conn.execute(insert(state), {"name": name, "value": raw})

    def get_state(self, name: str) -> Any:
        with self.engine.connect() as conn:
            raw = conn.scalar(select(state.c.value).where(state.c.name == name))
        return None if raw is None else json.loads(raw)

    # ------------------------------------------------------------- the ledger index

    def chain_head(self) -> tuple[int, bytes | None]:
        """The last block indexed: its height (0 for none) and its signed head's bytes."""
        with self.engine.connect() as conn:
            row = conn.execute(select(chain_head.c.height, chain_head.c.head)).first()
        return (0, None) if row is None else (int(row.height), bytes(row.head))

    def index_chain_block(self, height: int, head: bytes, facts: Sequence[ChainFact]) -> None:
        """Keep block `height`'s facts and make it the last block indexed, atomically; refuse a
        block that does not follow the last one (two watchers on one database)."""
        with self.engine.begin() as conn:
            last = conn.scalar(select(chain_head.c.height)) or 0
            if height != last + 1:
                raise MeterStoreError(f"block {height} does not follow block {last}, indexed")
            if facts:
                conn.execute(insert(chain), [_fact_row(f) for f in facts])
            conn.execute(delete(chain_head))
            conn.execute(insert(chain_head), {"id": 1, "height": height, "head": head})

    def chain_facts(self) -> Iterator[ChainFact]:
        """Every fact indexed, in ledger order (log position, then output)."""
        query = select(chain).order_by(chain.c.seq, chain.c.output)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        for r in rows:
            yield ChainFact(
                r.kind, r.seq, r.height, r.interval, bytes(r.body), r.output, r.key_index
            )


def _checkpoint_name(source: str) -> str:
    return f"intervals/{source}"


def _interval_row(source: str, energy: IntervalEnergy) -> dict[str, Any]:
    return {
        "source": source,
        "interval": energy.interval,
        "import_j": energy.import_j,
        "export_j": energy.export_j,
        "net_j": energy.net_j,
        "status": str(energy.status),
        "reasons": json.dumps(list(energy.reasons)),
    }


def _fact_row(fact: ChainFact) -> dict[str, Any]:
    return {f: getattr(fact, f) for f in ChainFact.__slots__}


def _finite(value: float | None) -> float | None:
    # NaN and infinities are not numbers a database keeps faithfully; the reading's `problem`
    # says what they were.
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)


def _now_ms() -> int:
    return int(time.time() * 1000)
