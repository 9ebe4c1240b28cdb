"""A service's own database: the engine (SQLite made durable and private, PostgreSQL with a
healthy pool), its schema (`StoreSchema`: the tables, the revision of its migrations),
opening it at that revision or refusing it with the command that migrates it, and holding it
for one process (`hold_store`). Every store (the ledger's, the DSO's, a meter's)
opens its database here."""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry, NullPool


class StoreError(Exception):
    """The store cannot be used as asked (wrong genesis, newer schema, ...)."""


class StoreBusy(StoreError):
    """Another process holds the store (`hold_store`); the message names it."""


SQLITE_CACHE_MIB = 256  # per connection: a ledger's hot index pages stay in memory
BUSY_TIMEOUT_MS = 10_000  # how long a SQLite connection waits for a lock


def _sqlite_pragmas(cache_mib: int) -> Callable[[Any, ConnectionPoolEntry], None]:
    def on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # durable: a committed block survives power loss
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")  # KiB when negative
        cursor.execute("PRAGMA wal_autocheckpoint=10000")  # fewer, larger checkpoints
        cursor.close()

    return on_connect


def create_private_file(path: Path) -> None:
    """Create `path` readable and writable by its owner only, unless it exists: a store holds
    token hashes, owners, bills. SQLite gives its -wal and -shm files the same mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create the store {path}: {exc.strerror}") from None


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL; None for another database, or SQLite in memory."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:" or "mode=memory" in url:
        return None
    return Path(parsed.database)


def create_store_engine(url: str, sqlite_cache_mib: int = SQLITE_CACHE_MIB) -> Engine:
    """An engine for `url`: SQLite made durable, each connection caching up to
    `sqlite_cache_mib` MiB of pages; PostgreSQL with a healthy pool."""
    if make_url(url).get_backend_name() == "sqlite":
        file = sqlite_file(url)
        if file is not None:
            create_private_file(file)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_pragmas(sqlite_cache_mib))
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def service_meta(prefix: str, metadata: MetaData) -> Table:
    """A service database's `<prefix>_meta` table: text settings, the schema version first."""
    return Table(
        f"{prefix}_meta",
        metadata,
        Column("key", String(64), primary_key=True),
        Column("value", Text, nullable=False),
    )


PREDATES_REVISIONS = "before revisions"  # what `store_revision` says of a store from before
_REVISION_DIGITS = 4  # revision ids are zero-padded sequence numbers: "0001", "0002"


@dataclass(frozen=True, slots=True)
class StoreSchema:
    """A role's store at this release's schema, and how to name it to an operator.

    `revision` is the head of the role's migrations (the folder `migrations`), kept as a
    constant so that opening a store imports no alembic; `version_table` is where alembic keeps
    the store's revision, one per role (`<prefix>_alembic_version`), so roles can share one
    PostgreSQL database; `version` is the `schema` value of the meta table at `revision`, which
    releases from before migrations check and refuse. `setup` holds the statements (triggers)
    of each dialect that a new database gets beside its tables. `sqlite_cache_mib`: the page
    cache of each SQLite connection (a meter on a small board keeps it small)."""

    metadata: MetaData
    meta: Table
    version: str | bytes
    revision: str
    version_table: str
    migrations: Path
    what: str  # "the DSO database"
    service: str  # what to stop while migrating: "the DSO"
    command: str  # "petra dso migrate"
    setup: Mapping[str, Sequence[str]] = field(default_factory=dict)
    sqlite_cache_mib: int = SQLITE_CACHE_MIB


class SchemaOutdated(StoreError):
    """The store is at an older schema revision than this release's: `migrate` upgrades it."""


def version_table(schema: StoreSchema) -> Table:
    """The table alembic records the store's revision in, as alembic itself declares it."""
    name = schema.version_table
    return Table(
        name,
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{name}_pkc"),
    )


def store_revision(conn: Connection, schema: StoreSchema) -> str | None:
    """The store's schema revision (its version table's), `PREDATES_REVISIONS` for a store
    written before migrations (a schema in its meta table, no revision), None for a database
    that holds no such store yet."""
    inspector = inspect(conn)
    if inspector.has_table(schema.version_table):
        found = conn.scalar(select(version_table(schema).c.version_num))
        if found is not None:
            return str(found)
    if not inspector.has_table(schema.meta.name):
        return None
    meta = schema.meta
    found = conn.scalar(select(meta.c.value).where(meta.c.key == "schema"))
    return None if found is None else PREDATES_REVISIONS


