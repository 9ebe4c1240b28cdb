"""`petra bench mixer`: the wall time of one CoinShuffle mix of N peers on loopback, and the
bytes each peer posts, against a baseline measured in the same run.

One run: `petra ledger serve` in its own process over a temporary SQLite store, on a chain of
one-second intervals; a regulation authorizes one meter, which issues N equal FA outputs to N
fresh keys. For each N, `petra mixer serve` starts in its own process with `--min-peers` and
`--max-peers` N, and N `MixClient`s join at once. `seconds` is the full shuffle to a landed
transfer: from the first peer seeing the pool start until every peer has seen the transfer on
the ledger paying its output; the table also shows the time from before the first join (the
coordinator checks each join on the ledger).

The peers run in as many worker processes as the machine has cores (`WORKERS`), each with its
share of the peers as threads, started and warmed (imports, a ledger connection) before the
clock starts: real wallets are one process each on machines of their own, and 50 peers as
threads of one process would be serialised by its one interpreter lock, which no two wallets
share.

The baseline is the protocol's floor on this machine: one run is a chain of N + 3 messages
each waiting for the one before (the announcements, then N - 1 shuffles and the final list,
then the confirmations and the signatures), and each is a POST to the coordinator and a long
poll that delivers it: 2 (N + 3) sequential round trips to the same coordinator process,
timed here as that many sequential GETs. Ed25519 and sealed boxes cost microseconds against
that; what a mix spends above its floor is the coordinator's and the clients' work and the
ledger's block.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from assets import Authorization, Fa, Keypair, Outpoint, encode_transaction, txid
from ledger.client import LedgerClient, LedgerClientError
from mixer.client import MixClient, MixError, MixResult
from simulation.bench.ledger_http import progress_bar
from simulation.processes import LedgerProcess, PetraProcess, free_port
from simulation.scenario import Scenario, pay

DEFAULT_PEERS = (10, 50, 100)
DENOMINATION = Fa(1_000_000)  # micro-units: one unit of the chain's currency per peer
INTERVAL_S = 1  # one-second intervals: a regulation is in force a second or two after it lands
START_S = 10  # the pool's start deadline; it starts at once with N peers
STEP_TIMEOUT_S = 20  # the coordinator's per-step timeout: no honest peer of the bench is slow
MIX_TIMEOUT_S = 300
BENCH_METER = "bench-mixer-meter"
WORKERS = os.cpu_count() or 1  # processes the peers run in, each with its share as threads
WORKER_START_S = 60.0  # how long a worker process may take to start and warm up


class MixerBenchError(Exception):
    """The benchmark could not run: a process did not start, or a mix did not land."""


@dataclass(frozen=True)
class MixBench:
    peers: int
    seconds: float  # the pool's start to every peer seeing the landed transfer
    join_seconds: float  # before the first join to the same end
    bytes_per_peer: int
    baseline_s: float  # 2 (N + 3) sequential round trips to the coordinator

    @property
    def ratio(self) -> float:
        return self.seconds / self.baseline_s


def fund(
    ledger: LedgerClient, scenario: Scenario, meter: Keypair, nonce: int, owners: Sequence[Keypair]
) -> list[Outpoint]:
    """One issue by the authorized `meter` (its `nonce`-th) paying `DENOMINATION` to each of
    `owners`: each owner's outpoint."""
    issue = scenario.issue(BENCH_METER, meter, nonce, [pay(DENOMINATION, o) for o in owners])
    ledger.submit(encode_transaction(issue))
    return [Outpoint(txid(issue), n) for n in range(len(owners))]


def authorize_meter(ledger: LedgerClient, scenario: Scenario, meter: Keypair) -> None:
    """A regulation authorizing `meter` from the next interval; returns once it is in force."""
    effective = (int(time.time()) - scenario.epoch) // scenario.interval_s + 1
    regulation = scenario.regulate(
        effective, authorize=[Authorization(BENCH_METER, meter.public_key, 1, 1)]
    )
    ledger.submit(encode_transaction(regulation))
    while (int(time.time()) - scenario.epoch) // scenario.interval_s <= effective + 1:
        time.sleep(0.05)


