"""`petra <role> migrate` (stub: being written)."""

from __future__ import annotations

import typer


def add_migrate_command(app: typer.Typer, role: str) -> None:
    """Add `migrate` to the command group of `role` (ledger, dso, meter, monitor)."""