def check_revision(found: str | None, schema: StoreSchema, url: str) -> None:
    """Refuse a store not at this release's revision, naming what to do: SchemaOutdated (with
    the `migrate` command to run) for an older one, StoreError for a newer one."""
    if found is None or found == schema.revision:
        return
    shown = make_url(url).render_as_string(hide_password=True)
    if found == PREDATES_REVISIONS or _older(found, schema.revision):
        where = (
            "predates schema revisions"
            if found == PREDATES_REVISIONS
            else f"is at schema revision {found}"
        )
        raise SchemaOutdated(
            f"{schema.what} at {shown} {where} (this release needs {schema.revision}): "
            f"stop {schema.service} and run `{schema.command} --store {shown}`"
        )
    raise StoreError(
        f"{schema.what} at {shown} is at schema revision {found}, which this release does not "
        f"know (it needs {schema.revision}): a newer PETra release wrote it; use that release"
    )


def _older(found: str, revision: str) -> bool:
    """Whether revision id `found` comes before `revision` (both zero-padded numbers)."""
    return found.isdigit() and len(found) == _REVISION_DIGITS and found < revision


def open_schema(engine: Engine, schema: StoreSchema, url: str) -> None:
    """Check that the store behind `engine` is at this release's schema revision; an empty
    database gets the tables of that revision, stamped with it. StoreError (SchemaOutdated when
    `migrate` helps) otherwise; SQLAlchemyError when the database cannot be read."""
    with engine.begin() as conn:
        found = store_revision(conn, schema)
    if found is None:
        try:
            _create(engine, schema)
        except IntegrityError:  # another process created it meanwhile: read what it wrote
            with engine.begin() as conn:
                found = store_revision(conn, schema)
    check_revision(found, schema, url)


def _create(engine: Engine, schema: StoreSchema) -> None:
    """The tables of the head revision, its setup, and its revision recorded with the meta
    schema in one last transaction: a store stamped is a store complete."""
    revisions = version_table(schema)
    schema.metadata.create_all(engine)
    revisions.create(engine, checkfirst=True)
    with engine.begin() as conn:
        for statement in schema.setup.get(engine.dialect.name, ()):
            conn.execute(text(statement))
        conn.execute(revisions.insert(), {"version_num": schema.revision})
        conn.execute(schema.meta.insert(), {"key": "schema", "value": schema.version})


def open_service_database(url: str, schema: StoreSchema) -> Engine:
    """The engine of a service's own database (the DSO's, a meter's): created at this
    release's schema revision when empty, refused (StoreError naming `schema.what`, and the
    command to run when it is older) when at another revision."""
    try:
        engine = create_store_engine(url, schema.sqlite_cache_mib)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open {schema.what} at {url}: {exc.args[0]}") from exc
    try:
        open_schema(engine, schema, url)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise StoreError(f"cannot open {schema.what} at {url}: {exc.args[0]}") from exc
    except StoreError:
        engine.dispose()
        raise
    return engine


# ---------------------------------------------------------------- one process per store

_LOCK_SUFFIX = "-node.lock"  # beside a SQLite database: `<database>-node.lock`
_APPLICATION_NAME_BYTES = 63  # PostgreSQL truncates application_name to NAMEDATALEN - 1
_HELD_BY = re.compile(r"(?P<command>.+) pid (?P<pid>\d+) on (?P<host>.+)")
# Both keys as PostgreSQL's hashtext: stores of other roles, or of other chains in other
# schemas, may share one database.
_ADVISORY_KEYS = "hashtext('petra ' || :role), hashtext(coalesce(current_schema(), ''))"
# The server drops a vanished holder's session (its host lost power, say) after about a minute
# instead of the system's two hours, and with it the lock.
_KEEPALIVES = (
    "tcp_keepalives_idle = 30",
    "tcp_keepalives_interval = 10",
    "tcp_keepalives_count = 3",
)


@dataclass(frozen=True, slots=True)
class StoreHolder:
    """The process holding a store, as it described itself: its command line (`petra ledger
    serve`), process id and host, and since when (unix seconds)."""

    command: str
    pid: int | None = None
    host: str | None = None
    since: float | None = None

    def __str__(self) -> str:
        details = []
        if self.pid is not None:
            details.append(f"pid {self.pid}" + (f" on host {self.host}" if self.host else ""))
        if self.since is not None:
            started = time.localtime(self.since)
            shown = "%H:%M:%S" if started[:3] == time.localtime()[:3] else "%Y-%m-%d %H:%M:%S"
            details.append(f"since {time.strftime(shown, started)}")
        return f"`{self.command}`" + (f" ({', '.join(details)})" if details else "")