class CoordinatorProcess(PetraProcess):
    """`petra mixer serve` in its own process, its standard error in `log`."""

    def __init__(
        self,
        genesis: Path,
        ledger_url: str,
        peers: int,
        log: Path,
        *,
        start_s: int = START_S,
        timeout_s: int = STEP_TIMEOUT_S,
    ) -> None:
        port = free_port()
        super().__init__(
            [
                *("mixer", "serve", "--genesis", str(genesis), "--ledger", ledger_url),
                *("--min-peers", str(peers), "--max-peers", str(peers)),
                *("--start-s", str(start_s), "--timeout-s", str(timeout_s)),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            log,
            f"http://127.0.0.1:{port}",
            probe="/v1/pools/none",
            what="coordinator",
            error=MixerBenchError,
        )


def mix_all(clients: Sequence[MixClient]) -> tuple[float, list[MixResult]]:
    """Run every client in a thread of its own, all at once; (wall seconds from before the
    first join until the last peer saw the transfer pay it, each peer's result)."""
    results: list[MixResult | None] = [None] * len(clients)
    errors: list[str] = []
    ready = threading.Barrier(len(clients) + 1)

    def mix(n: int) -> None:
        ready.wait()
        try:
            results[n] = clients[n].run()
        except MixError as exc:
            errors.append(f"peer {n}: {exc}")

    threads = [threading.Thread(target=mix, args=(n,), daemon=True) for n in range(len(clients))]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise MixerBenchError(f"{len(errors)} peers did not mix: {errors[0]}")
    return seconds, [r for r in results if r is not None]


@dataclass(frozen=True)
class Share:
    """The peers one worker process mixes: each owner's key seed and input."""

    coordinator_url: str
    ledger_url: str
    chain: bytes
    seeds: tuple[bytes, ...]
    outpoints: tuple[Outpoint, ...]


@dataclass(frozen=True)
class Mixed:
    """One peer's mix as a worker reports it: `time.perf_counter()` readings (one clock for
    every process of the machine) when its first run started and when it saw the transfer
    land, and the bytes it posted."""

    started: float
    finished: float
    bytes_sent: int


def mix_share(share: Share, ready: Any, go: Any, results: Any) -> None:
    """A worker process: make the share's clients, warm up, put None on `ready`, wait for
    `go`, mix them all at once as threads and put `(list of Mixed, error or None)` on
    `results`."""
    mixed: list[Mixed] = []
    error: str | None = None
    with LedgerClient(share.ledger_url, timeout_s=60) as ledger:
        clients = [
            MixClient(
                share.coordinator_url,
                ledger,
                share.chain,
                Keypair(seed),
                outpoint,
                DENOMINATION,
                timeout_s=MIX_TIMEOUT_S,
            )
            for seed, outpoint in zip(share.seeds, share.outpoints, strict=True)
        ]
        try:
            ledger.head()  # a connection to the ledger, open before the clock starts
            ready.put(None)
            go.wait()
            _, results_of = mix_all(clients)
            mixed = [Mixed(r.started, r.finished, r.bytes_sent) for r in results_of]
        except Exception as exc:  # reported by the parent, which would otherwise wait for it
            error = f"{type(exc).__name__}: {exc}"
        finally:
            for client in clients:
                client.close()
    results.put((mixed, error))


def mix_in_workers(shares: Sequence[Share]) -> tuple[float, list[Mixed]]:
    """Mix every share in a worker process of its own, all at once once every worker is
    warm; (wall seconds from before the first join until the last peer saw the transfer pay
    it, each peer's mix)."""
    context = multiprocessing.get_context("spawn")  # no copy of this process's threads
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    workers = [
        context.Process(target=mix_share, args=(share, ready, go, results), daemon=True)
        for share in shares
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            ready.get(timeout=WORKER_START_S)
        start = time.perf_counter()
        go.set()
        mixed: list[Mixed] = []
        for _ in workers:
            share_mixed, error = results.get(timeout=MIX_TIMEOUT_S)
            if error is not None:
                raise MixerBenchError(f"a worker's peers did not mix: {error}")
            mixed.extend(share_mixed)
    except queue.Empty:
        raise MixerBenchError("a worker process did not start or finish in time") from None
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
    return max(m.finished for m in mixed) - start, mixed


def _baseline(url: str, round_trips: int) -> float:
    """Seconds for `round_trips` sequential GETs to the coordinator on one connection."""
    with httpx.Client(base_url=url, timeout=30) as client:
        client.get("/v1/pools/baseline")  # connect outside the clock
        start = time.perf_counter()
        for _ in range(round_trips):
            client.get("/v1/pools/baseline")
        return time.perf_counter() - start


def _one_size(
    scenario: Scenario,
    ledger_url: str,
    meter: Keypair,
    nonce: int,
    peers: int,
    tmp: Path,
) -> MixBench:
    owners = [Keypair.generate() for _ in range(peers)]
    with LedgerClient(ledger_url, timeout_s=60) as ledger:
        outpoints = fund(ledger, scenario, meter, nonce, owners)
        coordinator = CoordinatorProcess(
            tmp / "genesis.json", ledger_url, peers, tmp / f"coordinator-{peers}.log"
        )
        try:
            coordinator.wait_until_serving()
            baseline = _baseline(coordinator.url, 2 * (peers + 3))
            workers = min(WORKERS, peers)
            shares = [
                Share(
                    coordinator.url,
                    ledger_url,
                    scenario.chain,
                    tuple(owner.seed for owner in owners[n::workers]),
                    tuple(outpoints[n::workers]),
                )
                for n in range(workers)
            ]
            seconds, mixed = mix_in_workers(shares)
        finally:
            coordinator.stop()
    return MixBench(
        peers=peers,
        seconds=round(max(m.finished for m in mixed) - min(m.started for m in mixed), 3),
        join_seconds=round(seconds, 3),
        bytes_per_peer=round(sum(m.bytes_sent for m in mixed) / len(mixed)),
        baseline_s=baseline,
    )


def run_mixer_bench(peers: Sequence[int], as_json: bool, console: Console) -> list[MixBench]:
    """Mix once with each number of `peers`; print a table (or, with `as_json`, one JSON object
    `{"results": [{"peers", "seconds", "bytes_per_peer"}, ...]}` on standard output)."""
    if any(not 2 <= n <= 256 for n in peers):
        raise MixerBenchError("each number of peers must be from 2 to 256")
    scenario = Scenario(epoch=int(time.time()) - 10 * INTERVAL_S, interval_s=INTERVAL_S)
    meter = Keypair.generate()
    measured: list[MixBench] = []
    with tempfile.TemporaryDirectory(prefix="petra-bench-mixer-") as name:
        tmp = Path(name)
        if not as_json:
            console.print("Starting `petra ledger serve` on loopback and funding the peers...")
        node = LedgerProcess.of_scenario(scenario, tmp, error=MixerBenchError)
        try:
            node.wait_until_serving()
            with LedgerClient(node.url, timeout_s=60) as ledger:
                authorize_meter(ledger, scenario, meter)
            with progress_bar("mixing (one pool per size)", as_json, console) as progress:
                task = progress.add_task("mix", total=len(peers))
                for nonce, n in enumerate(peers, start=1):
                    measured.append(_one_size(scenario, node.url, meter, nonce, n, tmp))
                    progress.advance(task)
        except (LedgerClientError, httpx.HTTPError) as exc:
            raise MixerBenchError(f"the ledger node failed: {exc}: {node.log_tail()}") from None
        finally:
            node.stop()
    _report(measured, as_json, console)
    return measured


def _report(measured: Sequence[MixBench], as_json: bool, console: Console) -> None:
    if as_json:
        results = [
            {"peers": m.peers, "seconds": m.seconds, "bytes_per_peer": m.bytes_per_peer}
            for m in measured
        ]
        print(json.dumps({"results": results}))
        return
    table = Table(
        title="petra bench mixer",
        caption="baseline: 2 (N + 3) sequential round trips to the coordinator, the protocol's "
        f"chain of dependent messages, measured in the same run; all on loopback, the peers "
        f"as threads of {WORKERS} worker processes (one per core)",
    )
    table.add_column("peers", justify="right")
    table.add_column("mix (start to landed)", justify="right")
    table.add_column("join to landed", justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("mix / baseline", justify="right")
    table.add_column("bytes posted per peer", justify="right")
    for m in measured:
        table.add_row(
            str(m.peers),
            f"{m.seconds:.2f} s",
            f"{m.join_seconds:.2f} s",
            f"{1000 * m.baseline_s:.1f} ms",
            f"{m.ratio:.1f}",
            f"{m.bytes_per_peer:,}",
        )
    console.print(table)
