"""The ledger killed with SIGKILL while committing blocks loses nothing it acknowledged.

DESIGN.md section 6: "A block is committed atomically or not at all; a crash loses nothing
committed." `petra ledger replay` prints `<txid> ok|<code>` for a transaction only after the
block holding it is durable, so every line read from its stdout is an acknowledgment.

On each back-end, a store is killed during start-up, right after the first acknowledgment and
after random numbers of acknowledged blocks (then a random fraction of a block's time later,
so kills land in validation, commit and printing alike), each time resumed by the same command.
After every kill the store must hold every acknowledged transaction, whole blocks only, and
exactly the clean replay's first blocks; resumed to the end, it must equal a clean replay of
the same file into a fresh store, row for row. On PostgreSQL a killed client's last COMMIT
may still complete on the server; restarting meanwhile has a test of its own.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sysconfig
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from sqlalchemy import ColumnElement, Connection, Row, Table, inspect, select, text
from sqlalchemy.engine import make_url

from assets import Code, Issue, Transfer, decode_transaction
from ledger.blocks import BlockHeader
from ledger.merkle import DictNodes, leaf_hash, node_hash, root_from_leaf_hashes, tree_root
from ledger.store import (
    Store,
    blocks,
    merkle_nodes,
    outputs,
    spends,
    transactions,
)
from service.database import create_store_engine

from .chainfile import OK, ChainFile, write_chain_file

BLOCKS, PER_BLOCK, SEED = 200, 50, 20_260_101
MID_RUN_KILLS = 6
BLOCKS_BETWEEN_KILLS = (4, 16)  # new blocks acknowledged before each mid-run kill
REPLAY_TIMEOUT_S = 120
POLL_S = 0.01
PETRA = Path(sysconfig.get_path("scripts")) / "petra"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def chain_file(tmp_path_factory: pytest.TempPathFactory) -> ChainFile:
    """One generated chain for the session, shared by both back-ends."""
    return write_chain_file(tmp_path_factory.mktemp("chain"), BLOCKS, PER_BLOCK, SEED)


# ---------------------------------------------------------------- running the ledger


@dataclass(frozen=True)
class Kill:
    """When to SIGKILL the ledger: once `after_lines` lines are read, `delay_s` later.

    The delay is a dither, not a synchronisation: the ledger runs on meanwhile, so the kill
    lands anywhere in its work (start-up, validation, commit, printing), not always just after
    a print. Lines keep being read during the delay: each is an acknowledgment.
    """

    after_lines: int
    delay_s: float = 0.0


@dataclass(frozen=True)
class Run:
    """One `petra ledger replay`: what it acknowledged, how it ended, what it said."""

    acknowledged: list[tuple[str, str]]  # (txid hex, "ok" or a rejection code), in order
    read_at: list[float]  # seconds from start to reading each line
    returncode: int
    stderr: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    def describe(self) -> str:
        return f"exit {self.returncode}, {len(self.acknowledged)} lines; stderr:\n{self.stderr}"


def replay_command(chain_file: ChainFile, url: str) -> list[str]:
    command = [str(PETRA), "ledger", "replay", "--genesis", str(chain_file.genesis_path)]
    return [*command, "--store", url, "--no-parallel", str(chain_file.path)]


def replay(chain_file: ChainFile, url: str, log: Path, kill: Kill | None = None) -> Run:
    """Replay `chain_file` into the store at `url`, killing the ledger as `kill` says. Lines
    still in the pipe when it dies are read too: they were acknowledged before the kill."""
    command = replay_command(chain_file, url)
    # Unbuffered, so each block's lines reach the pipe as soon as the block is durable.
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    with log.open("wb") as stderr:
        # Its own process group, so a kill takes any worker processes (which hold the pipe
        # open) down with the ledger, as a crash of the machine's ledger service would.
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=environment,
            start_new_session=True,
        )

    def kill_group() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        kill_group()

    timers = [threading.Timer(REPLAY_TIMEOUT_S, on_timeout)]
    timers[0].start()

    def arm(delay_s: float) -> None:
        timers.append(threading.Timer(delay_s, kill_group))
        timers[-1].start()

    acknowledged: list[tuple[str, str]] = []
    read_at: list[float] = []
    try:
        assert process.stdout is not None
        if kill is not None and kill.after_lines == 0:
            arm(kill.delay_s)
        for line in process.stdout:
            if not line.endswith(b"\n"):
                break  # cut off by the kill, so never acknowledged
            tx_id, outcome = line.decode().split()
            acknowledged.append((tx_id, outcome))
            read_at.append(time.monotonic() - started)
            if kill is not None and len(acknowledged) == kill.after_lines:
                arm(kill.delay_s)
        returncode = process.wait()
    finally:
        for timer in timers:
            timer.cancel()
            timer.join()
        if process.poll() is None:
            kill_group()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    run = Run(acknowledged, read_at, returncode, log.read_text(errors="replace"))
    assert not timed_out.is_set(), f"replay hung for {REPLAY_TIMEOUT_S} s: {run.describe()}"
    return run


# ---------------------------------------------------------------- reading the store


@dataclass(frozen=True)
class StoredTx:
    seq: int
    txid: bytes
    height: int
    type: str
    body: bytes


@dataclass(frozen=True)
class Snapshot:
    """Every row of a store, read in one transaction, without changing the store."""

    heads: list[tuple[BlockHeader, bytes]]  # each block's header and its stored hash
    txs: list[StoredTx]  # by seq
    outputs: set[tuple[int, int]]  # (creating seq, output index)
    spends: set[tuple[int, int, int]]  # (creating seq, output index, spending seq)
    nodes: dict[tuple[int, int], bytes]  # (level, index) -> hash, leaves included

    @property
    def txids(self) -> set[str]:
        return {t.txid.hex() for t in self.txs}


def other_sessions(conn: Connection) -> list[Row[Any]]:
    """The other client sessions on this database: (pid, wait_event_type, wait_event)."""
    return list(
        conn.execute(
            text(
                "SELECT pid, wait_event_type, wait_event FROM pg_stat_activity "
                "WHERE datname = current_database() AND backend_type = 'client backend' "
                "AND pid <> pg_backend_pid()"
            )
        )
    )


def poll(url: str, done: Callable[[list[Row[Any]]], bool], what: str) -> list[Row[Any]]:
    """Poll the other sessions on the database at `url` until `done` holds of them."""
    engine = create_store_engine(url)
    deadline = time.monotonic() + REPLAY_TIMEOUT_S
    try:
        # Autocommit: the server keeps one view of pg_stat_activity per transaction.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            while not done(sessions := other_sessions(conn)):
                assert time.monotonic() < deadline, f"waited {REPLAY_TIMEOUT_S} s for {what}"
                time.sleep(POLL_S)
            return sessions
    finally:
        engine.dispose()


def wait_for_sessions_to_end(url: str) -> None:
    """PostgreSQL: wait until the killed ledger's sessions are gone. The server finishes a
    COMMIT it received before the kill, and a ledger restarted before then fails: see
    `test_restart_while_a_killed_ledgers_commit_is_in_flight`."""
    if make_url(url).get_backend_name() == "postgresql":
        poll(url, lambda sessions: not sessions, "the killed ledger's sessions to end")


def snapshot(url: str, chain: bytes) -> Snapshot:
    """The store's rows, as a crash left them: not through `Store`, which would create the
    tables a kill during start-up left missing (SQLite creates them one by one)."""
    engine = create_store_engine(url)
    try:
        present = set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")  # one view
            with conn.begin():
                return _read(conn, chain, present)
    finally:
        engine.dispose()


def _read(conn: Connection, chain: bytes, present: set[str]) -> Snapshot:
    def rows(table: Table, *order: ColumnElement[Any]) -> list[Row[Any]]:
        return list(conn.execute(select(table).order_by(*order))) if table.name in present else []

    tx_rows = rows(transactions, transactions.c.seq)
    # By mapping: a Row's tuple method `index` hides the column of that name.
    nodes = {(r.level, r._mapping["index"]): r.hash for r in rows(merkle_nodes)}
    # Leaf hashes (level 0) may be kept with the transactions rather than as nodes.
    for r in tx_rows:
        leaf = r._mapping.get("leaf_hash")
        if leaf is not None:
            assert nodes.setdefault((0, r.seq), leaf) == leaf, f"seq {r.seq}: two leaf hashes"
    return Snapshot(
        heads=[
            (BlockHeader(chain, r.height, r.prev, r.time, r.tree_size, r.root), r.hash)
            for r in rows(blocks, blocks.c.height)
        ],
        txs=[StoredTx(r.seq, r.txid, r.height, r.type, r.body) for r in tx_rows],
        outputs={(r.seq, r._mapping["index"]) for r in rows(outputs)},
        spends={(r.seq, r._mapping["index"], r.spender) for r in rows(spends)},
        nodes=nodes,
    )


# ---------------------------------------------------------------- what must hold


def perfect_nodes(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every perfect subtree's hash of the tree with leaf hashes `leaves`, level by level."""
    nodes: dict[tuple[int, int], bytes] = {}
    level, hashes = 0, leaves
    while hashes:
        nodes.update(((level, index), hash_) for index, hash_ in enumerate(hashes))
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes) - 1, 2)]
        level += 1
    return nodes


