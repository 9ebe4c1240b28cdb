"""`petra <role> backup` (stub: being written)."""

from __future__ import annotations

import typer


def add_backup_command(app: typer.Typer, role: str) -> None:
    """Add `backup` to the command group of `role` (ledger, dso, meter, monitor)."""
