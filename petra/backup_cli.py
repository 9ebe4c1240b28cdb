"""`petra <role> backup`: a consistent copy of a running service's store (`service.backup`),
taken without stopping the service nor holding its store."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from petra.console import err, fail, shown_store

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

        url = _store_url(role, store, config)
        try:
            with _progress_bar(f"copying the {role} store") as progress:
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


def _store_url(role: str, store: str | None, config: Path | None) -> str:
    """The store named by --store or by the role's configuration, exactly one of them."""
    if (store is None) == (config is None):
        fail("give the store to copy: --store URL or --config FILE (one of them)")
    if store is not None:
        return store
    from petra.config import store_in_config

    assert config is not None
    try:
        return store_in_config(role, config)
    except ValueError as exc:
        fail(str(exc))


def _revision_table(role: str) -> str:
    """Where the role's store keeps its schema revision (its `StoreSchema`'s version table)."""
    import importlib

    from petra.migrate_cli import ROLE_STORES

    return str(importlib.import_module(ROLE_STORES[role].module).SCHEMA.version_table)


@contextmanager
def _progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress callback (pages copied, pages in all) that shows a bar on standard error
    once the copy has taken longer than `SHOW_PROGRESS_AFTER_S`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    started = time.monotonic()
    bar = Progress(
        "{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        "pages",
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task(description, total=None)

    def progress(copied: int, total: int) -> None:
        if not bar.live.is_started and time.monotonic() - started > SHOW_PROGRESS_AFTER_S:
            bar.start()
        bar.update(task, completed=copied, total=total)

    try:
        yield progress
    finally:
        if bar.live.is_started:  # else stopping prints an empty line
            bar.stop()


def _size(size_bytes: int) -> str:
    """`12.3 MB`: decimal units, as `ls -h --si` shows them."""
    value, unit = float(size_bytes), "bytes"
    for larger in ("kB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, larger
    return f"{size_bytes} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
