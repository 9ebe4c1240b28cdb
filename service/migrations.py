"""Upgrading a role's store from one schema revision to the next, through alembic, without an
alembic.ini or env.py: the role's `StoreSchema` names its folder of revisions and its version
table. Imported by `petra <role> migrate` and the tests only: opening a store never loads
alembic (`service.database.open_schema` checks the revision with one query)."""

from __future__ import annotations

import io
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from alembic.config import Config
from alembic.migration import MigrationContext, MigrationInfo
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from service.database import (
    PREDATES_REVISIONS,
    StoreError,
    StoreSchema,
    create_store_engine,
    store_revision,
)


@dataclass(frozen=True, slots=True)
class Revision:
    """One schema revision: its id ("0002") and what it does (its docstring's first line)."""

    id: str
    title: str


@dataclass(frozen=True, slots=True)
class MigrationPlan:
    """What `migrate` would do to a store: from `current` (None: an empty database;
    `PREDATES_REVISIONS`: written before migrations) to `target`, first stamping a store from
    before migrations with the baseline revision (`stamp`), then applying `steps` in order,
    each in its own transaction."""

    current: str | None
    target: str
    steps: tuple[Revision, ...]
    stamp: str | None = None

    @property
    def legacy(self) -> bool:
        """Whether the store predates schema revisions (it is stamped with the baseline)."""
        return self.stamp is not None


def scripts(schema: StoreSchema) -> ScriptDirectory:
    """The role's revisions (its `migrations` folder, one module per revision)."""
    folder = str(schema.migrations)
    return ScriptDirectory(folder, version_locations=[folder])


def head_revision(schema: StoreSchema) -> str:
    """The newest revision of the role's migrations (its store module's `SCHEMA_REVISION`)."""
    head = scripts(schema).get_current_head()
    if head is None:
        raise StoreError(f"{schema.migrations} holds no schema revision")
    return head


def baseline_revision(schema: StoreSchema) -> str:
    """The first revision: the schema of the release before migrations."""
    base = scripts(schema).get_base()
    if base is None:
        raise StoreError(f"{schema.migrations} holds no schema revision")
    return base


def plan_migration(engine: Engine, schema: StoreSchema, target: str | None = None) -> MigrationPlan:
    """What migrating the store behind `engine` to `target` (by default the head revision)
    takes. StoreError when the store is at a revision this release does not know (a newer
    release wrote it)."""
    script = scripts(schema)
    target = target or head_revision(schema)
    try:
        with engine.connect() as conn:
            current = store_revision(conn, schema)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read {schema.what}: {exc.args[0]}") from exc
    stamp = baseline_revision(schema) if current == PREDATES_REVISIONS else None
    start = stamp or current
    if start is not None and start not in {s.revision for s in script.walk_revisions()}:
        raise StoreError(
            f"{schema.what} is at schema revision {start}, which this release does not know "
            f"(its newest is {target}): a newer PETra release wrote it; use that release"
        )
    steps = [
        Revision(s.revision, _title(s.revision, s.doc))
        for s in script.iterate_revisions(target, start)
    ]
    return MigrationPlan(current, target, tuple(reversed(steps)), stamp)


def _title(revision: str, doc: str | None) -> str:
    """What a revision does: its docstring's first line, without "Revision 0002: "."""
    first = (doc or "").strip().splitlines()[0] if doc and doc.strip() else ""
    return first.removeprefix(f"Revision {revision}: ")


def migrate(
    url: str,
    schema: StoreSchema,
    applied: Callable[[Revision], None] = lambda _: None,
    target: str | None = None,
) -> MigrationPlan:
    """Bring the store at `url` to `target` (by default the head revision): a store from
    before migrations is first checked to hold the baseline's tables and stamped with it; each
    revision then runs in its own transaction (SQLite's too), and `applied` hears of each once
    it is committed. The plan it carried out; StoreError when the store cannot be migrated."""
    engine = _transactional_engine(url)
    try:
        plan = plan_migration(engine, schema, target)
        if plan.stamp is not None:
            _check_baseline(engine, schema)
        with engine.connect() as conn:
            if plan.stamp is not None:
                with conn.begin():
                    context = MigrationContext.configure(
                        conn, opts={"version_table": schema.version_table}
                    )
                    context.stamp(scripts(schema), plan.stamp)
            titles = {step.id: step for step in plan.steps}

            def done(
                ctx: MigrationContext,
                step: MigrationInfo,
                heads: Collection[Any],
                run_args: Mapping[str, Any],
            ) -> None:
                applied(titles[step.up_revision_id or ""])

            with _environment(schema, plan.target) as env:
                env.configure(
                    connection=conn,
                    version_table=schema.version_table,
                    transaction_per_migration=True,
                    transactional_ddl=True,  # this engine's transactions hold DDL on SQLite too
                    on_version_apply=done,
                )
                env.run_migrations()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot migrate {schema.what}: {exc.args[0]}") from exc
    finally:
        engine.dispose()
    return plan