@contextmanager
def hold_store(store: str | Engine, role: str, command: str) -> Iterator[None]:
    """Hold the store at `store` (a URL, or an engine on it) for this process, as the `role`
    service's (`ledger`, `DSO`, `meter`) `command` (`petra ledger serve`), until leaving.

    StoreBusy names the process that holds it already. SQLite: an flock on the file
    `<database>-node.lock` beside it, which the holder describes itself in; PostgreSQL: a
    session advisory lock keyed by the role and the schema, on a connection of its own whose
    `application_name` describes the holder. Either ends with the process, however it ends, so
    a killed holder leaves nothing locked. An in-memory database has no other process to fear."""
    if isinstance(store, Engine):
        url = store.url
    else:
        try:
            url = make_url(store)
        except SQLAlchemyError:
            raise StoreError(f"{store} is not a database URL") from None
    holder = StoreHolder(command, os.getpid(), socket.gethostname(), time.time())
    backend = url.get_backend_name()
    if backend == "postgresql":
        with _advisory_lock(url, role, holder):
            yield
        return
    name = url.database
    in_memory = not name or name == ":memory:" or url.query.get("mode") == "memory"
    if backend != "sqlite" or in_memory:
        yield
        return
    with _file_lock(Path(f"{name}{_LOCK_SUFFIX}"), url, role, holder):
        yield


def _busy(role: str, url: URL, holder: StoreHolder | None) -> StoreBusy:
    shown = url.render_as_string(hide_password=True)
    return StoreBusy(
        f"the {role} store {shown} is held by {holder or 'another process'}; "
        "stop it first or give another --store"
    )


@contextmanager
def _file_lock(path: Path, url: URL, role: str, holder: StoreHolder) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot lock the {role} store at {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(role, url, _holder_in(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(holder)).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # nobody holds it: a refusal must not name a process gone
    finally:
        os.close(fd)  # releases the lock, as the process's end does


def _holder_in(fd: int) -> StoreHolder | None:
    """The holder a lock file describes; None if it does not yet (it has just been taken)."""
    try:
        fields = json.loads(os.pread(fd, 4096, 0))
        return StoreHolder(
            str(fields["command"]),
            int(fields["pid"]),
            str(fields["host"]),
            float(fields["since"]),
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _application_name(holder: StoreHolder) -> str:
    """`petra ledger serve pid 1234 on host`, the host cut to fit PostgreSQL's length."""
    head = f"{holder.command} pid {holder.pid} on "
    room = _APPLICATION_NAME_BYTES - len(head.encode())
    return head + (holder.host or "").encode()[: max(room, 0)].decode(errors="ignore")


@contextmanager
def _advisory_lock(url: URL, role: str, holder: StoreHolder) -> Iterator[None]:
    engine = create_engine(url, poolclass=NullPool)  # a connection of its own, held throughout
    try:
        try:
            conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot reach the {role} store: {exc.args[0]}") from None
        try:
            held = _try_advisory_lock(conn, role, holder)
            if not held:
                raise _busy(role, url, _advisory_holder(conn, role))
        except BaseException:
            conn.close()
            raise
        try:
            yield
        finally:
            with suppress(SQLAlchemyError):  # else the session is gone, and its lock with it
                conn.execute(text(f"SELECT pg_advisory_unlock({_ADVISORY_KEYS})"), {"role": role})
            conn.close()
    finally:
        engine.dispose()


def _try_advisory_lock(conn: Connection, role: str, holder: StoreHolder) -> bool:
    try:
        name = _application_name(holder)
        conn.execute(text("SELECT set_config('application_name', :name, false)"), {"name": name})
        for setting in _KEEPALIVES:
            conn.execute(text(f"SET {setting}"))
        return bool(
            conn.scalar(text(f"SELECT pg_try_advisory_lock({_ADVISORY_KEYS})"), {"role": role})
        )
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot lock the {role} store: {exc.args[0]}") from None


def _advisory_holder(conn: Connection, role: str) -> StoreHolder | None:
    """The session holding the role's lock on this schema, through pg_locks and
    pg_stat_activity; None if it let go meanwhile."""
    try:
        found = conn.execute(
            text(
                "SELECT a.application_name, extract(epoch FROM a.backend_start) "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND l.classid = hashtext('petra ' || :role)::oid "
                "AND l.objid = hashtext(coalesce(current_schema(), ''))::oid"
            ),
            {"role": role},
        ).first()
    except SQLAlchemyError:
        return None
    if found is None:
        return None
    name, started = str(found[0] or ""), found[1]
    since = float(started) if started is not None else None
    described = _HELD_BY.fullmatch(name)
    if described is None:
        return StoreHolder(name or "a session of another program", since=since)
    return StoreHolder(described["command"], int(described["pid"]), described["host"], since)
