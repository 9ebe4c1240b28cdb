"""`petra bench ledger --http`: transfers per second submitted over HTTP by concurrent clients
on loopback, one by one and in batches, against the in-process rate of the same transfers in
the same run, with the single submission's latency.

One run: N pre-signed single-input single-output transfers (`simulation.bench.ledger.generate`)
are committed through `InProcessSequencer` into a temporary SQLite store; then `petra ledger
serve` is started as a separate process over a fresh temporary store, funded over HTTP the same
way, and `clients` keep-alive connections submit the same N transfers one per request
(`POST /v1/transactions`), each waiting for its answer; then a second fresh node takes the same
N transfers in batches of `BATCH` (`POST /v1/transactions/batch`) from `BATCH_CLIENTS`
connections. Every answer is checked: every transfer accepted.

The load generator is lean, as wrk is (`simulation.bench.load.drive_posts`): plain sockets
speaking keep-alive HTTP/1.1, one request in flight on each, all served by one thread, so that
it costs far less CPU than the node it measures on the cores they share (32 httpx clients cost
about as much as the node itself; 32 threads of plain sockets, a fifth of its rate).
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from assets import Authorization, Keypair, encode_transaction
from ledger.batch import NDJSON, encode_batch
from ledger.ledger import BlockResult, Ledger, Outcome
from ledger.sequencer import InProcessSequencer
from ledger.store import Store
from simulation.bench.ledger import Head, _fund, generate
from simulation.bench.load import drive_posts
from simulation.processes import LedgerProcess
from simulation.scenario import Scenario

DEFAULT_COUNT = 40_000
CLIENTS = 32
INTERVAL_S = 1  # one-second intervals: a regulation is in force a second or two after it lands
REQUEST_TIMEOUT_S = 60
# Batches in flight times their size stays below half the bench's chains (`CHAINS`), so that a
# transfer's predecessor in its chain is durable before it is sent; enough of them in flight to
# keep every stage of the node's pipeline busy, as the in-process run's queue does.
BATCH = 500
BATCH_CLIENTS = 16


class HttpBenchError(Exception):
    """The benchmark could not run: the node did not start, or refused a transfer."""


@dataclass(frozen=True)
class HttpBench:
    http_tps: float
    inprocess_tps: float
    ratio: float
    batch_tps: float
    batch_ratio: float
    p50_ms: float
    p99_ms: float
    clients: int
    batch_size: int
    batch_clients: int
    transactions: int
    cores: int
    store: str
    note: str


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def progress_bar(label: str, as_json: bool, console: Console) -> Progress:
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=as_json,
    )


def _inprocess_rate(
    scenario: Scenario, meter: Keypair, raws: Sequence[bytes], tmp: Path, progress: Progress
) -> float:
    """Transfers per second committed through `InProcessSequencer` into a fresh SQLite store
    (funded as `_fund` does): from the first submission until the last block is durable."""
    ledger = Ledger(
        Store(f"sqlite:///{tmp}/inprocess.sqlite"), scenario.genesis, scenario.sequencer
    )
    _fund(ledger, scenario, meter)
    first_size = ledger.size
    committed = [0]
    refused: list[Outcome] = []

    def record(result: BlockResult) -> None:
        if result.head is not None:
            committed[0] = result.head.header.tree_size - first_size
        refused.extend(o for o in result.outcomes if not o.accepted)

    gc.collect()
    gc.freeze()  # as run_ledger_bench: what is alive now lives to the end
    try:
        sequencer = InProcessSequencer(ledger, on_block=record)
        task = progress.add_task("in-process", total=len(raws))
        start = time.perf_counter()
        for n, raw in enumerate(raws):
            sequencer.submit(raw)
            if n % 2_000 == 0:
                progress.update(task, completed=committed[0])
        sequencer.close()
        elapsed = time.perf_counter() - start
        progress.update(task, completed=committed[0])
    finally:
        gc.unfreeze()
        ledger.store.close()
    if refused:
        raise HttpBenchError(f"{len(refused)} in-process transfers were rejected: {refused[0]}")
    return len(raws) / elapsed


def _submit_one(client: httpx.Client, raw: bytes, what: str) -> None:
    answer = client.post("/v1/transactions", content=raw)
    if answer.status_code != 200:
        raise HttpBenchError(f"the node refused {what}: {answer.status_code} {answer.text}")


def _fund_over_http(url: str, scenario: Scenario, meter: Keypair, issues: Sequence[bytes]) -> None:
    """What `_fund` appends, submitted over HTTP: a regulation authorizing the bench meter,
    in force from the next interval but one (the node's blocks carry the wall clock), then
    the same `issues`, so that the chains start at the same outputs as in-process."""
    now = (int(time.time()) - scenario.epoch) // scenario.interval_s
    regulation = scenario.regulate(
        now + 1, authorize=[Authorization("bench-meter", meter.public_key, 1, 1)]
    )
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        _submit_one(client, encode_transaction(regulation), "the funding regulation")
        while (int(time.time()) - scenario.epoch) // scenario.interval_s <= now + 1:
            time.sleep(0.05)
        for n, raw in enumerate(issues):  # one by one: each issue's nonce follows the last
            _submit_one(client, raw, f"funding issue {n + 1}")


def _funding(scenario: Scenario, meter: Keypair, tmp: Path) -> tuple[list[Head], list[bytes]]:
    """The chains' first heads and the issues `_fund` appends, from a throw-away ledger: both
    are a function of the genesis and the meter alone."""
    ledger = Ledger(Store(f"sqlite:///{tmp}/funding.sqlite"), scenario.genesis, scenario.sequencer)
    try:
        heads = _fund(ledger, scenario, meter)
        head = ledger.head
        assert head is not None
        return heads, [t.body for t in ledger.store.block_transactions(head)]
    finally:
        ledger.store.close()


def _accepted(raw: bytes, status: int, body: bytes) -> str | None:
    """Why a single post's answer is not an acceptance, or None."""
    if status != 200 or not isinstance(orjson.loads(body).get("seq"), int):
        return f"the node refused a benchmark transfer: {status} {body.decode()}"
    return None


def _all_accepted(raws: Sequence[bytes], status: int, body: bytes) -> str | None:
    """Why a batch's answer does not accept every transfer of it, or None."""
    if status != 200:
        return f"the node refused a benchmark batch: {status} {body.decode()}"
    results = orjson.loads(body)["results"]
    refused = [r for r in results if not isinstance(r.get("seq"), int)]
    if len(results) != len(raws) or refused:
        return f"the node did not accept every transfer of a batch: {refused[:1] or results[:1]}"
    return None


def _serve_and_post(
    scenario: Scenario,
    meter: Keypair,
    issues: Sequence[bytes],
    folder: Path,
    post: Callable[[str], tuple[float, list[float]]],
) -> tuple[float, list[float]]:
    """Start `petra ledger serve` over a fresh store in `folder`, fund it over HTTP, then
    `post(url)`; the node is stopped after."""
    folder.mkdir()
    node = LedgerProcess.of_scenario(scenario, folder, error=HttpBenchError)
    try:
        node.wait_until_serving()
        _fund_over_http(node.url, scenario, meter, issues)
        return post(node.url)
    except HttpBenchError as exc:
        if node.process.poll() is not None:
            raise HttpBenchError(f"{exc}; the node exited: {node.log_tail()}") from None
        raise
    finally:
        node.stop()


def run_http_bench(
    as_json: bool, count: int, console: Console, clients: int = CLIENTS
) -> HttpBench:
    cores = os.cpu_count() or 1
    scenario = Scenario(
        dso=Keypair(bytes([1]) * 32),
        sequencer=Keypair(bytes([2]) * 32),
        epoch=int(time.time()) - 10,
        interval_s=INTERVAL_S,
    )
    meter = Keypair(bytes([3]) * 32)
    with tempfile.TemporaryDirectory(prefix="petra-bench-http-") as name:
        tmp = Path(name)
        heads, issues = _funding(scenario, meter, tmp)
        console.print(f"Signing {count:,} single-input single-output transfers on {cores} cores...")
        raws = generate(scenario.chain, heads, count, cores)
        with progress_bar("committing in-process", as_json, console) as progress:
            inprocess = _inprocess_rate(scenario, meter, raws, tmp, progress)
        console.print("Starting `petra ledger serve` on loopback and funding it over HTTP...")
        with progress_bar(f"submitting over HTTP ({clients} clients)", as_json, console) as bar:
            task = bar.add_task("http", total=len(raws))
            elapsed, latencies = _serve_and_post(
                scenario,
                meter,
                issues,
                tmp / "single",
                lambda url: drive_posts(
                    url,
                    "/v1/transactions",
                    "application/json",
                    raws,
                    clients,
                    bytes,
                    _accepted,
                    lambda _: bar.advance(task),
                    HttpBenchError,
                ),
            )
        batches = [raws[n : n + BATCH] for n in range(0, len(raws), BATCH)]
        console.print("Starting a fresh node for the batched submissions...")
        with progress_bar(f"submitting batches of {BATCH}", as_json, console) as bar:
            task = bar.add_task("batch", total=len(raws))
            batch_elapsed, _ = _serve_and_post(
                scenario,
                meter,
                issues,
                tmp / "batch",
                lambda url: drive_posts(
                    url,
                    "/v1/transactions/batch",
                    NDJSON,
                    batches,
                    BATCH_CLIENTS,
                    encode_batch,
                    _all_accepted,
                    lambda batch: bar.advance(task, len(batch)),
                    HttpBenchError,
                ),
            )
    http_tps, inprocess_tps = round(len(raws) / elapsed, 1), round(inprocess, 1)
    batch_tps = round(len(raws) / batch_elapsed, 1)
    ordered = sorted(latencies)
    result = HttpBench(
        http_tps=http_tps,
        inprocess_tps=inprocess_tps,
        # of the printed rates, so that they can be checked
        ratio=round(http_tps / inprocess_tps, 3),
        batch_tps=batch_tps,
        batch_ratio=round(batch_tps / inprocess_tps, 3),
        p50_ms=round(1000 * percentile(ordered, 0.50), 2),
        p99_ms=round(1000 * percentile(ordered, 0.99), 2),
        clients=clients,
        transactions=len(raws),
        batch_size=BATCH,
        batch_clients=BATCH_CLIENTS,
        cores=cores,
        store="sqlite",
        note=(
            f"a lean load generator (plain sockets, keep-alive HTTP/1.1, one request in flight "
            f"per connection, one thread for all): {clients} connections posting one transfer "
            f"each, then {BATCH_CLIENTS} posting batches of {BATCH} to a fresh node; it shares "
            f"the same {cores} cores with the node's process"
        ),
    )
    _report(result, as_json, console)
    return result


def _report(result: HttpBench, as_json: bool, console: Console) -> None:
    if as_json:
        print(json.dumps(asdict(result)))
        return
    table = Table(title="petra bench ledger --http", show_header=True, caption=result.note)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("against", justify="right")
    table.add_row(
        f"committed transfers/s in-process ({result.transactions:,}, durable)",
        f"{result.inprocess_tps:,.0f}",
        "1.000",
    )
    table.add_row(
        f"committed transfers/s over HTTP ({result.clients} clients, one per request)",
        f"{result.http_tps:,.0f}",
        f"{result.ratio:.3f} (goal >= 0.3)",
    )
    table.add_row(
        f"committed transfers/s over HTTP ({result.batch_clients} clients, batches of "
        f"{result.batch_size})",
        f"{result.batch_tps:,.0f}",
        f"{result.batch_ratio:.3f} (goal >= 0.8)",
    )
    table.add_row("submission latency p50", f"{result.p50_ms:,.1f} ms", "")
    table.add_row("submission latency p99", f"{result.p99_ms:,.1f} ms", "")
    console.print(table)
