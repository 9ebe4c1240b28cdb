"""`DsoStore.exclusive`: one process at a time holds a DSO database (the node serving it, or
`petra dso admin recover`), on SQLite and PostgreSQL; and `active_admins`, which keeps the
last admin."""

from __future__ import annotations

import time

import pytest

from dso.store import DsoStore, NodeRunning, Operator


def test_one_holder_at_a_time_and_free_again_after(store_url: str) -> None:
    first, second = DsoStore(store_url), DsoStore(store_url)
    try:
        with first.exclusive(), pytest.raises(NodeRunning), second.exclusive():
            pass
        with second.exclusive():  # released
            pass
    finally:
        first.close()
        second.close()


def test_active_admins_leaves_out_other_roles_and_revoked_admins(store_url: str) -> None:
    store = DsoStore(store_url)
    try:
        with store.writing() as conn:
            for n, (name, role) in enumerate(
                [("ann", "admin"), ("bob", "admin"), ("carl", "operator")]
            ):
                operator = Operator(name, role, int(time.time()), "test", None)
                store.add_operator(conn, operator, bytes([n]) * 32)
            assert store.revoke_operator(conn, "bob")
            assert store.active_admins(conn) == ["ann"]
    finally:
        store.close()
