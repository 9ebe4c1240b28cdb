"""Schema migrations (issue 20): stores written by the release before schema revisions (the
fixtures of tests/fixtures/stores, made by its make_fixtures.py) are refused with the command
to run, migrated by `petra <role> migrate`, and then hold every row, root and bill as before;
the migrations build exactly the schema the store modules declare, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.runtime.environment import EnvironmentContext
from sqlalchemy import MetaData, create_engine, select, text
from typer.testing import CliRunner

import dso.store
import ledger.store
import monitoring.store
import smartmeter.store
from monitoring.agreements import agreements_of
from petra.cli import app
from service.database import StoreError, StoreSchema, hold_store
from service.migrations import head_revision, migrate, scripts

FIXTURES = Path(__file__).parent / "fixtures" / "stores"


@dataclass(frozen=True)
class Role:
    """A role whose store migrates: its CLI group, its schema, the fixture's name, the role
    its service holds the store as, and how to read back what the fixture's JSON lists."""

    cli: str
    schema: StoreSchema
    fixture: str
    holder: str
    contents: Callable[[str], dict[str, Any]]


def ledger_contents(url: str) -> dict[str, Any]:
    store = ledger.store.Store(url)
    try:
        heads = [
            {
                "height": h.header.height,
                "tree_size": h.header.tree_size,
                "root": h.header.root.hex(),
            }
            for h in store.heads()
        ]
        txids = [t.txid.hex() for t in store.transactions_in(0, store.transaction_count())]
    finally:
        store.close()
    return {"heads": heads, "txids": txids}


def dso_contents(url: str) -> dict[str, Any]:
    store = dso.store.DsoStore(url)
    try:
        bills = [
            {
                "id": b.id.hex(),
                "meter": b.meter,
                "interval": b.interval,
                "amount": b.amount,
                "status": b.status,
            }
            for b in store.bills()
        ]
    finally:
        store.close()
    return {"bills": bills}


def meter_contents(url: str) -> dict[str, Any]:
    with smartmeter.store.MeterStore(url) as store:
        first = store.first_interval(None)
        assert first is not None
        with store.engine.connect() as conn:
            last = conn.scalar(text("SELECT max(interval) FROM meter_intervals"))
            keys = list(conn.scalars(text("SELECT key FROM meter_outbox ORDER BY id")))
        return {
            "readings": [r.seq for r in store.readings()],
            "intervals": [
                {
                    "interval": t.interval,
                    "import_j": t.import_j,
                    "export_j": t.export_j,
                    "status": str(t.status),
                }
                for t in store.intervals(first, int(last))
            ],
            "outbox": keys,
            "bills_queued": store.pending("bill"),
        }


def monitoring_contents(url: str) -> dict[str, Any]:
    store = monitoring.store.MonitoringStore(url)
    try:
        with store.engine.connect() as conn:
            communities: list[str] = list(conn.scalars(select(monitoring.store.community.c.id)))
        agreements = [
            {
                "id": a.id,
                "installation_id": a.installation_id,
                "kind": a.kind,
                "first_day": str(a.first_day),
                "supply_points": list(a.supply_points),
            }
            for community in communities
            for a in agreements_of(store, community)
        ]
    finally:
        store.engine.dispose()
    return {"agreements": agreements}


ROLES = {
    "ledger": Role("ledger", ledger.store.SCHEMA, "ledger", "ledger", ledger_contents),
    "dso": Role("dso", dso.store.SCHEMA, "dso", dso.store.STORE_ROLE, dso_contents),
    "meter": Role("meter", smartmeter.store.SCHEMA, "meter", "meter", meter_contents),
    "monitor": Role(
        "monitor",
        monitoring.store.SCHEMA,
        "monitoring",
        monitoring.store.STORE_ROLE,
        monitoring_contents,
    ),
}
role_names = pytest.mark.parametrize("role", list(ROLES))


def fixture_store(role: Role, tmp_path: Path) -> str:
    """A copy of the role's fixture store (the release's) in `tmp_path`, as a URL."""
    path = tmp_path / f"{role.fixture}.sqlite"
    shutil.copyfile(FIXTURES / f"{role.fixture}.sqlite", path)
    return f"sqlite:///{path}"


def held(role: Role) -> dict[str, Any]:
    """What the release's code read from the fixture (its JSON)."""
    found: dict[str, Any] = json.loads((FIXTURES / f"{role.fixture}.json").read_text())
    return found


def row_counts(url: str, schema: StoreSchema) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table.name: int(conn.scalar(text(f'SELECT count(*) FROM "{table.name}"')) or 0)
                for table in schema.metadata.sorted_tables
            }
    finally:
        engine.dispose()


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def schema_differences(url: str, schema: StoreSchema) -> list[Any]:
    """What alembic's autogenerate finds between the database and the store module's tables
    (the role's tables only: others may share the database)."""
    names = {t.name for t in schema.metadata.sorted_tables}
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "version_table": schema.version_table,
                    "include_name": lambda name, kind, _parent: kind != "table" or name in names,
                },
            )
            return list(compare_metadata(context, schema.metadata))
    finally:
        engine.dispose()


