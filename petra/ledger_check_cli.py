"""`petra ledger check-store`: replay a (restored) ledger store from its genesis through the
ledger's rules and check it against a head kept by `petra ledger audit` (`ledger.audit`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from petra.console import err, fail, lazy_progress, read_genesis, shown_store

SHOW_PROGRESS_FROM_BLOCKS = 200  # a short store prints no bar


def add_check_store_command(app: typer.Typer) -> None:
    """Add `check-store` to the ledger's command group."""
    app.command("check-store")(check_store_command)


def check_store_command(
    store: Annotated[
        str, typer.Option(help="The database's SQLAlchemy URL: the ledger store to check.")
    ],
    genesis: Annotated[
        Path, typer.Option(help="The genesis JSON file.", exists=True, dir_okay=False)
    ],
    head: Annotated[
        Path | None,
        typer.Option(
            "--head",
            help="A head kept by `petra ledger audit` (JSON of GET /v1/head) to check against.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for programs instead of text for people.")
    ] = False,
) -> None:
    """Replay every stored block from the genesis through the ledger's rules, compare each
    root and head with the stored ones, and check a kept head is a prefix of the store.
    Exit 0 clean, 1 on a finding (its evidence printed)."""
    from ledger.audit import StoreAudit, check_store
    from ledger.client import LedgerProtocolError, head_from_wire
    from ledger.store import Store
    from service.database import StoreError

    _, genesis_doc = read_genesis(genesis)
    kept = None
    if head is not None:
        try:
            kept = head_from_wire(json.loads(head.read_bytes()))
        except OSError as exc:
            fail(f"cannot read {head}: {exc.strerror}")
        except (ValueError, LedgerProtocolError) as exc:
            fail(f"{head} does not hold a signed head: {exc}")
    _refuse_missing_sqlite(store)
    try:
        opened = Store(store)
    except StoreError as exc:
        fail(str(exc))
    try:
        with lazy_progress(
            "replaying blocks", "blocks", lambda _, last: last >= SHOW_PROGRESS_FROM_BLOCKS
        ) as block_done:
            audit: StoreAudit = check_store(opened, genesis_doc, kept, block_done)
    except StoreError as exc:
        fail(str(exc))
    finally:
        opened.close()
    last = audit.head
    summary: dict[str, Any] = {
        "clean": audit.clean,
        "blocks": audit.blocks,
        "tree_size": 0 if last is None else last.header.tree_size,
        "root": None if last is None else last.header.root.hex(),
        "kept_head": None if kept is None else kept.to_wire(),
    }
    if audit.finding is not None:
        if as_json:
            typer.echo(
                json.dumps({**summary, "reason": audit.finding.reason, **audit.finding.evidence})
            )
        else:
            for name, value in audit.finding.evidence.items():
                typer.echo(f"{name}: {json.dumps(value, sort_keys=True)}")
        err.print(f"[red]not clean:[/red] {escape(audit.finding.reason)}")
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    message = (
        f"clean: {shown_store(store)} replays from the genesis to its {audit.blocks} blocks "
        f"(tree size {summary['tree_size']}, root {summary['root'] or '-'}), every head and "
        "row as stored"
    )
    if kept is not None:
        message += (
            f"; the kept head (height {kept.header.height}, tree size "
            f"{kept.header.tree_size}) is a prefix of it"
        )
    typer.echo(message)


def _refuse_missing_sqlite(store: str) -> None:
    """Opening a SQLite URL creates the file: a mistyped path would check an empty store."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(store)
    except ArgumentError:
        fail(f"{store} is not a database URL")
    name = url.database or ":memory:"
    if url.get_backend_name() == "sqlite" and name != ":memory:" and not Path(name).is_file():
        fail(f"there is no store at {name}")
