"""`petra <role> backup`: a consistent copy of a running service's store (`service.backup`),
taken without stopping the service nor holding its store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from petra.config import store_given
from petra.console import fail, lazy_progress, shown_store

SHOW_PROGRESS_AFTER_S = 1.0  # a quick copy prints no bar


def add_backup_command(app: typer.Typer, role: str) -> None:
    """Add `backup` to the command group of `role` (ledger, dso, meter, monitor)."""

    def backup_command(
        to: Annotated[
            Path, typer.Option("--to", help="The file to write the copy to.", dir_okay=False)
        ],
        store: Annotated[
            str | None,
            typer.Option(help="The database's SQLAlchemy URL: the store to copy."),
        ] = None,
        config: Annotated[
            Path | None,
            typer.Option(
                "--config",
                help="The role's TOML configuration file, naming its store (instead of --store).",
                exists=True,
                dir_okay=False,
            ),
        ] = None,
        force: Annotated[bool, typer.Option(help="Overwrite --to if it exists.")] = False,
        as_json: Annotated[
            bool, typer.Option("--json", help="Print JSON for programs instead of text for people.")
        ] = False,
    ) -> None:
        """Copy the store while the service runs: SQLite's online backup, checked; PostgreSQL
        through pg_dump --format=custom. Restore: docs/operations.md."""
        from service.backup import BackupError, backup_store

        url = store_given(role, store, config, "copy")
        try:
            with lazy_progress(
                f"copying the {role} store", "pages", lambda s, _: s > SHOW_PROGRESS_AFTER_S
            ) as progress:
                copy = backup_store(
                    url,
                    to,
                    revision_table=_revision_table(role),
                    force=force,
                    progress=progress,
                )
        except BackupError as exc:
            fail(str(exc))
        if as_json:
            typer.echo(
                json.dumps(
                    {"to": str(copy.path), "size_bytes": copy.size_bytes, "revision": copy.revision}
                )
            )
            return
        revision = f", schema revision {copy.revision}" if copy.revision else ""
        typer.echo(
            f"copied the {role} store {shown_store(url)} to {copy.path} "
            f"({_size(copy.size_bytes)}{revision})"
        )

    app.command("backup")(backup_command)


def _revision_table(role: str) -> str:
    """Where the role's store keeps its schema revision (its `StoreSchema`'s version table)."""
    import importlib

    from petra.migrate_cli import ROLE_STORES

    return str(importlib.import_module(ROLE_STORES[role].module).SCHEMA.version_table)


def _size(size_bytes: int) -> str:
    """`12.3 MB`: decimal units, as `ls -h --si` shows them."""
    value, unit = float(size_bytes), "bytes"
    for larger in ("kB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, larger
    return f"{size_bytes} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