def assert_whole_blocks(snap: Snapshot, chain: bytes) -> None:
    """Blocks 1..H chained by hash; every transaction inside one of them, none outside, the
    rows each transaction adds all there and no others; roots recomputed from the bodies."""
    heights = [header.height for header, _ in snap.heads]
    assert heights == list(range(1, len(heights) + 1)), f"blocks are not contiguous: {heights}"
    previous_hash, previous_size = chain, 0
    for header, stored_hash in snap.heads:
        assert header.hash == stored_hash, f"block {header.height}: stored hash is not its own"
        assert header.prev == previous_hash, f"block {header.height}: prev is not block before"
        assert header.tree_size > previous_size, f"block {header.height} adds no transaction"
        for tx in snap.txs[previous_size : header.tree_size]:
            assert tx.height == header.height, f"seq {tx.seq} is not in block {header.height}"
        previous_hash, previous_size = stored_hash, header.tree_size
    size = snap.heads[-1][0].tree_size if snap.heads else 0
    assert [t.seq for t in snap.txs] == list(range(len(snap.txs))), "seqs have gaps"
    assert len(snap.txs) == size, f"{len(snap.txs)} transactions stored, blocks cover {size}"

    created: set[tuple[int, int]] = set()
    spent: set[tuple[int, int, int]] = set()
    seq_of = {t.txid: t.seq for t in snap.txs}
    for tx in snap.txs:
        decoded = decode_transaction(tx.body)
        assert (decoded.txid, decoded.tx.type) == (tx.txid, tx.type), f"seq {tx.seq}: bad row"
        if isinstance(decoded.tx, Transfer | Issue):
            created.update((tx.seq, n) for n in range(len(decoded.tx.outputs)))
        if isinstance(decoded.tx, Transfer):
            spent.update((seq_of[i.txid], i.index, tx.seq) for i in decoded.tx.inputs)
    assert snap.outputs == created, "outputs are not exactly those of the stored transactions"
    assert snap.spends == spent, "spends are not exactly those of the stored transactions"

    leaves = [leaf_hash(t.body) for t in snap.txs]
    nodes = perfect_nodes(leaves)
    assert snap.nodes == nodes, "Merkle nodes are not exactly those of the stored transactions"
    for header, _ in snap.heads:
        root = tree_root(DictNodes(nodes), header.tree_size)
        assert header.root == root, f"block {header.height}: root is not the bodies' root"
    if snap.heads:
        assert snap.heads[-1][0].root == root_from_leaf_hashes(leaves)