# ------------------------------------------------------------- revisions


@role_names
def test_the_store_module_names_the_head_revision(role: str) -> None:
    schema = ROLES[role].schema
    assert head_revision(schema) == schema.revision
    assert [s.revision for s in scripts(schema).walk_revisions()] == ["0002", "0001"]


# ------------------------------------------------------------- the release's stores


@role_names
def test_a_store_of_the_release_is_refused_with_the_command_to_run(
    role: str, tmp_path: Path
) -> None:
    url = fixture_store(ROLES[role], tmp_path)
    with pytest.raises(StoreError) as refused:
        ROLES[role].contents(url)
    message = str(refused.value)
    assert "predates schema revisions (this release needs 0002)" in message
    assert message.endswith(f"run `petra {role} migrate --store {url}`")


@role_names
def test_migrate_upgrades_a_store_of_the_release_keeping_every_row(
    role: str, tmp_path: Path
) -> None:
    url = fixture_store(ROLES[role], tmp_path)
    expected = held(ROLES[role])
    result = run(role, "migrate", "--store", url)
    assert result.exit_code == 0, result.output
    assert "before revisions -> 0002" in result.output
    assert "stamping 0001" in result.output
    assert "applied 0002" in result.output
    assert row_counts(url, ROLES[role].schema) == expected["rows"]
    found = ROLES[role].contents(url)
    assert found == {key: expected[key] for key in found}
    assert schema_differences(url, ROLES[role].schema) == []

    again = run(role, "migrate", "--store", url)
    assert again.exit_code == 0, again.output
    assert "is at 0002 already: nothing to do" in again.output


def test_a_migrated_store_is_refused_by_the_release_before_revisions(tmp_path: Path) -> None:
    """The release compares the meta schema with its own and refuses any other."""
    url = fixture_store(ROLES["dso"], tmp_path)
    assert run("dso", "migrate", "--store", url).exit_code == 0
    engine = create_engine(url)
    with engine.connect() as conn:
        schema = conn.scalar(text("SELECT value FROM dso_meta WHERE key = 'schema'"))
    engine.dispose()
    assert schema == dso.store.SCHEMA_VERSION != "1"


