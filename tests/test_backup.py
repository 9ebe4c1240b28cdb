"""Backups of a running service's store (`service.backup`, `petra <role> backup`) and the check
of a restored ledger store (`ledger.audit`, `petra ledger check-store`)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import service.backup
from assets import Authorization, Fa, Keypair, Outpoint, encode_transaction, txid
from ledger.audit import check_store
from ledger.blocks import SignedHead
from ledger.ledger import Ledger
from ledger.store import Store
from petra.backup_cli import add_backup_command
from petra.ledger_check_cli import add_check_store_command
from service.backup import BackupError, backup_store, pg_dump_command
from simulation.scenario import Scenario, pay

ROWS_BEFORE = 2_000


def _petra() -> typer.Typer:
    """`petra ledger` and `petra monitor` with the commands under test, as petra.cli adds them."""
    petra, ledger, monitor = typer.Typer(), typer.Typer(), typer.Typer()
    add_backup_command(ledger, "ledger")
    add_check_store_command(ledger)
    add_backup_command(monitor, "monitor")
    petra.add_typer(ledger, name="ledger")
    petra.add_typer(monitor, name="monitor")
    return petra


app = _petra()


def _pairs_store(path: Path) -> None:
    """A WAL database (as every service's) whose tables `a` and `b` always hold as many rows:
    each write adds one to each in one transaction."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE a (n INTEGER PRIMARY KEY, pad BLOB)")
        db.execute("CREATE TABLE b (n INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE mon_alembic_version (version_num TEXT NOT NULL)")
        db.execute("INSERT INTO mon_alembic_version VALUES ('0002_agreements')")
        for n in range(ROWS_BEFORE):
            db.execute("INSERT INTO a VALUES (?, randomblob(400))", (n,))
            db.execute("INSERT INTO b VALUES (?)", (n,))
    sqlite3.connect(path).close()


