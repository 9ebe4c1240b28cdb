"""`service.database.hold_store`: one process at a time holds a store, on SQLite and PostgreSQL;
the refusal names the holder (its command, process id, host and start time); the lock is gone
once its holder is, even killed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

import pytest
from sqlalchemy.engine import make_url

from service.database import StoreBusy, StoreError, create_store_engine, hold_store

WAIT_S = 30


class PostgresSchemas(Protocol):
    def fresh_schema(self) -> str: ...


def test_a_second_holder_is_refused_with_the_first_named(store_url: str) -> None:
    with hold_store(store_url, "ledger", "petra ledger serve"):
        with pytest.raises(StoreBusy) as refused, hold_store(store_url, "ledger", "petra x"):
            pass
        message = str(refused.value)
        assert message.startswith(f"the ledger store {make_url(store_url)} is held by ")
        assert f"`petra ledger serve` (pid {os.getpid()} on host {socket.gethostname()}" in message
        assert time.strftime("since %H:%M") in message
        assert message.endswith("; stop it first or give another --store")
    with hold_store(store_url, "ledger", "petra ledger serve"):  # released on leaving
        pass


@pytest.mark.postgres
def test_on_postgresql_a_role_holds_its_tables_and_a_schema_not_the_others(
    postgres_server: PostgresSchemas,
) -> None:
    url, other_schema = postgres_server.fresh_schema(), postgres_server.fresh_schema()
    with (
        hold_store(url, "ledger", "petra ledger serve"),
        hold_store(url, "DSO", "petra dso serve"),
        hold_store(other_schema, "ledger", "petra ledger serve"),
    ):
        pass


def test_an_engine_is_held_as_its_url_is(store_url: str) -> None:
    engine = create_store_engine(store_url)
    try:
        with (
            hold_store(engine, "meter", "petra meter run"),
            pytest.raises(StoreBusy),
            hold_store(store_url, "meter", "petra meter run"),
        ):
            pass
    finally:
        engine.dispose()


def test_an_in_memory_database_needs_no_lock() -> None:
    for url in ("sqlite://", "sqlite:///:memory:"):
        with hold_store(url, "ledger", "a"), hold_store(url, "ledger", "b"):
            pass


def test_a_sqlite_lock_file_says_who_holds_it_and_is_private(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.sqlite"
    lock = tmp_path / "ledger.sqlite-node.lock"
    with hold_store(url, "ledger", "petra ledger serve"):
        assert b'"command": "petra ledger serve"' in lock.read_bytes()
        assert lock.stat().st_mode & 0o777 == 0o600
    assert lock.read_bytes() == b""  # nobody holds it now


def test_a_folder_that_is_not_there_is_one_sentence(tmp_path: Path) -> None:
    with (
        pytest.raises(StoreError, match="cannot lock the ledger store at"),
        hold_store(f"sqlite:///{tmp_path}/absent/ledger.sqlite", "ledger", "petra"),
    ):
        pass


HOLD = """
import sys, time
from service.database import hold_store
with hold_store(sys.argv[1], "ledger", "petra ledger serve"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_holder_that_dies_leaves_the_store_free(store_url: str, signum: signal.Signals) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, store_url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with (
            pytest.raises(StoreBusy, match=f"pid {holder.pid} on host"),
            hold_store(store_url, "ledger", "petra ledger serve"),
        ):
            pass
    finally:
        holder.send_signal(signum)
        holder.wait()
    deadline = time.monotonic() + WAIT_S  # PostgreSQL ends the session as it notices
    while True:
        try:
            with hold_store(store_url, "ledger", "petra ledger serve"):
                return
        except StoreBusy:
            assert time.monotonic() < deadline, f"the store stayed held after {signum.name}"
            time.sleep(0.05)