def test_dry_run_and_sql_change_nothing(tmp_path: Path) -> None:
    url = fixture_store(ROLES["dso"], tmp_path)
    dry = run("dso", "migrate", "--store", url, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would stamp 0001" in dry.output
    assert "would apply 0002: the index dso_bills_by_status" in dry.output
    sql = run("dso", "migrate", "--store", url, "--sql")
    assert sql.exit_code == 0, sql.output
    assert "INSERT INTO dso_alembic_version (version_num) VALUES ('0001')" in sql.output
    assert "CREATE INDEX dso_bills_by_status ON dso_bills (status)" in sql.output
    assert "UPDATE dso_meta SET value='2'" in sql.output
    with pytest.raises(StoreError):
        dso_contents(url)


def test_the_sql_a_dba_runs_migrates_the_store(tmp_path: Path) -> None:
    url = fixture_store(ROLES["meter"], tmp_path)
    sql = run("meter", "migrate", "--store", url, "--sql")
    assert sql.exit_code == 0, sql.output
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.executescript(sql.output)
    assert meter_contents(url)["readings"] == held(ROLES["meter"])["readings"]


def test_migrate_refuses_a_store_in_use(tmp_path: Path) -> None:
    url = fixture_store(ROLES["dso"], tmp_path)
    with hold_store(url, dso.store.STORE_ROLE, "petra dso serve"):
        result = run("dso", "migrate", "--store", url)
    assert result.exit_code == 2
    assert "held by `petra dso serve`" in " ".join(result.output.split())
    with pytest.raises(StoreError):
        dso_contents(url)


def test_migrate_needs_one_store(tmp_path: Path) -> None:
    result = run("meter", "migrate")
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "give the store to migrate: --store URL or --config FILE" in said


def test_a_store_from_before_revisions_with_other_tables_is_not_stamped(tmp_path: Path) -> None:
    url = fixture_store(ROLES["meter"], tmp_path)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute("ALTER TABLE meter_readings ADD COLUMN note TEXT")
    result = run("meter", "migrate", "--store", url)
    assert result.exit_code == 2
    assert "tables meter_readings are not those of revision 0001" in " ".join(result.output.split())
    engine = create_engine(url)
    with engine.connect() as conn:
        assert not engine.dialect.has_table(conn, "meter_alembic_version")
    engine.dispose()


# ------------------------------------------------------------- new and newer stores


@role_names
def test_an_empty_database_opens_at_the_head_with_the_declared_schema(
    role: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/new.sqlite"
    open_store(role, url)
    assert schema_differences(url, ROLES[role].schema) == []
    result = run(role, "migrate", "--store", url)
    assert "is at 0002 already" in result.output


@role_names
def test_migrations_build_the_declared_schema(role: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/empty.sqlite"
    result = run(role, "migrate", "--store", url)
    assert result.exit_code == 0, result.output
    assert "empty -> 0002" in result.output
    assert schema_differences(url, ROLES[role].schema) == []
    open_store(role, url)


def test_a_store_of_a_newer_release_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/meter.sqlite"
    open_store("meter", url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE meter_alembic_version SET version_num = '0003'"))
    engine.dispose()
    with pytest.raises(StoreError, match="at schema revision 0003, which this release does not"):
        open_store("meter", url)
    result = run("meter", "migrate", "--store", url)
    assert result.exit_code == 2
    assert "a newer PETra release wrote it" in " ".join(result.output.split())


def test_an_older_revision_is_refused_with_the_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/mon.sqlite"
    migrate(url, monitoring.store.SCHEMA, target="0001")
    with pytest.raises(StoreError, match=r"is at schema revision 0001 \(this release"):
        open_store("monitor", url)


def open_store(role: str, url: str) -> None:
    """Open the role's store with this release's code, and close it."""
    if role == "ledger":
        ledger.store.Store(url).close()
    elif role == "dso":
        dso.store.DsoStore(url).close()
    elif role == "meter":
        smartmeter.store.MeterStore(url).close()
    else:
        monitoring.store.MonitoringStore(url).engine.dispose()


# ------------------------------------------------------------- PostgreSQL


def downgrade(url: str, schema: StoreSchema, target: str) -> None:
    """Run the role's downgrades to `target` (the CLI offers none: a backup is the way back)."""
    script = scripts(schema)
    engine = create_engine(url)
    try:
        with (
            engine.connect() as conn,
            EnvironmentContext(
                _config(schema),
                script,
                fn=lambda revision, _context: script._downgrade_revs(target, revision),
                destination_rev=target,
            ) as env,
        ):
            env.configure(connection=conn, version_table=schema.version_table)
            with env.begin_transaction():
                env.run_migrations()
    finally:
        engine.dispose()


def _config(schema: StoreSchema) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(schema.migrations))
    return config


INT32_MAX = 2**31 - 1


def copy_rows(source: str, target: str, schema: StoreSchema) -> None:
    """Copy every row of the role's tables from `source` into the same tables at `target`
    (the meta table's schema excepted: the baseline wrote it). An installation's cost beyond
    32 bits is left out: PostgreSQL refused it at revision 0001, the bug 0002 mends."""
    reader, writer = create_engine(source), create_engine(target)
    tables = MetaData()
    try:
        with reader.connect() as read, writer.begin() as write:
            tables.reflect(write, only=[t.name for t in schema.metadata.sorted_tables])
            for table in schema.metadata.sorted_tables:
                rows = [dict(r._mapping) for r in read.execute(select(table))]
                if table.name == schema.meta.name:
                    rows = [r for r in rows if r["key"] != "schema"]
                if "cost_micro" in table.c:
                    rows = [
                        r | {"cost_micro": None} if (r["cost_micro"] or 0) > INT32_MAX else r
                        for r in rows
                    ]
                if rows:
                    write.execute(tables.tables[table.name].insert(), rows)
    finally:
        reader.dispose()
        writer.dispose()


@pytest.fixture
def postgres_schema(request: pytest.FixtureRequest) -> Iterator[str]:
    server = request.getfixturevalue("postgres_server")
    yield server.fresh_schema()


@pytest.mark.postgres
@role_names
def test_postgres_migrations_build_the_declared_schema_and_keep_the_rows(
    role: str, postgres_schema: str, tmp_path: Path
) -> None:
    """On PostgreSQL (in a schema of a shared database, as a ledger may live): a store at
    0001 with the fixture's rows upgrades to the head with the rows intact; 0002 goes down and
    up again with them."""
    schema = ROLES[role].schema
    migrate(postgres_schema, schema, target="0001")
    copy_rows(fixture_store(ROLES[role], tmp_path), postgres_schema, schema)
    with pytest.raises(StoreError, match=f"petra {role} migrate --store"):
        open_store(role, postgres_schema)
    result = run(role, "migrate", "--store", postgres_schema)
    assert result.exit_code == 0, result.output
    assert "0001 -> 0002" in result.output
    assert schema_differences(postgres_schema, schema) == []
    expected = held(ROLES[role])
    assert row_counts(postgres_schema, schema) == expected["rows"]
    found = ROLES[role].contents(postgres_schema)
    assert found == {key: expected[key] for key in found}

    downgrade(postgres_schema, schema, "0001")
    with pytest.raises(StoreError):
        open_store(role, postgres_schema)
    migrate(postgres_schema, schema)
    assert ROLES[role].contents(postgres_schema) == found
    assert schema_differences(postgres_schema, schema) == []
    if role == "monitor":
        installation_costs_fit_in_64_bits(postgres_schema)


def installation_costs_fit_in_64_bits(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE mon_installation SET cost_micro = 5124000000"))
            assert conn.scalar(text("SELECT max(cost_micro) FROM mon_installation")) == 5124000000
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_an_empty_schema_opens_at_the_head(postgres_schema: str) -> None:
    for role in ROLES:
        open_store(role, postgres_schema)  # four roles share one schema
    for role in ROLES:
        assert schema_differences(postgres_schema, ROLES[role].schema) == []
        assert "already" in run(role, "migrate", "--store", postgres_schema).output
