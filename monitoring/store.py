"""The monitoring store: samples in UTC, their 15-minute, hourly and daily aggregates kept
current as samples arrive (late and out-of-order ones included), the community's master data,
the refusals of every ingestion path, and the service's users, sessions and API keys
(DESIGN.md section 13). SQLite by default, PostgreSQL by URL.

Aggregates hold count, sum, minimum and maximum per feed and bucket, so a mean is sum/count. A
new sample adds to its buckets; a sample that replaces one at the same time makes its buckets
be counted again from the raw samples. Daily buckets follow the feed's community's local days
(23 or 25 hours on daylight-saving days); 15-minute and hourly buckets are UTC's.

One process holds a store (`service.hold_store`), so feed ids are cached in memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from monitoring.samples import KINDS, OTHER, Sample
from service import StoreError, StoreSchema, open_service_database, service_meta

log = logging.getLogger("petra.monitoring.store")

SCHEMA_VERSION = "2"  # the meta table's schema, which releases before revisions refuse
SCHEMA_REVISION = "0002"  # the head of monitoring/migrations
STORE_ROLE = "monitoring"
QUARTER_S, HOUR_S, DAY_S = 900, 3_600, 86_400
PERIODS = (QUARTER_S, HOUR_S, DAY_S)  # DAY_S stands for "the community's local day"
DEFAULT_ZONE = "UTC"
ZONE_CACHE_S = 60.0  # how long a feed's community time zone is trusted without reading it

metadata = MetaData()
meta = service_meta("mon", metadata)

community = Table(
    "mon_community",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("timezone", String(64), nullable=False, default=DEFAULT_ZONE),
    Column("currency", String(8), nullable=False, default="EUR"),
    # Money in micro-units of the currency (docs/cli.md), never floats.
    Column("price_micro_per_kwh", Integer, nullable=False, default=150_000),
    Column("export_micro_per_kwh", Integer, nullable=False, default=50_000),
    Column("co2_g_per_kwh", Float, nullable=False, default=250.0),
)

member = Table(
    "mon_member",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("community_id", String(64), ForeignKey("mon_community.id"), nullable=False),
    Column("ref", String(64), nullable=False),  # the community's own reference for the member
    Column("name", String(200), nullable=False),
    Column("email", String(254)),
    UniqueConstraint("community_id", "ref"),
)

installation = Table(
    "mon_installation",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("community_id", String(64), ForeignKey("mon_community.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("peak_kw", Float, nullable=False),
    # What it cost, for its amortisation: micro-units pass 2**31 at 2,148 EUR (revision 0002).
    Column("cost_micro", BigInteger),
    Column("commissioned", String(10)),  # ISO date
)

supply_point = Table(
    "mon_supply_point",
    metadata,
    Column("id", String(32), primary_key=True),  # a CUPS (Spain) or a POD (Italy)
    Column("community_id", String(64), ForeignKey("mon_community.id"), nullable=False),
    Column("member_id", Integer, ForeignKey("mon_member.id")),
    Column("installation_id", String(64), ForeignKey("mon_installation.id")),
    Column("kind", String(16), nullable=False),  # consumption | generation
    Column("contracted_kw", Float),
    Column("share", Float),  # a fixed sharing coefficient, 0..1, until an agreement replaces it
    Column("label", String(200)),
)

node = Table(
    "mon_node",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("community_id", String(64), ForeignKey("mon_community.id")),
    Column("label", String(200)),
    Column("silent_after_s", Integer, nullable=False, default=300),
    Column("first_seen", Integer, nullable=False),
    Column("last_seen", Integer, nullable=False),
)

feed = Table(
    "mon_feed",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("node", String(64), ForeignKey("mon_node.name"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("kind", String(16), nullable=False, default=OTHER),
    Column("unit", String(16), nullable=False, default=""),
    Column("supply_point_id", String(32), ForeignKey("mon_supply_point.id")),
    Column("role", String(16)),  # consumption | generation | export, for a supply point's feed
    Column("min_ok", Float),  # the control centre's alarm range
    Column("max_ok", Float),
    Column("last_time", Integer),
    Column("last_value", Float),
    UniqueConstraint("node", "name"),
)

sample = Table(
    "mon_sample",
    metadata,
    Column("feed_id", Integer, ForeignKey("mon_feed.id"), primary_key=True),
    Column("t", Integer, primary_key=True),
    Column("value", Float, nullable=False),
    Column("estimated", Boolean, nullable=False, default=False),
)

aggregate = Table(
    "mon_aggregate",
    metadata,
    Column("feed_id", Integer, ForeignKey("mon_feed.id"), primary_key=True),
    Column("period", Integer, primary_key=True),
    Column("start", Integer, primary_key=True),
    Column("count", Integer, nullable=False),
    Column("sum", Float, nullable=False),
    Column("min", Float, nullable=False),
    Column("max", Float, nullable=False),
    Column("estimated", Integer, nullable=False),  # how many of the samples are estimates
)

refusal = Table(
    "mon_refusal",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("reason", String(64), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("last_at", Integer, nullable=False),
    Column("last_message", Text, nullable=False),
)

user = Table(
    "mon_user",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # member | manager | operator
    Column("community_id", String(64), ForeignKey("mon_community.id")),
    Column("member_id", Integer, ForeignKey("mon_member.id")),
    Column("password_hash", Text, nullable=False),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", Integer, nullable=False, default=0),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created", Integer, nullable=False),
)

session = Table(
    "mon_session",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # SHA-256 of the cookie's token
    Column("user_id", Integer, ForeignKey("mon_user.id"), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created", Integer, nullable=False),
    Column("expires", Integer, nullable=False),
)

apikey = Table(
    "mon_apikey",
    metadata,
    Column("key_hash", String(64), primary_key=True),  # SHA-256 of the key
    Column("label", String(200), nullable=False),
    Column("access", String(8), nullable=False),  # read | write (write reads too)
    Column("community_id", String(64), ForeignKey("mon_community.id")),  # None: every one
    Column("created", Integer, nullable=False),
    Column("last_used", Integer),
)

# Sharing agreements (monitoring.agreements): an installation's agreement is in force over the
# local days [first_day, end_day) of its community; a revision ends the one it revises.
agreement = Table(
    "mon_agreement",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("community_id", String(64), ForeignKey("mon_community.id"), nullable=False),
    Column("installation_id", String(64), ForeignKey("mon_installation.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # static | variable | dynamic
    Column("first_day", String(10), nullable=False),  # ISO local date
    Column("end_day", String(10)),  # ISO local date, the first day out of force; None: open
    Column("objective", String(16), nullable=False, default=""),  # energy | money | "" by hand
    Column("rules", Text, nullable=False),  # JSON, agreements.rules_to_json
    Column("note", Text, nullable=False, default=""),
    Column("created", Integer, nullable=False),
    Column("replaces", Integer, ForeignKey("mon_agreement.id")),
)

agreement_share = Table(
    "mon_agreement_share",
    metadata,
    Column("agreement_id", Integer, ForeignKey("mon_agreement.id"), primary_key=True),
    Column("supply_point_id", String(32), ForeignKey("mon_supply_point.id"), primary_key=True),
    Column("position", Integer, nullable=False),  # the column in the agreement's file order
    # Whole millionths as uint32 little-endian: one (static), one per hour of the period as
    # saved (variable), none (dynamic). One blob per point: a year of 1,000 points in 1,000 rows.
    Column("millionths", LargeBinary, nullable=False),
)

Index("mon_feed_supply_point", feed.c.supply_point_id)
Index("mon_agreement_installation", agreement.c.installation_id, agreement.c.first_day)
Index("mon_session_user", session.c.user_id)


SCHEMA = StoreSchema(
    metadata,
    meta,
    SCHEMA_VERSION,
    SCHEMA_REVISION,
    "mon_alembic_version",
    Path(__file__).with_name("migrations"),
    "the monitoring database",
    "the monitoring service",
    "petra monitor migrate",
)


class MonitoringStoreError(StoreError):
    """The store cannot be opened, or a write failed: nothing of it was stored."""


@dataclass(frozen=True, slots=True)
class Feed:
    id: int
    node: str
    name: str
    kind: str
    unit: str
    supply_point_id: str | None
    role: str | None
    min_ok: float | None
    max_ok: float | None
    last_time: int | None
    last_value: float | None


@dataclass(frozen=True, slots=True)
class Bucket:
    """One aggregate: `start` in unix seconds (UTC), `length_s` its real length."""

    start: int
    length_s: int
    count: int
    sum: float
    min: float
    max: float
    estimated: int

    @property
    def mean(self) -> float:
        return self.sum / self.count


@dataclass(frozen=True, slots=True)
class Written:
    """What one write did: new samples, samples that replaced one at the same time, feeds
    created on first sight."""

    stored: int
    replaced: int
    new_feeds: int


@dataclass(frozen=True, slots=True)
class Retention:
    """How long raw samples are kept (None: for ever); aggregates are always kept."""

    raw_days: int | None = None


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`, or ValueError naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Madrid"
        ) from None


def local_day_start(t: int, tz: ZoneInfo) -> int:
    """The unix time of the local midnight opening the day that holds `t`."""
    day = datetime.fromtimestamp(t, tz).date()
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())


def local_day_bounds(t: int, tz: ZoneInfo) -> tuple[int, int]:
    """The local day holding `t` as [start, end) unix seconds: 23, 24 or 25 hours long."""
    day = datetime.fromtimestamp(t, tz).date()
    following = day + timedelta(days=1)
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    end = datetime(following.year, following.month, following.day, tzinfo=tz)
    return int(start.timestamp()), int(end.timestamp())


def bucket_start(t: int, period: int, tz: ZoneInfo) -> int:
    return local_day_start(t, tz) if period == DAY_S else t - t % period


class MonitoringStore:
    """The monitoring database (`url`: a SQLAlchemy URL) and the only writer of samples."""

    def __init__(self, url: str, retention: Retention = Retention()) -> None:
        try:
            self.engine = open_service_database(url, SCHEMA)
        except StoreError as exc:
            raise MonitoringStoreError(str(exc)) from exc
        self.retention = retention
        self._lock = threading.Lock()  # one writer at a time: aggregates are read-modify-write
        self._feed_ids: dict[tuple[str, str], int] = {}
        self._new_feeds = 0  # feeds the last write created
        self._feed_zone: dict[int, ZoneInfo] = {}
        self._zones_read_at = time.monotonic()
        self._listeners: list[Any] = []

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _begin(self, what: str) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            log.warning("%s failed, nothing of it was stored: %s", what, exc)
            raise MonitoringStoreError(f"{what} failed, nothing of it was stored") from exc

    # ---------------------------------------------------------------- listeners

    def listen(self, callback: Any) -> None:
        """Call `callback(feeds)` with the `Feed`s a write changed, after it committed (the
        control centre's live stream)."""
        self._listeners.append(callback)

    # ---------------------------------------------------------------- writing samples

    def write(self, samples: Sequence[Sample], now: float | None = None) -> Written:
        """Store checked `samples` (monitoring.samples) in one transaction, creating nodes and
        feeds on first sight and keeping every aggregate current. A later sample at the same
        feed and time replaces the earlier one."""
        if not samples:
            return Written(0, 0, 0)
        seen_at = int(time.time() if now is None else now)
        by_feed: dict[tuple[str, str], dict[int, Sample]] = defaultdict(dict)
        for one in samples:
            by_feed[(one.node, one.name)][one.t] = one  # the last one at a time wins
        with self._lock, self._begin("storing samples") as conn:
            created = self._ensure_feeds(conn, by_feed.keys(), seen_at)
            stored = replaced = 0
            changed: list[int] = []
            for key, at_times in by_feed.items():
                feed_id = created[key] if key in created else self._feed_ids[key]
                n_new, n_replaced = self._write_feed(conn, feed_id, at_times)
                stored, replaced = stored + n_new, replaced + n_replaced
                changed.append(feed_id)
            nodes = {key[0] for key in by_feed}
            conn.execute(
                update(node)
                .where(node.c.name.in_(nodes), node.c.last_seen < seen_at)
                .values(last_seen=seen_at)
            )
        self._feed_ids.update(created)  # only once committed: a rolled-back feed has no id
        if self._listeners:
            feeds = self.feeds_by_id(changed)
            for callback in self._listeners:
                try:
                    callback(feeds)
                except Exception:  # the samples are stored: a live view's failure is its own
                    log.exception("a listener of the store's writes failed")
        return Written(stored, replaced, self._new_feeds)

    def _ensure_feeds(
        self, conn: Connection, keys: Iterable[tuple[str, str]], seen_at: int
    ) -> dict[tuple[str, str], int]:
        """The ids of the feeds of `keys` not cached yet, creating the missing nodes and
        feeds; `_new_feeds` says how many were created."""
        self._new_feeds = 0
        missing = [key for key in keys if key not in self._feed_ids]
        if not missing:
            return {}
        names = {name for name, _ in missing}
        known_nodes: set[str] = set(conn.scalars(select(node.c.name).where(node.c.name.in_(names))))
        for name in sorted(names - known_nodes):
            conn.execute(node.insert().values(name=name, first_seen=seen_at, last_seen=seen_at))
        ids: dict[tuple[str, str], int] = {}
        for node_name, feed_name in missing:
            found = conn.scalar(
                select(feed.c.id).where(feed.c.node == node_name, feed.c.name == feed_name)
            )
            if found is None:
                inserted = conn.execute(
                    feed.insert().values(node=node_name, name=feed_name, kind=OTHER, unit="")
                ).inserted_primary_key
                assert inserted is not None
                found = inserted[0]
                self._new_feeds += 1
            ids[(node_name, feed_name)] = int(found)
        return ids

    def _zone_of(self, conn: Connection, feed_id: int) -> ZoneInfo:
        if time.monotonic() > self._zones_read_at + ZONE_CACHE_S:
            self._feed_zone.clear()  # another process may have moved a node to a community
            self._zones_read_at = time.monotonic()
        cached = self._feed_zone.get(feed_id)
        if cached is None:
            name = conn.scalar(
                select(community.c.timezone)
                .select_from(
                    feed.join(node, node.c.name == feed.c.node).join(
                        community, community.c.id == node.c.community_id
                    )
                )
                .where(feed.c.id == feed_id)
            )
            cached = self._feed_zone[feed_id] = zone(name or DEFAULT_ZONE)
        return cached

    def _write_feed(
        self, conn: Connection, feed_id: int, at_times: Mapping[int, Sample]
    ) -> tuple[int, int]:
        times = sorted(at_times)
        existing = {
            t: (value, bool(estimated))
            for t, value, estimated in conn.execute(
                select(sample.c.t, sample.c.value, sample.c.estimated).where(
                    sample.c.feed_id == feed_id,
                    sample.c.t >= times[0],
                    sample.c.t <= times[-1],
                )
            )
            if t in at_times
        }
        fresh = [at_times[t] for t in times if t not in existing]
        changed = [
            at_times[t]
            for t in times
            if t in existing and existing[t] != (at_times[t].value, at_times[t].estimated)
        ]
        if fresh:
            conn.execute(
                sample.insert(),
                [
                    {"feed_id": feed_id, "t": s.t, "value": s.value, "estimated": s.estimated}
                    for s in fresh
                ],
            )
        if changed:
            conn.execute(
                update(sample)
                .where(sample.c.feed_id == bindparam("f"), sample.c.t == bindparam("at"))
                .values(value=bindparam("v"), estimated=bindparam("e")),
                [{"f": feed_id, "at": s.t, "v": s.value, "e": s.estimated} for s in changed],
            )
        tz = self._zone_of(conn, feed_id)
        self._add_to_buckets(conn, feed_id, fresh, tz)
        for period in PERIODS:
            for start in {bucket_start(s.t, period, tz) for s in changed}:
                self._recount(conn, feed_id, period, start, tz)
        last = at_times[times[-1]]
        conn.execute(
            update(feed)
            .where(
                feed.c.id == feed_id,
                (feed.c.last_time.is_(None)) | (feed.c.last_time <= last.t),
            )
            .values(last_time=last.t, last_value=last.value)
        )
        return len(fresh), len(changed)

    def _add_to_buckets(
        self, conn: Connection, feed_id: int, fresh: Sequence[Sample], tz: ZoneInfo
    ) -> None:
        if not fresh:
            return
        rows: dict[tuple[int, int], list[float]] = {}
        day_cache: dict[int, int] = {}
        for s in fresh:
            hour = s.t - s.t % HOUR_S
            day = day_cache.get(hour)
            if day is None:  # local midnights fall on whole quarter-hours in every real zone
                day = day_cache[hour] = local_day_start(hour, tz)
            for period, start in (
                (QUARTER_S, s.t - s.t % QUARTER_S),
                (HOUR_S, hour),
                (DAY_S, day),
            ):
                acc = rows.get((period, start))
                if acc is None:
                    rows[(period, start)] = [1, s.value, s.value, s.value, int(s.estimated)]
                else:
                    acc[0] += 1
                    acc[1] += s.value
                    acc[2] = min(acc[2], s.value)
                    acc[3] = max(acc[3], s.value)
                    acc[4] += int(s.estimated)
        values = [
            {
                "feed_id": feed_id,
                "period": period,
                "start": start,
                "count": acc[0],
                "sum": acc[1],
                "min": acc[2],
                "max": acc[3],
                "estimated": acc[4],
            }
            for (period, start), acc in rows.items()
        ]
        conn.execute(self._add_statement(conn), values)

    def _add_statement(self, conn: Connection) -> Any:
        if conn.dialect.name == "postgresql":
            stmt = postgresql.insert(aggregate)
            least: Any = func.least
            greatest: Any = func.greatest
        else:
            stmt = sqlite.insert(aggregate)  # type: ignore[assignment]
            least, greatest = func.min, func.max  # SQLite's scalar min and max of two values
        ex = stmt.excluded
        return stmt.on_conflict_do_update(
            index_elements=[aggregate.c.feed_id, aggregate.c.period, aggregate.c.start],
            set_={
                "count": aggregate.c.count + ex.count,
                "sum": aggregate.c.sum + ex.sum,
                "min": least(aggregate.c.min, ex.min),
                "max": greatest(aggregate.c.max, ex.max),
                "estimated": aggregate.c.estimated + ex.estimated,
            },
        )

    def _recount(
        self, conn: Connection, feed_id: int, period: int, start: int, tz: ZoneInfo
    ) -> None:
        end = local_day_bounds(start, tz)[1] if period == DAY_S else start + period
        row = conn.execute(
            select(
                func.count(),
                func.sum(sample.c.value),
                func.min(sample.c.value),
                func.max(sample.c.value),
                func.sum(sample.c.estimated.cast(Integer)),
            ).where(sample.c.feed_id == feed_id, sample.c.t >= start, sample.c.t < end)
        ).one()
        key = and_(
            aggregate.c.feed_id == feed_id,
            aggregate.c.period == period,
            aggregate.c.start == start,
        )
        if not row[0]:
            return  # raw samples pruned: the aggregate stays as it was counted
        conn.execute(
            update(aggregate)
            .where(key)
            .values(count=row[0], sum=row[1], min=row[2], max=row[3], estimated=row[4] or 0)
        )

    # ---------------------------------------------------------------- refusals

    def refuse(
        self, source: str, reason: str, message: str, now: float | None = None, count: int = 1
    ) -> None:
        """Count `count` refusals of `source` (an ingestion path) for `reason`, and log the
        last one's `message`. The log line is what matters: the count is best effort."""
        log.warning("refused from %s (%s): %s", source, reason, message)
        try:
            self.add_refusals(source, reason, count, message, time.time() if now is None else now)
        except MonitoringStoreError as exc:
            log.warning("could not count a refusal: %s", exc.__cause__)

    def add_refusals(self, source: str, reason: str, count: int, message: str, now: float) -> None:
        """Add `count` refusals of `source` for `reason` in one transaction, `message` the
        last one's; MonitoringStoreError if it failed (nothing is logged here)."""
        stmt_cls = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        stmt = stmt_cls(refusal).values(
            source=source, reason=reason, count=count, last_at=int(now), last_message=message[:500]
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[refusal.c.source, refusal.c.reason],
            set_={
                "count": refusal.c.count + stmt.excluded.count,
                "last_at": stmt.excluded.last_at,
                "last_message": stmt.excluded.last_message,
            },
        )
        try:
            with self.engine.begin() as conn:
                conn.execute(stmt)
        except SQLAlchemyError as exc:
            raise MonitoringStoreError(f"counting refusals failed: {exc}") from exc

    def refusals(self) -> list[dict[str, Any]]:
        """Every (source, reason) refused so far, with its count and last message."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(refusal).order_by(refusal.c.source, refusal.c.reason))
            return [dict(row._mapping) for row in rows]

    # ---------------------------------------------------------------- reading

    def feeds(
        self, *, community_id: str | None = None, supply_points: Iterable[str] | None = None
    ) -> list[Feed]:
        """Every feed, or those of one community's nodes or supply points."""
        query = select(feed).order_by(feed.c.id)
        if community_id is not None:
            query = query.join(node, node.c.name == feed.c.node).where(
                node.c.community_id == community_id
            )
        if supply_points is not None:
            query = query.where(feed.c.supply_point_id.in_(list(supply_points)))
        with self.engine.connect() as conn:
            return [Feed(**row._mapping) for row in conn.execute(query)]

    def feeds_by_id(self, ids: Iterable[int]) -> list[Feed]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(feed).where(feed.c.id.in_(list(ids))).order_by(feed.c.id))
            return [Feed(**row._mapping) for row in rows]

    def feed(self, feed_id: int) -> Feed | None:
        found = self.feeds_by_id([feed_id])
        return found[0] if found else None

    def feed_named(self, node_name: str, name: str) -> Feed | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(feed).where(feed.c.node == node_name, feed.c.name == name)
            ).first()
            return Feed(**row._mapping) if row else None

    def set_feed(self, feed_id: int, **values: Any) -> None:
        """Set a feed's `kind`, `unit`, `supply_point_id`, `role`, `min_ok` or `max_ok`."""
        allowed = {"kind", "unit", "supply_point_id", "role", "min_ok", "max_ok"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"a feed has no setting {', '.join(sorted(unknown))}")
        if "kind" in values and values["kind"] not in KINDS:
            raise ValueError(f"a feed's kind is one of {', '.join(KINDS)}")
        with self._begin("setting a feed") as conn:
            conn.execute(update(feed).where(feed.c.id == feed_id).values(**values))

    def set_node(self, name: str, **values: Any) -> None:
        """Set a node's `community_id`, `label` or `silent_after_s` (creating the node)."""
        allowed = {"community_id", "label", "silent_after_s"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"a node has no setting {', '.join(sorted(unknown))}")
        now = int(time.time())
        with self._lock, self._begin("setting a node") as conn:
            if conn.scalar(select(node.c.name).where(node.c.name == name)) is None:
                conn.execute(node.insert().values(name=name, first_seen=now, last_seen=0))
            if values:
                conn.execute(update(node).where(node.c.name == name).values(**values))
            ids: list[int] = list(conn.scalars(select(feed.c.id).where(feed.c.node == name)))
            for feed_id in ids:  # its daily buckets follow the new community's zone from now
                self._feed_zone.pop(feed_id, None)

    def nodes(self, community_id: str | None = None) -> list[dict[str, Any]]:
        query = select(node).order_by(node.c.name)
        if community_id is not None:
            query = query.where(node.c.community_id == community_id)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def samples(self, feed_id: int, start: int, end: int) -> list[tuple[int, float, bool]]:
        """Raw samples of `feed_id` in [start, end): (t, value, estimated), by time."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(sample.c.t, sample.c.value, sample.c.estimated)
                .where(sample.c.feed_id == feed_id, sample.c.t >= start, sample.c.t < end)
                .order_by(sample.c.t)
            )
            found = cast(list[tuple[int, float, bool]], rows.all())
            return [(t, value, bool(estimated)) for t, value, estimated in found]

    def buckets(
        self, feed_ids: Sequence[int], period: int, start: int, end: int
    ) -> dict[int, list[Bucket]]:
        """Aggregates of `period` (QUARTER_S, HOUR_S or DAY_S) starting in [start, end), by
        feed and time."""
        out: dict[int, list[Bucket]] = {feed_id: [] for feed_id in feed_ids}
        if not feed_ids:
            return out
        with self.engine.connect() as conn:
            zones = {feed_id: self._zone_of(conn, feed_id) for feed_id in feed_ids}
            rows = conn.execute(
                select(aggregate)
                .where(
                    aggregate.c.feed_id.in_(list(feed_ids)),
                    aggregate.c.period == period,
                    aggregate.c.start >= start,
                    aggregate.c.start < end,
                )
                .order_by(aggregate.c.feed_id, aggregate.c.start)
            )
            for row in rows:
                r = row._mapping
                length = (
                    local_day_bounds(r["start"], zones[r["feed_id"]])[1] - r["start"]
                    if period == DAY_S
                    else period
                )
                out[r["feed_id"]].append(
                    Bucket(
                        r["start"], length, r["count"], r["sum"], r["min"], r["max"], r["estimated"]
                    )
                )
        return out

    def averages(
        self, feed_id: int, start: int, end: int, interval: int
    ) -> list[tuple[int, float]]:
        """Mean values of `feed_id` over `interval`-second steps in [start, end): from the
        coarsest aggregate that divides `interval`, raw samples below 15 minutes. Steps with
        no sample are left out."""
        if interval <= 0:
            raise ValueError("interval must be a positive number of seconds")
        period = next((p for p in (HOUR_S, QUARTER_S) if interval % p == 0), None)
        step = (start // interval) * interval
        with self.engine.connect() as conn:
            if period is None:
                rows = conn.execute(
                    select(
                        (sample.c.t - sample.c.t % interval).label("step"),
                        func.sum(sample.c.value),
                        func.count(),
                    )
                    .where(sample.c.feed_id == feed_id, sample.c.t >= step, sample.c.t < end)
                    .group_by("step")
                    .order_by("step")
                )
            else:
                rows = conn.execute(
                    select(
                        (aggregate.c.start - aggregate.c.start % interval).label("step"),
                        func.sum(aggregate.c.sum),
                        func.sum(aggregate.c.count),
                    )
                    .where(
                        aggregate.c.feed_id == feed_id,
                        aggregate.c.period == period,
                        aggregate.c.start >= step,
                        aggregate.c.start < end,
                    )
                    .group_by("step")
                    .order_by("step")
                )
            return [(int(row[0]), row[1] / row[2]) for row in rows if row[2]]

    # ---------------------------------------------------------------- retention

    def prune(self, now: float | None = None) -> int:
        """Delete raw samples older than the retention keeps (aggregates stay): how many."""
        if self.retention.raw_days is None:
            return 0
        cutoff = int((time.time() if now is None else now) - self.retention.raw_days * DAY_S)
        with self._lock, self._begin("pruning old samples") as conn:
            return conn.execute(delete(sample).where(sample.c.t < cutoff)).rowcount or 0

    # ---------------------------------------------------------------- communities

    def put_community(self, community_id: str, name: str, timezone: str, **values: Any) -> None:
        """Create or change a community (`timezone`: an IANA name)."""
        zone(timezone)
        row = {"id": community_id, "name": name, "timezone": timezone, **values}
        with self._lock, self._begin("saving a community") as conn:
            if conn.scalar(select(community.c.id).where(community.c.id == community_id)):
                conn.execute(update(community).where(community.c.id == community_id).values(row))
            else:
                conn.execute(community.insert().values(row))
        self._feed_zone.clear()

    def communities(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                dict(r._mapping) for r in conn.execute(select(community).order_by(community.c.id))
            ]

    def community(self, community_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(community).where(community.c.id == community_id)).first()
            return dict(row._mapping) if row else None

    def member_by_ref(self, community_id: str, ref: str) -> int | None:
        """The id of member `ref` of `community_id`, or None."""
        with self.engine.connect() as conn:
            found = conn.scalar(
                select(member.c.id).where(
                    member.c.community_id == community_id, member.c.ref == ref
                )
            )
            return None if found is None else int(found)

    def community_zone(self, community_id: str | None) -> ZoneInfo:
        found = self.community(community_id) if community_id else None
        return zone(found["timezone"] if found else DEFAULT_ZONE)


def now_s() -> int:
    return int(datetime.now(UTC).timestamp())