def already_judged(chain_file: ChainFile, url: str) -> int:
    """Transactions of the file a replay resuming on the store at `url` skips: those up to the
    line its last block reaches (`blocks.source_offset`)."""
    engine = create_store_engine(url)
    try:
        if "blocks" not in inspect(engine).get_table_names():
            return 0
        with engine.connect() as conn:
            last_line = conn.scalar(
                text("SELECT source_offset FROM blocks ORDER BY height DESC LIMIT 1")
            )
    finally:
        engine.dispose()
    if last_line is None:
        return 0
    lines = chain_file.path.read_bytes().splitlines()[:last_line]
    return sum(1 for line in lines if line.strip() and b"block_time" not in line)


def assert_acknowledged_kept(
    run: Run, snap: Snapshot, chain_file: ChainFile, skipped: int = 0
) -> None:
    """The run's lines are the file's transactions in order from the first it did not skip,
    each as a clean replay judges it, and the store agrees: accepted ones are there, refused
    ones are not."""
    expected = chain_file.expected[skipped : skipped + len(run.acknowledged)]
    assert [t for t, _ in run.acknowledged] == [t for t, _ in expected], "lines out of order"
    on_ledger = snap.txids
    for (tx_id, outcome), (_, clean) in zip(run.acknowledged, expected, strict=True):
        assert outcome == clean, f"{tx_id}: {outcome}, a clean replay says {clean}"
        if outcome in (OK, Code.DUPLICATE):
            assert tx_id in on_ledger, f"acknowledged {tx_id} {outcome} is not in the store"
        else:
            assert tx_id not in on_ledger, f"refused {tx_id} ({outcome}) is in the store"


