"""A backup taken while a ledger node is under load restores to a store that replays and audits
clean against a head kept before it (issue 20); a tampered copy is found; PostgreSQL's dump
restores with pg_restore to the same ledger."""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Protocol

import httpx
import pytest

from assets import Authorization, Fa, Keypair, Outpoint, encode_transaction, txid
from assets.keyfile import dump_keys
from ledger.audit import check_store
from ledger.ledger import Ledger
from ledger.store import SCHEMA, Store
from simulation.processes import stop
from simulation.scenario import Scenario, pay

from .nodes import authorize_now, serve_ledger

PETRA = (sys.executable, "-c", "from petra.cli import main; main()")
TIMEOUT_S = 120


def petra(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PETRA, *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


class Load(threading.Thread):
    """Submits issues and the transfers spending them to a node, one after the other, until
    stopped; counts what it accepted."""

    def __init__(self, url: str, scenario: Scenario, meter: Keypair) -> None:
        super().__init__(daemon=True)
        self.url, self.scenario, self.meter = url, scenario, meter
        self.accepted = 0
        self.halt = threading.Event()

    def run(self) -> None:
        alice, bob = Keypair.generate(), Keypair.generate()
        nonce = 0
        with httpx.Client(base_url=f"{self.url}/v1", timeout=30) as client:
            while not self.halt.is_set():
                nonce += 1
                issue = self.scenario.issue("m1", self.meter, nonce, [pay(Fa(10), alice)])
                give = self.scenario.transfer([Outpoint(txid(issue), 0)], [pay(Fa(10), bob)], alice)
                for tx in (issue, give):
                    answer = client.post("/transactions", content=encode_transaction(tx))
                    assert answer.status_code == 200, answer.text
                    self.accepted += 1

    def until(self, accepted: int) -> None:
        deadline = time.monotonic() + 60
        while self.accepted < accepted:
            assert self.is_alive() and time.monotonic() < deadline, "the load stalled"
            time.sleep(0.05)


@pytest.mark.slow
def test_a_backup_under_load_restores_to_a_store_that_replays_and_audits_clean(
    tmp_path: Path,
) -> None:
    scenario = Scenario(epoch=int(time.time()) - 10, interval_s=1)
    meter = Keypair.generate()
    genesis, keys = tmp_path / "genesis.json", tmp_path / "keys.json"
    genesis.write_bytes(scenario.genesis_raw)
    keys.write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    live = tmp_path / "ledger.sqlite"
    url, node = serve_ledger(genesis, keys, f"sqlite:///{live}", tmp_path / "node.log")
    try:
        authorize_now(url, scenario, [Authorization("m1", meter.public_key, 10**6, 10**6)])
        load = Load(url, scenario, meter)
        load.start()
        load.until(40)
        kept = tmp_path / "kept-head.json"
        audited = petra("ledger", "audit", "--ledger", url, "--head", kept, "--genesis", genesis)
        assert audited.returncode == 0, audited.stderr
        load.until(load.accepted + 40)  # the head kept is now behind the node
        backup = tmp_path / "backups" / "ledger-backup.sqlite"
        backup.parent.mkdir()
        taken = petra("ledger", "backup", "--store", f"sqlite:///{live}", "--to", backup, "--json")
        assert taken.returncode == 0, taken.stderr
        copy = json.loads(taken.stdout)
        assert (copy["size_bytes"], copy["revision"]) == (backup.stat().st_size, SCHEMA.revision)
        load.until(load.accepted + 40)  # the node went on after the backup
        load.halt.set()
        load.join()
    finally:
        stop(node)
    # Restored to a new place, as an operator restores a store after losing the disk.
    restored = tmp_path / "restored" / "ledger.sqlite"
    restored.parent.mkdir()
    shutil.copy(backup, restored)
    checked = petra(
        "ledger", "check-store", "--store", f"sqlite:///{restored}", "--genesis", genesis,
        "--head", kept, "--json",
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    verdict = json.loads(checked.stdout)
    kept_head = json.loads(kept.read_text())
    assert verdict["clean"] and verdict["kept_head"]["height"] == kept_head["height"]
    final = Store(f"sqlite:///{live}").head()
    assert final is not None
    assert kept_head["tree_size"] < verdict["tree_size"] < final.header.tree_size

    tampered = tmp_path / "restored" / "tampered.sqlite"
    shutil.copy(backup, tampered)
    with sqlite3.connect(tampered) as db:
        db.execute("UPDATE transactions SET txid = zeroblob(32) WHERE seq = 7")
    found = petra("ledger", "check-store", "--store", f"sqlite:///{tampered}", "--genesis",
                  genesis, "--json")  # fmt: skip
    assert found.returncode == 1, found.stdout + found.stderr
    evidence = json.loads(found.stdout)
    assert evidence["clean"] is False and evidence["stored_row"]["seq"] == 7
    assert evidence["stored_row"]["txid"] == "00" * 32
    assert "transaction 7" in evidence["reason"]


class PostgresServer(Protocol):
    host: str
    port: int

    def fresh_database(self) -> str: ...
    def fresh_schema(self) -> str: ...


@pytest.mark.postgres
def test_a_postgresql_dump_restores_with_pg_restore_to_the_same_ledger(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    if shutil.which("pg_restore") is None:
        pytest.skip("PostgreSQL's client tools (pg_dump, pg_restore) are not installed")
    source_url = postgres_server.fresh_schema()
    scenario = Scenario()
    meter, alice = Keypair.generate(), Keypair.generate()
    ledger = Ledger(Store(source_url), scenario.genesis, scenario.sequencer)
    authorize = Authorization("m1", meter.public_key, 10**6, 10**6)
    ledger.append_block(
        [encode_transaction(scenario.regulate(0, authorize=[authorize]))], scenario.time_in(0)
    )
    for n in range(1, 4):
        issue = scenario.issue("m1", meter, n, [pay(Fa(5), alice)])
        assert ledger.append_block([encode_transaction(issue)], scenario.time_in(n)).head
    head = ledger.head
    ledger.store.close()

    dump = tmp_path / "ledger.dump"
    taken = petra("ledger", "backup", "--store", source_url, "--to", dump, "--json")
    assert taken.returncode == 0, taken.stderr
    copy = json.loads(taken.stdout)
    assert copy["size_bytes"] == dump.stat().st_size > 0
    assert copy["revision"] == SCHEMA.revision
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600

    # Restored into a new database: the dump holds the schema and its tables.
    target_url = postgres_server.fresh_database()
    database = target_url.rsplit("/", 1)[1]
    server = f"postgresql://petra@{postgres_server.host}:{postgres_server.port}"
    restore = subprocess.run(
        ["pg_restore", "--clean", "--if-exists", "--no-owner", f"--dbname={server}/{database}",
         str(dump)],
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    assert restore.returncode == 0, restore.stderr
    schema = source_url.rsplit("%3D", 1)[1]
    store = Store(f"{target_url}?options=-csearch_path%3D{schema}")
    try:
        assert store.head() == head
        audit = check_store(store, scenario.genesis, head)
    finally:
        store.close()
    assert audit.clean and audit.blocks == 4
