"""A service's own database: the engine (SQLite made durable and private, PostgreSQL with a
healthy pool), its schema-version table, opening it with its tables and version checked, and
holding it for one process (`hold_store`). Every store (the ledger's, the DSO's, a meter's)
opens its database here."""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry, NullPool


class StoreError(Exception):
    """The store cannot be used as asked (wrong genesis, newer schema, ...)."""


class StoreBusy(StoreError):
    """Another process holds the store (`hold_store`); the message names it."""


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # durable: a committed block survives power loss
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA cache_size=-262144")  # 256 MiB: the hot index pages stay in memory
    cursor.execute("PRAGMA wal_autocheckpoint=10000")  # fewer, larger checkpoints
    cursor.close()


def create_private_file(path: Path) -> None:
    """Create `path` readable and writable by its owner only, unless it exists: a store holds
    token hashes, owners, bills. SQLite gives its -wal and -shm files the same mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create the store {path}: {exc.strerror}") from None


def create_store_engine(url: str) -> Engine:
    """An engine for `url`: SQLite made durable, PostgreSQL with a healthy pool."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and "mode=memory" not in url:
            create_private_file(Path(parsed.database))
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_pragmas)
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


def open_service_database(
    url: str,
    metadata: MetaData,
    meta: Table,
    version: str,
    what: str,
    setup: Mapping[str, Sequence[str]] | None = None,
) -> Engine:
    """The engine of a service's own database (the DSO's, a meter's): its tables created, the
    `setup` statements of its dialect run, and its schema version checked (or recorded, when
    new). StoreError names `what` when it cannot be opened or is of another schema."""
    try:
        engine = create_store_engine(url)
        metadata.create_all(engine)
        with engine.begin() as conn:
            for statement in (setup or {}).get(engine.dialect.name, ()):
                conn.execute(text(statement))
            found = conn.scalar(select(meta.c.value).where(meta.c.key == "schema"))
            if found is None:
                conn.execute(meta.insert(), {"key": "schema", "value": version})
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open {what} at {url}: {exc.args[0]}") from exc
    if found is not None and found != version:
        engine.dispose()
        raise StoreError(
            f"{what} schema {found} is not {version}: use a PETra release that knows it"
        )
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