def assert_prefix_of(snap: Snapshot, clean: Snapshot) -> None:
    """The crashed store holds the clean replay's first blocks, byte for byte."""
    height = len(snap.heads)
    assert snap.heads == clean.heads[:height], "blocks differ from a clean replay's"
    assert snap.txs == clean.txs[: len(snap.txs)], "transactions differ from a clean replay's"


# ---------------------------------------------------------------- the test


def fresh_store_url(store_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Another empty store on the back-end of `store_url`."""
    if make_url(store_url).get_backend_name() == "sqlite":
        return f"sqlite:///{tmp_path}/clean.sqlite"
    url: str = request.getfixturevalue("postgres_server").fresh_database()
    return url


def test_sigkill_while_committing_loses_no_acknowledged_block(
    chain_file: ChainFile, store_url: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    chain = chain_file.chain
    clean_url = fresh_store_url(store_url, request, tmp_path)
    clean_run = replay(chain_file, clean_url, tmp_path / "clean.log")
    assert clean_run.returncode == 0, clean_run.describe()
    assert clean_run.acknowledged == list(chain_file.expected), "the chain replays differently"
    clean = snapshot(clean_url, chain)
    assert_whole_blocks(clean, chain)
    assert len(clean.heads) == len(chain_file.block_sizes), "a block of the file is missing"

    rng = random.Random(f"{SEED}/{make_url(store_url).get_backend_name()}")
    block_s = (clean_run.read_at[-1] - clean_run.read_at[0]) / (len(clean.heads) - 1)
    kills = [
        Kill(0),  # at once: start-up, before any acknowledgment
        # Somewhere in start-up: its first half is the interpreter and imports, its second
        # opening (creating) the store and loading the state.
        Kill(0, rng.uniform(0.5, 1.0) * clean_run.read_at[0]),
        Kill(1),  # right after the first acknowledgment
    ]
    runs: list[Run] = []
    committed = 0  # blocks in the crashed store
    for n in range(len(kills) + MID_RUN_KILLS):
        if n >= len(kills):
            # The lines of committed blocks are skipped; then some new blocks are
            # acknowledged (maybe part of one more), then the dither.
            target = committed + rng.randint(*BLOCKS_BETWEEN_KILLS)
            lines = chain_file.lines_through(target) - already_judged(chain_file, store_url)
            lines += rng.choice([0, rng.randrange(PER_BLOCK)])
            kills.append(Kill(lines, rng.uniform(0, 2 * block_s)))
        kill = kills[n]
        skipped = already_judged(chain_file, store_url)
        run = replay(chain_file, store_url, tmp_path / f"kill-{n}.log", kill)
        assert run.killed, f"{kill}: {run.describe()}"
        assert len(run.acknowledged) >= kill.after_lines, f"{kill}: too few lines read"
        wait_for_sessions_to_end(store_url)
        crashed = snapshot(store_url, chain)
        assert_whole_blocks(crashed, chain)
        assert_acknowledged_kept(run, crashed, chain_file, skipped)
        assert_prefix_of(crashed, clean)
        assert len(crashed.heads) >= committed, f"{kill}: a committed block disappeared"
        committed = len(crashed.heads)
        runs.append(run)
        if n == 0:
            assert run.acknowledged == [], "acknowledged before its start-up was over"

    skipped = already_judged(chain_file, store_url)
    resumed = replay(chain_file, store_url, tmp_path / "resumed.log")
    assert resumed.returncode == 0, resumed.describe()
    assert len(resumed.acknowledged) == chain_file.lines - skipped, "the resumed replay stopped"
    final = snapshot(store_url, chain)
    assert_acknowledged_kept(resumed, final, chain_file, skipped)
    assert final == clean, "the crashed and resumed store differs from a clean replay's"

    crashed_store, clean_store = Store(store_url), Store(clean_url)
    try:
        crashed_head, clean_head = crashed_store.head(), clean_store.head()
    finally:
        crashed_store.close()
        clean_store.close()
    assert crashed_head is not None and clean_head is not None
    assert crashed_head.header.tree_size == clean_head.header.tree_size
    assert crashed_head.header.root == clean_head.header.root

    # Each accepted transaction is acknowledged `ok` once, or never if its block was
    # committed by a run killed before printing it; either way it is in the store.
    acknowledged_ok = Counter(
        tx_id for run in [*runs, resumed] for tx_id, outcome in run.acknowledged if outcome == OK
    )
    assert set(acknowledged_ok.values()) == {1}, "a transaction was accepted twice"
    clean_accepted = {tx_id for tx_id, outcome in clean_run.acknowledged if outcome == OK}
    assert final.txids == clean_accepted, "the accepted transactions differ from a clean replay's"
    assert set(acknowledged_ok) <= clean_accepted, "acknowledged `ok` what a clean replay refuses"


# ---------------------------------------------------------------- a commit still in flight


class PostgresDatabases(Protocol):
    def fresh_database(self) -> str: ...


IN_FLIGHT_HEIGHT = 5
HOLD_COMMIT_LOCK = 7_001  # an advisory lock the test holds to keep one COMMIT waiting


@pytest.mark.postgres
def test_restart_while_a_killed_ledgers_commit_is_in_flight(
    postgres_server: PostgresDatabases, tmp_path: Path
) -> None:
    """The server completes a COMMIT its client sent just before it was killed, however late;
    a ledger started meanwhile must still end where a clean replay ends."""
    chain_file = write_chain_file(tmp_path, 2 * IN_FLIGHT_HEIGHT, 20, SEED)
    url = postgres_server.fresh_database()
    Store(url).close()  # the schema, so that a trigger can hold one block's COMMIT
    engine = create_store_engine(url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as holder:
            holder.execute(
                text(
                    "CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    f"BEGIN IF NEW.height = {IN_FLIGHT_HEIGHT} THEN "
                    f"PERFORM pg_advisory_xact_lock({HOLD_COMMIT_LOCK}); END IF; "
                    "RETURN NULL; END $$"
                )
            )
            holder.execute(
                text(
                    "CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON blocks "
                    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_commit()"
                )
            )
            holder.execute(text(f"SELECT pg_advisory_lock({HOLD_COMMIT_LOCK})"))
            with (tmp_path / "killed.log").open("wb") as stderr:
                first = subprocess.Popen(
                    replay_command(chain_file, url),
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,
                )
            try:
                committing = poll(
                    url,
                    lambda sessions: any(r.wait_event == "advisory" for r in sessions),
                    f"block {IN_FLIGHT_HEIGHT}'s COMMIT to wait",
                )
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(first.pid, signal.SIGKILL)
                first.wait()
            (in_flight,) = [r.pid for r in committing if r.wait_event == "advisory"]
            with ThreadPoolExecutor(1) as background:
                restarted_run = background.submit(replay, chain_file, url, tmp_path / "new.log")
                try:
                    poll(
                        url,
                        lambda sessions: any(
                            r.pid != in_flight and r.wait_event_type == "Lock" for r in sessions
                        ),
                        "the restarted ledger to wait for the block in flight",
                    )
                finally:
                    holder.execute(text(f"SELECT pg_advisory_unlock({HOLD_COMMIT_LOCK})"))
                restarted = restarted_run.result()
    finally:
        engine.dispose()
    assert restarted.returncode == 0, restarted.describe()
    final = snapshot(url, chain_file.chain)
    assert_whole_blocks(final, chain_file.chain)
    # the restart waited for block IN_FLIGHT_HEIGHT's COMMIT and resumed after it
    skipped = chain_file.lines - len(restarted.acknowledged)
    assert skipped == chain_file.lines_through(IN_FLIGHT_HEIGHT), restarted.describe()
    assert_acknowledged_kept(restarted, final, chain_file, skipped)
    assert len(final.heads) == len(chain_file.block_sizes), "a block of the file is missing"
