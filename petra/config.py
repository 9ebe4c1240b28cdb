"""One way to configure every role (stub: being written)."""

from __future__ import annotations

from pathlib import Path

ROLES = ("ledger", "replica", "dso", "meter", "mixer", "bidstore", "monitor")


def store_in_config(role: str, path: Path) -> str:
    """The store URL a role's TOML configuration at `path` names (relative SQLite paths made
    absolute against the file's folder, as the role itself reads them). ValueError, naming the
    file and the key, when the file cannot be read or names no store."""
    raise NotImplementedError
