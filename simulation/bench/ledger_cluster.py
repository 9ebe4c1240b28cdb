"""`petra bench ledger --cluster`: transfers per second committed through the replicated
ordering (a NATS JetStream stream per chain, three servers on loopback, `sync_interval:
always`), for one chain and for K chains on the same cluster, against the in-process rate of
the same transfers in the same run; and the time from silencing the node that cuts the blocks
to the next block (`failover_s`).

The nodes measured are `JetStreamSequencer`s in this process, each over a temporary SQLite
store, as the in-process run's `InProcessSequencer`: the same pipeline and store, only the
ordering differs. One node per chain applies the stream: the other nodes of a deployment run
on their own machines, and on this machine's cores they would take the measured node's CPU
(each node checks and applies every transaction). The failover is measured on chain 0 with its
three nodes.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from assets import Authorization, Keypair, encode_transaction
from ledger.jetstream import JetStreamSequencer
from ledger.ledger import BlockResult, Ledger
from ledger.sequencer import SequencerUnavailable, Ticket
from ledger.store import Store
from simulation.bench.ledger import generate
from simulation.bench.ledger_http import HttpBenchError, _funding, _inprocess_rate, progress_bar
from simulation.nats import NatsCluster
from simulation.scenario import Scenario

DEFAULT_COUNT = 20_000
INTERVAL_S = 1
WAIT_S = 120.0
SUBMIT_CHUNK = 500  # transfers queued at once, as a gateway's batch would be


@dataclass(frozen=True)
class ClusterBench:
    cluster_tps: float
    chains: int
    aggregate_tps: float
    inprocess_tps: float
    ratio: float
    failover_s: float
    transactions: int
    replicas: int
    cores: int
    note: str


def _scenario(name: str, keys: Sequence[Keypair]) -> Scenario:
    return Scenario(
        dso=Keypair(bytes([1]) * 32),
        sequencer=keys[0],
        cosequencers=tuple(keys[1:]),
        name=name,
        epoch=int(time.time()) - 10,
        interval_s=INTERVAL_S,
    )


def _node(
    scenario: Scenario, key: Keypair, urls: list[str], store: Path, name: str
) -> JetStreamSequencer:
    ledger = Ledger(Store(f"sqlite:///{store}"), scenario.genesis, key)
    return JetStreamSequencer(ledger, urls, name)


def _done(ticket: Ticket) -> BlockResult:
    return ticket.block.result(WAIT_S)


def _fund(
    node: JetStreamSequencer, scenario: Scenario, meter: Keypair, issues: Sequence[bytes]
) -> None:
    """What the in-process run's `_fund` appends, through the stream: a regulation authorizing
    the bench meter (in force two intervals on), then the same issues, one by one."""
    now = scenario.genesis.interval_at(int(time.time()))
    regulation = scenario.regulate(
        now + 1, authorize=[Authorization("bench-meter", meter.public_key, 1, 1)]
    )
    if not _done(node.submit(encode_transaction(regulation))).outcomes[0].accepted:
        raise HttpBenchError("the cluster refused the funding regulation")
    while scenario.genesis.interval_at(int(time.time())) <= now + 1:
        time.sleep(0.05)
    for raw in issues:
        outcome = _done(node.submit(raw)).outcomes[0]
        if not outcome.accepted:
            raise HttpBenchError(f"the cluster refused a funding issue: {outcome}")


def _commit(node: JetStreamSequencer, raws: Sequence[bytes]) -> None:
    """Submit `raws` in chunks, keeping two chunks in flight; every one must be accepted."""
    in_flight: list[list[Ticket]] = []
    for start in range(0, len(raws), SUBMIT_CHUNK):
        in_flight.append(node.submit_many(raws[start : start + SUBMIT_CHUNK]))
        if len(in_flight) > 2:
            _check(in_flight.pop(0))
    for tickets in in_flight:
        _check(tickets)


def _check(tickets: list[Ticket]) -> None:
    for ticket in tickets:
        try:
            outcome = ticket.result(WAIT_S)
        except SequencerUnavailable as exc:
            raise HttpBenchError(f"the cluster did not take a transfer: {exc}") from None
        if not outcome.accepted:
            raise HttpBenchError(f"the cluster refused a benchmark transfer: {outcome}")


def run_cluster_bench(as_json: bool, count: int, chains: int, console: Console) -> ClusterBench:
    cores = os.cpu_count() or 1
    meter = Keypair(bytes([3]) * 32)
    with tempfile.TemporaryDirectory(prefix="petra-bench-cluster-") as name:
        tmp = Path(name)
        # chain 0 for the one-chain rate and the failover; chains 1..K for the K-chain rate
        measured = 1 + (chains if chains > 1 else 0)
        keys = [[Keypair(bytes([10 + 3 * k + n]) * 32) for n in range(3)] for k in range(measured)]
        scenarios = [_scenario(f"bench chain {k}", keys[k]) for k in range(measured)]
        funding = []
        for k, scenario in enumerate(scenarios):
            (tmp / f"funding{k}").mkdir()
            funding.append(_funding(scenario, meter, tmp / f"funding{k}"))
        console.print(
            f"Signing {count:,} transfers for each of {measured} chain(s) on {cores} cores..."
        )
        # up to 16,384 transfers, each spends a funding output of its own: one round to sign
        raws = [
            generate(s.chain, funding[k][0][:count], count, cores) for k, s in enumerate(scenarios)
        ]
        with progress_bar("committing in-process", as_json, console) as progress:
            inprocess = _inprocess_rate(scenarios[0], meter, raws[0], tmp, progress)
        console.print("Starting three NATS JetStream servers on loopback...")
        cluster = NatsCluster(tmp / "nats")
        cluster.start()
        nodes: list[JetStreamSequencer] = []
        try:
            for k, scenario in enumerate(scenarios):
                nodes.append(
                    _node(scenario, keys[k][0], cluster.urls, tmp / f"chain{k}.sqlite", f"b{k}")
                )
                _fund(nodes[k], scenario, meter, funding[k][1])
            console.print("Committing through one chain's stream...")
            start = time.perf_counter()
            _commit(nodes[0], raws[0])
            one = count / (time.perf_counter() - start)
            aggregate = one
            if chains > 1:
                console.print(f"Committing through {chains} chains' streams at once...")
                aggregate = chains * count / _at_once(nodes[1:], raws[1:])
            console.print("Silencing the node that cuts chain 0's blocks...")
            failover = _failover(scenarios[0], keys[0], cluster, nodes[0], tmp)
        finally:
            for node in nodes:
                node.close()
            cluster.stop()
    result = ClusterBench(
        cluster_tps=round(one, 1),
        chains=chains,
        aggregate_tps=round(aggregate, 1),
        inprocess_tps=round(inprocess, 1),
        ratio=round(round(one, 1) / round(inprocess, 1), 3),
        failover_s=round(failover, 2),
        transactions=count,
        replicas=3,
        cores=cores,
        note=(
            "one node per chain in this process applies its chain's stream (replicated on "
            f"three servers on loopback, synced at every write); the same {cores} cores run "
            "the servers, the nodes and the in-process baseline"
        ),
    )
    _report(result, as_json, console)
    return result


def _at_once(nodes: Sequence[JetStreamSequencer], raws: Sequence[Sequence[bytes]]) -> float:
    """Seconds to commit each of `raws` through its node, all at once."""
    failures: list[BaseException] = []

    def commit(k: int) -> None:
        try:
            _commit(nodes[k], raws[k])
        except BaseException as exc:  # raised below, in the bench's thread
            failures.append(exc)

    threads = [threading.Thread(target=commit, args=(k,)) for k in range(len(nodes))]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise failures[0]
    return elapsed


def _failover(
    scenario: Scenario,
    keys: list[Keypair],
    cluster: NatsCluster,
    first: JetStreamSequencer,
    tmp: Path,
) -> float:
    """Seconds from silencing chain 0's cutter to the next block, with its three nodes (the
    two started here first caught up with the stream, as running nodes would be)."""
    others = [
        _node(scenario, keys[n], cluster.urls, tmp / f"chain0-node{n}.sqlite", f"bench0-{n}")
        for n in (1, 2)
    ]
    try:
        nodes = [first, *others]
        deadline = time.monotonic() + WAIT_S
        while not any(n.holds_lease for n in nodes) or any(
            n.applied_through < first.applied_through for n in others
        ):
            if time.monotonic() > deadline:
                raise HttpBenchError("chain 0's nodes did not catch up, or none took the lease")
            time.sleep(0.05)
        cutter = next(n for n in nodes if n.holds_lease)
        survivor = next(n for n in nodes if n is not cutter)
        later = scenario.genesis.interval_at(int(time.time())) + 5
        newcomer = Authorization("newcomer", Keypair(bytes([99]) * 32).public_key, 1, 1)
        regulation = scenario.regulate(later, authorize=[newcomer])
        cutter.abandon()
        started = time.monotonic()
        if not _done(survivor.submit(encode_transaction(regulation))).outcomes[0].accepted:
            raise HttpBenchError("the cluster refused the failover's regulation")
        return time.monotonic() - started
    finally:
        for node in others:
            node.close()


def _report(result: ClusterBench, as_json: bool, console: Console) -> None:
    if as_json:
        print(json.dumps(asdict(result)))
        return
    table = Table(title="petra bench ledger --cluster", caption=result.note)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("against", justify="right")
    table.add_row(
        f"committed transfers/s in-process ({result.transactions:,}, durable)",
        f"{result.inprocess_tps:,.0f}",
        "1.000",
    )
    table.add_row(
        "committed transfers/s through one chain's stream",
        f"{result.cluster_tps:,.0f}",
        f"{result.ratio:.3f} (goal >= 0.3)",
    )
    table.add_row(
        f"committed transfers/s through {result.chains} chains at once",
        f"{result.aggregate_tps:,.0f}",
        "",
    )
    table.add_row("cutter silenced to the next block", f"{result.failover_s:.2f} s", "(goal < 5 s)")
    console.print(table)
