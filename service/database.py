"""A service's own database: the engine (SQLite made durable and private, PostgreSQL with a
healthy pool), its schema-version table, and opening it with its tables and version checked.
Every store (the ledger's, the DSO's, a meter's) opens its database here."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry


class StoreError(Exception):
    """The store cannot be used as asked (wrong genesis, newer schema, ...)."""


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