def test_a_copy_taken_while_another_connection_writes_is_one_moment_and_sound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, target = tmp_path / "store.sqlite", tmp_path / "backup.sqlite"
    _pairs_store(source)
    monkeypatch.setattr(service.backup, "PAGES_PER_STEP", 8)  # many steps, writes between
    written = threading.Semaphore(0)
    stop = threading.Event()

    def writer() -> None:
        with sqlite3.connect(source, timeout=10) as db:
            n = ROWS_BEFORE
            while not stop.is_set():
                db.execute("INSERT INTO a VALUES (?, randomblob(400))", (n,))
                db.execute("INSERT INTO b VALUES (?)", (n,))
                db.commit()
                n += 1
                written.release()

    steps: list[tuple[int, int]] = []

    def progress(copied: int, total: int) -> None:
        steps.append((copied, total))
        if len(steps) <= 20:  # the writer commits between these steps, for sure
            assert written.acquire(timeout=10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        copy = backup_store(
            f"sqlite:///{source}", target, revision_table="mon_alembic_version", progress=progress
        )
    finally:
        stop.set()
        thread.join()
    assert len(steps) > 20 and steps[-1][0] == steps[-1][1]
    assert [c for c, _ in steps] == sorted(c for c, _ in steps)  # never restarted
    # Nothing left beside the copy: no temporary file, no -wal or -shm of one.
    assert sorted(p.name for p in tmp_path.iterdir() if "backup" in p.name) == ["backup.sqlite"]
    with sqlite3.connect(source) as db:
        final = db.execute("SELECT count(*) FROM a").fetchone()[0]
    with sqlite3.connect(target) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        a = db.execute("SELECT count(*) FROM a").fetchone()[0]
        b = db.execute("SELECT count(*) FROM b").fetchone()[0]
    assert a == b and ROWS_BEFORE <= a < final
    assert copy.revision == "0002_agreements" and copy.size_bytes == target.stat().st_size
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_an_existing_copy_is_kept_unless_forced(tmp_path: Path) -> None:
    source, target = tmp_path / "store.sqlite", tmp_path / "backup.sqlite"
    _pairs_store(source)
    target.write_bytes(b"last night's backup")
    with pytest.raises(BackupError, match="exists; pass --force"):
        backup_store(f"sqlite:///{source}", target)
    assert target.read_bytes() == b"last night's backup"
    run = CliRunner().invoke(
        app, ["monitor", "backup", "--store", f"sqlite:///{source}", "--to", str(target)]
    )
    assert run.exit_code == 2 and "--force" in run.output
    assert target.read_bytes() == b"last night's backup"
    forced = CliRunner().invoke(
        app,
        ["monitor", "backup", "--store", f"sqlite:///{source}", "--to", str(target), "--force"],
    )
    assert forced.exit_code == 0, forced.output
    assert "schema revision 0002_agreements" in forced.output
    with sqlite3.connect(target) as db:
        assert db.execute("SELECT count(*) FROM b").fetchone() == (ROWS_BEFORE,)


def test_a_missing_store_is_named_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo.sqlite"
    with pytest.raises(BackupError, match="there is no store at"):
        backup_store(f"sqlite:///{missing}", tmp_path / "copy.sqlite")
    assert not missing.exists() and not (tmp_path / "copy.sqlite").exists()


def test_without_pg_dump_the_command_to_run_is_given_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_dump there
    url = "postgresql+psycopg://petra:s3cret@db.example:5433/grid?options=-csearch_path%3Dledger"
    with pytest.raises(BackupError) as refused:
        backup_store(url, tmp_path / "ledger.dump")
    said = str(refused.value)
    assert said.startswith("pg_dump is not on PATH")
    assert "PGPASSWORD=... pg_dump --format=custom" in said
    assert "--schema=ledger" in said and "db.example:5433/grid" in said
    assert "s3cret" not in said


def test_pg_dump_gets_the_password_in_its_environment_only(tmp_path: Path) -> None:
    url = "postgresql+psycopg://petra:s3cret@db/grid?sslmode=require"
    command = pg_dump_command(url, tmp_path / "grid.dump")
    assert command.env == {"PGPASSWORD": "s3cret"}
    assert not any("s3cret" in word for word in command.argv)
    assert command.argv[-1] == "--dbname=postgresql://petra@db/grid?sslmode=require"
    assert not any(word.startswith("--schema") for word in command.argv)


# ---------------------------------------------------------------- checking a ledger store


@pytest.fixture
def ledger_store(tmp_path: Path) -> Iterator[tuple[Scenario, str, Path]]:
    """A SQLite ledger store of a few blocks (a regulation, issues, transfers), its genesis
    file beside it."""
    scenario = Scenario()
    meter, alice, bob = Keypair.generate(), Keypair.generate(), Keypair.generate()
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    ledger = Ledger(Store(url), scenario.genesis, scenario.sequencer)
    authorize = Authorization("m1", meter.public_key, 10**6, 10**6)
    block = [encode_transaction(scenario.regulate(0, authorize=[authorize]))]
    assert ledger.append_block(block, scenario.time_in(0)).outcomes[0].accepted
    for n in range(1, 6):
        issue = scenario.issue("m1", meter, n, [pay(Fa(100), alice)])
        give = scenario.transfer([Outpoint(txid(issue), 0)], [pay(Fa(100), bob)], alice)
        raws = [encode_transaction(issue), encode_transaction(give)]
        outcomes = ledger.append_block(raws, scenario.time_in(n)).outcomes
        assert all(o.accepted for o in outcomes), outcomes
    ledger.store.close()
    genesis = tmp_path / "genesis.json"
    genesis.write_bytes(scenario.genesis_raw)
    yield scenario, url, genesis


def test_a_sound_store_replays_clean_to_its_head(ledger_store: tuple[Scenario, str, Path]) -> None:
    _, url, genesis = ledger_store
    run = CliRunner().invoke(
        app, ["ledger", "check-store", "--store", url, "--genesis", str(genesis), "--json"]
    )
    assert run.exit_code == 0, run.output
    verdict = json.loads(run.stdout)
    assert (verdict["clean"], verdict["blocks"], verdict["tree_size"]) == (True, 6, 11)


def test_a_changed_transaction_row_is_found(ledger_store: tuple[Scenario, str, Path]) -> None:
    _, url, genesis = ledger_store
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        body = db.execute("SELECT body FROM transactions WHERE seq = 4").fetchone()[0]
        db.execute(
            "UPDATE transactions SET body = ? WHERE seq = 4", (body.replace(b"100", b"900"),)
        )
    run = CliRunner().invoke(
        app, ["ledger", "check-store", "--store", url, "--genesis", str(genesis), "--json"]
    )
    assert run.exit_code == 1, run.output
    verdict = json.loads(run.stdout)
    assert verdict["clean"] is False and verdict["blocks"] == 2
    assert verdict["stored_head"]["height"] == 3
    assert "block 3" in verdict["reason"]


def test_a_kept_head_is_checked_and_a_store_behind_it_lost_blocks(
    ledger_store: tuple[Scenario, str, Path], tmp_path: Path
) -> None:
    scenario, url, genesis = ledger_store
    store = Store(url)
    early = store.block(3)
    store.close()
    assert early is not None
    kept = tmp_path / "head.json"
    kept.write_text(json.dumps(early.to_wire()))
    args = ["ledger", "check-store", "--store", url, "--genesis", str(genesis), "--head", str(kept)]
    clean = CliRunner().invoke(app, args)
    assert clean.exit_code == 0, clean.output
    assert "the kept head (height 3, tree size 5) is a prefix" in clean.output
    # The node went on after the backup and acknowledged one block more: its head was kept.
    went_on = tmp_path / "went-on.sqlite"
    shutil.copy(url.removeprefix("sqlite:///"), went_on)
    ledger = Ledger(Store(f"sqlite:///{went_on}"), scenario.genesis, scenario.sequencer)
    ledger.append_block([encode_transaction(scenario.regulate(100))], scenario.time_in(7))
    assert ledger.head is not None
    kept.write_text(json.dumps(ledger.head.to_wire()))
    ledger.store.close()
    lost = CliRunner().invoke(app, [*args, "--json"])
    assert lost.exit_code == 1, lost.output
    verdict = json.loads(lost.stdout)
    assert "older than the kept head" in verdict["reason"]
    assert verdict["kept_head"]["height"] == 7 and verdict["store_head"]["height"] == 6


def test_a_kept_head_of_another_sequencer_is_refused(
    ledger_store: tuple[Scenario, str, Path],
) -> None:
    scenario, url, _ = ledger_store
    store = Store(url)
    try:
        head = store.head()
        assert head is not None
        forged = SignedHead.sign(head.header, Keypair.generate())
        audit = check_store(store, scenario.genesis, forged)
    finally:
        store.close()
    assert audit.finding is not None and audit.blocks == 6
    assert "not signed by a sequencer key" in audit.finding.reason
