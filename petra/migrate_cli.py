"""`petra <role> migrate`: bring a role's store to this release's schema revision, one
revision per transaction, holding the store meanwhile so that a running service's is refused
(docs/operations.md, "Upgrading").

No `from __future__ import annotations`: typer reads the options' help, which names the
role, from annotations evaluated where the command is defined."""

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from petra.config import store_given
from petra.console import fail, hold_store_for, shown_store

if TYPE_CHECKING:
    from service.database import StoreSchema


@dataclass(frozen=True, slots=True)
class RoleStore:
    """Where a role's store schema lives (`module`.SCHEMA), and the role its service holds the
    store as (`hold_store`), so that `migrate` and the running service exclude each other."""

    module: str
    holder: str
    noun: str  # "the ledger's store"


ROLE_STORES = {
    "ledger": RoleStore("ledger.store", "ledger", "the ledger's store"),
    "dso": RoleStore("dso.store", "DSO", "the DSO database"),
    "meter": RoleStore("smartmeter.store", "meter", "the meter's database"),
    "monitor": RoleStore("monitoring.store", "monitoring", "the monitoring database"),
}


def add_migrate_command(app: typer.Typer, role: str) -> None:
    """Add `migrate` to the command group of `role` (ledger, dso, meter, monitor)."""
    where = ROLE_STORES[role]

    @app.command(
        "migrate",
        help=f"Upgrade {where.noun} to this release's schema revision (stop the service "
        "first, back the store up); each revision in its own transaction; says so and "
        "changes nothing when it is there already.",
    )
    def migrate_command(
        ctx: typer.Context,
        store: Annotated[
            str | None,
            typer.Option(
                help="The database's SQLAlchemy URL: the store to upgrade (else --config's)."
            ),
        ] = None,
        config: Annotated[
            Path | None, typer.Option(help=f"The {role}'s TOML configuration, naming its store.")
        ] = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Say what would run; change nothing.")
        ] = False,
        sql: Annotated[
            bool,
            typer.Option("--sql", help="Print the SQL that would run, for a DBA; change nothing."),
        ] = False,
    ) -> None:
        url = store_given(role, store, config, "migrate")
        hold_store_for(ctx, url, where.holder, f"petra {role} migrate")
        _migrate_store(url, _schema(where), dry_run=dry_run, sql=sql)


def _schema(where: RoleStore) -> "StoreSchema":
    schema: StoreSchema = importlib.import_module(where.module).SCHEMA
    return schema


def _migrate_store(url: str, schema: "StoreSchema", dry_run: bool, sql: bool) -> None:
    """Show the store's revision and the target, then apply, list (`dry_run`) or print the SQL
    of (`sql`) the revisions between; one sentence on failure."""
    from service.database import PREDATES_REVISIONS, StoreError, create_store_engine
    from service.migrations import migrate, migration_sql, plan_migration

    shown = shown_store(url)
    try:
        engine = create_store_engine(url)
        try:
            plan = plan_migration(engine, schema)
        finally:
            engine.dispose()
        if sql:
            typer.echo(migration_sql(plan, schema, engine.dialect.name), nl=False)
            return
        current = {None: "empty", PREDATES_REVISIONS: "before revisions"}.get(
            plan.current, plan.current
        )
        if not plan.steps and not plan.legacy:
            typer.echo(f"{schema.what} at {shown} is at {plan.target} already: nothing to do")
            return
        typer.echo(f"{schema.what} at {shown}: {current} -> {plan.target}")
        if plan.stamp is not None:
            stamp = "would stamp" if dry_run else "stamping"
            typer.echo(f"  {stamp} {plan.stamp} (the tables of the release before revisions)")
        if dry_run:
            for step in plan.steps:
                typer.echo(f"  would apply {step.id}: {step.title}")
            return
        migrate(url, schema, lambda step: typer.echo(f"  applied {step.id}: {step.title}"))
    except StoreError as exc:
        fail(str(exc))
    typer.echo(f"{schema.what} is at {plan.target}: start the service again")