def migration_sql(plan: MigrationPlan, schema: StoreSchema, dialect: str) -> str:
    """The SQL that carries out `plan` on a database of `dialect` (`sqlite`, `postgresql`), for
    a database administrator to read or run: alembic's offline mode, each revision between
    BEGIN and COMMIT, the stamp of a store from before migrations first."""
    buffer = io.StringIO()
    start = plan.stamp or plan.current
    if plan.stamp is not None:
        _offline(schema, dialect, buffer, None, plan.stamp, stamp=True)
    if plan.steps:
        _offline(schema, dialect, buffer, start, plan.target, stamp=False)
    return buffer.getvalue()


def _offline(
    schema: StoreSchema,
    dialect: str,
    buffer: io.StringIO,
    start: str | None,
    target: str,
    stamp: bool,
) -> None:
    with _environment(schema, target, as_sql=True, start=start, stamp=stamp) as env:
        env.configure(
            dialect_name=dialect,
            version_table=schema.version_table,
            transaction_per_migration=True,
            output_buffer=buffer,
            literal_binds=True,
        )
        env.run_migrations()


@contextmanager
def _environment(
    schema: StoreSchema,
    target: str,
    as_sql: bool = False,
    start: str | None = None,
    stamp: bool = False,
) -> Iterator[EnvironmentContext]:
    """Alembic's environment for upgrading (or only stamping) the role's store to `target`:
    what an env.py would set up. `as_sql`: offline, from `start`, writing SQL text."""
    script = scripts(schema)
    config = Config()
    config.set_main_option("script_location", str(schema.migrations))

    def upgrade(revision: Any, _context: MigrationContext) -> Any:
        if stamp:
            return script._stamp_revs(target, revision)
        return script._upgrade_revs(target, revision)

    with EnvironmentContext(
        config,
        script,
        fn=upgrade,
        as_sql=as_sql,
        starting_rev=start,
        destination_rev=target,
    ) as env:
        yield env


def _transactional_engine(url: str) -> Engine:
    """An engine on `url` whose transactions hold DDL too: pysqlite begins a transaction only
    before a row is written, so on SQLite the engine says BEGIN itself."""
    engine = create_store_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _driver_transactions_off)
        event.listen(engine, "begin", _begin)
    return engine


def _driver_transactions_off(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None


def _begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")


def _check_baseline(engine: Engine, schema: StoreSchema) -> None:
    """Refuse a store from before migrations unless it holds the baseline revision's tables,
    each with the baseline's columns (tables of other roles may share the database)."""
    expected = _baseline_columns(schema)
    with engine.connect() as conn:
        inspector = inspect(conn)
        present = set(inspector.get_table_names())
        differ = sorted(
            table
            for table, columns in expected.items()
            if table not in present or {c["name"] for c in inspector.get_columns(table)} != columns
        )
    if differ:
        raise StoreError(
            f"{schema.what} predates schema revisions but its tables {', '.join(differ)} are "
            f"not those of revision {baseline_revision(schema)}: no PETra release wrote it "
            "so; restore it from a backup"
        )


def _baseline_columns(schema: StoreSchema) -> dict[str, set[str]]:
    """The tables and columns the baseline revision creates, read back from an in-memory
    database it was applied to."""
    engine = create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            with _environment(schema, baseline_revision(schema)) as env:
                env.configure(connection=conn, version_table=schema.version_table)
                with env.begin_transaction():
                    env.run_migrations()
            inspector = inspect(conn)
            return {
                table: {c["name"] for c in inspector.get_columns(table)}
                for table in inspector.get_table_names()
                if table != schema.version_table
            }
    finally:
        engine.dispose()
