"""`petra bench dso`: interval bills one DSO node takes in and reconciles per second, against
the ledger node's rate for one read per bill, measured in the same run; and so how many smart
meters one DSO node can bill.

One run, on a chain of one-second intervals: `petra ledger serve` in its own process over a
temporary SQLite store, and the DSO node (`DsoService` and its API under uvicorn, in a thread of
this process) over a temporary SQLite database, following it. The DSO sets a tariff and
authorizes `meters` meters, one regulation each, as operators do. Once they are in force each
meter issues once (EPA covering every billed interval, and FA, to its owner) and its owner
deposits the EPA at a deposit address of the next meter, so every bill names one issue and one
deposit that count. Then, once the billed intervals have ended, `bills` signed, correct bills
(one per meter and interval) are posted by `clients` threads in a process of their own, each
POST returning once the bill is stored and reconciled. The baseline: the same threads read from
the ledger node, for each bill, its deposit's output (`GET /v1/outputs/{tx}/{index}`), the
lightest read of the ledger a bill could cost. The DSO reconciles from its own index of the
ledger, without asking the ledger node, and stores the bills arriving together in one database
transaction: so the ratio says how a bill's whole intake (HTTP, signature, storage,
reconciliation) compares with one bare read of the ledger over HTTP. The two take turns, in
rounds, and the three processes share this machine's cores.

The client threads, for the bills and the baseline's reads alike, speak HTTP/1.1 through the
standard library's `http.client`, one keep-alive connection each (`_drive`), and check every
answer's status and body: httpx cost the clients' process about as much CPU per request as the
DSO node spends on a bill, on the cores the node runs on.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from assets import (
    Code,
    Epa,
    Fa,
    Keypair,
    Outpoint,
    close_bill,
    encode_bill,
    encode_transaction,
    sign_bill,
)
from dso.api import create_app
from dso.service import Actor, DsoError, DsoService
from dso.store import DsoStore
from ledger.client import LedgerClient, LedgerClientError, LedgerRejected, Submitted
from service import ServeLimits
from service import server as serving
from simulation.bench.ledger_http import HttpBenchError, percentile, progress_bar
from simulation.bench.load import drive, exchange, http_connection
from simulation.processes import LedgerProcess, free_port
from simulation.scenario import Scenario, pay

DEFAULT_BILLS = 2_000
DEFAULT_METERS = 200  # so 10 bills each, for 10 one-second intervals that must first end
CLIENTS = 16
INTERVAL_S = 1  # one-second intervals: the billed intervals end seconds after the issues
LEAD = 2  # regulations are for this many intervals ahead: none may land after its time
LATE_RETRIES = 3  # a regulation that lands after its time anyway is signed again, this often
BILLING_INTERVAL_S = 900  # a deployed chain's interval: meters_per_dso is bills/s times this
READS_PER_BILL = 1  # the baseline's GET /v1/outputs/{tx}/{index} per bill
EPA_W = 2_000  # issued by each meter and deposited at the next, covering every billed interval
MAX_W = 1_000_000  # each meter's MAXEPA and MAXECA
FA_ISSUED = 1_500_000  # micro-units each meter issues to its owner
PRICE_CONSUMPTION = 250_000  # micro-units per kWh
PRICE_PRODUCTION = 80_000
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 20
INDEX_TIMEOUT_S = 30
REQUEST_TIMEOUT_S = 60
ROUNDS = 5  # the baseline and the bills take turns, so that this machine's speed, which
# drifts, weighs on both alike
_BENCH = Actor("bench", "admin")

Item = TypeVar("Item")


class DsoBenchError(Exception):
    """The benchmark could not run, or a bill was refused or not reconciled."""


@dataclass(frozen=True)
class DsoBench:
    bills_per_s: float
    baseline_reads_per_s: float
    ratio: float
    p50_ms: float
    p99_ms: float
    meters_per_dso: int
    reconciled: int
    bills: int
    meters: int
    clients: int
    reads_per_bill: int
    cores: int
    store: str
    note: str


@dataclass(frozen=True)
class _Meter:
    name: str
    key: Keypair  # its registered key: signs its issue and its bills
    owner: Keypair  # the address its issue pays
    deposit: Keypair  # one of its deposit addresses


@dataclass(frozen=True)
class _Counted:
    """What one meter's bills name, as the ledger has it."""

    issue: bytes  # txid of its issue
    issue_interval: int  # the interval of the issue's block: its FA counts there only
    deposit: Outpoint  # the EPA the previous meter's owner deposited at its deposit address


def _key(role: str, n: int) -> Keypair:
    return Keypair(hashlib.sha256(f"petra-bench-dso/{role}/{n}".encode()).digest())


def _meters(count: int) -> list[_Meter]:
    return [
        _Meter(f"bench-meter-{n}", _key("meter", n), _key("owner", n), _key("deposit", n))
        for n in range(count)
    ]


def _regulate(
    service: DsoService, meters: Sequence[_Meter], clients: int, progress: Progress
) -> int:
    """Set the tariff and authorize every meter, through the DSO as operators would, from
    `clients` threads (each regulation waits for the DSO to index its block, which it polls
    for); the first interval at which all of it is in force. Each is regulated `LEAD`
    intervals ahead; one that still reaches the ledger after its time (a loaded machine, a
    profiler) is signed again for a later interval, as the DSO does for a time left to it."""
    tariff = _ahead(
        lambda at: service.set_tariff(_BENCH, PRICE_CONSUMPTION, PRICE_PRODUCTION, at), service
    )
    task = progress.add_task("authorize", total=len(meters))

    def authorize(meter: _Meter) -> int:
        answer = _ahead(
            lambda at: service.authorize_meter(
                _BENCH, meter.name, meter.key.public_key, MAX_W, MAX_W, meter.name, at
            ),
            service,
        )
        progress.advance(task)
        return int(answer["effective_from"])

    with ThreadPoolExecutor(clients, thread_name_prefix="bench-authorize") as pool:
        effective = list(pool.map(authorize, meters))
    return max(int(tariff["effective_from"]), *effective)


def _ahead(regulate: Callable[[int], dict[str, Any]], service: DsoService) -> dict[str, Any]:
    """`regulate` for `LEAD` intervals ahead of the DSO's clock, again (for the interval ahead
    then) while the ledger finds it late, `LATE_RETRIES` times at most."""
    for _ in range(LATE_RETRIES):
        try:
            return regulate(service.now() + LEAD)
        except DsoError as exc:
            if exc.code != Code.REGULATION_IN_PAST.value:
                raise
    return regulate(service.now() + LEAD)


def _issue_and_deposit(
    scenario: Scenario,
    ledger: LedgerClient,
    meters: Sequence[_Meter],
    intervals: tuple[int, int],
    progress: Progress,
) -> tuple[list[_Counted], int]:
    """Each meter issues EPA over `intervals` (first, last) and FA to its owner, who deposits
    the EPA at the next meter's deposit address; what each meter's bills name, and the height
    of the last block holding any of it."""
    task = progress.add_task("issue", total=2 * len(meters))
    epa = Epa(EPA_W, *intervals)
    issues = [
        scenario.issue(m.name, m.key, 1, [pay(epa, m.owner), pay(Fa(FA_ISSUED), m.owner)])
        for m in meters
    ]
    try:
        # Through the ledger's batch route, as a gateway would: the issues, then the deposits.
        issued = _accepted(ledger.submit_many([encode_transaction(tx) for tx in issues]))
        progress.advance(task, len(meters))
        deposits = [
            scenario.transfer(
                [Outpoint(issue.txid, 0)],
                [pay(epa, meters[(n + 1) % len(meters)].deposit)],
                meters[n].owner,
            )
            for n, issue in enumerate(issued)
        ]
        deposited = _accepted(ledger.submit_many([encode_transaction(tx) for tx in deposits]))
        progress.advance(task, len(meters))
        done = [
            (i.txid, i.height, Outpoint(d.txid, 0), d.height)
            for i, d in zip(issued, deposited, strict=True)
        ]
        times = {}
        for height in sorted({height for _, height, _, _ in done}):
            block = ledger.block(height)
            if block is None:
                raise DsoBenchError(f"the ledger node lost block {height}")
            times[height] = block[0].header.time
    except LedgerClientError as exc:
        raise DsoBenchError(f"the ledger node refused the meters' issues: {exc}") from None
    counted = [
        _Counted(
            issue=issue,
            issue_interval=(times[height] - scenario.epoch) // scenario.interval_s,
            deposit=done[(n - 1) % len(done)][2],  # the previous meter's owner deposits here
        )
        for n, (issue, height, _, _) in enumerate(done)
    ]
    return counted, max(max(issued, deposited) for _, issued, _, deposited in done)


def _accepted(outcomes: Sequence[Submitted | LedgerRejected]) -> list[Submitted]:
    """Every outcome of a batch, accepted; the first refusal raised."""
    for outcome in outcomes:
        if isinstance(outcome, LedgerRejected):
            raise outcome
    return [o for o in outcomes if isinstance(o, Submitted)]


def _sign_bills(
    scenario: Scenario,
    meters: Sequence[_Meter],
    counted: Sequence[_Counted],
    first: int,
    count: int,
    closed_height: int,
    progress: Progress,
) -> list[bytes]:
    """`count` signed, correct bills: bill i is meter i % len(meters)'s for interval
    `first` + i // len(meters), closed at `closed_height`."""
    task = progress.add_task("sign", total=count)
    raws = []
    for i in range(count):
        n, interval = i % len(meters), first + i // len(meters)
        meter, facts = meters[n], counted[n]
        bill = close_bill(
            chain=scenario.chain,
            meter=meter.name,
            interval=interval,
            closed_height=closed_height,
            interval_s=scenario.interval_s,
            measured_j=(n % 7 - 3) * 1_000_000 + interval,  # consumers and producers
            issued_epa_w=EPA_W,
            deposited_epa_w=EPA_W,
            fa_issued=FA_ISSUED if facts.issue_interval == interval else 0,
            fa_deposited=0,
            price_consumption=PRICE_CONSUMPTION,
            price_production=PRICE_PRODUCTION,
            issues=[facts.issue],
            deposits=[facts.deposit],
        )
        raws.append(encode_bill(sign_bill(bill, meter.key)))
        if i % 500 == 0:
            progress.update(task, completed=i)
    progress.update(task, completed=count)
    return raws


_sent: Synchronized[int] | None = None  # in the clients' process: items sent so far


def _count_into(sent: Synchronized[int]) -> None:
    global _sent
    _sent = sent


def _tick(_: object) -> None:
    if _sent is not None:
        with _sent.get_lock():
            _sent.value += 1


def _drive_apart(
    pool: ProcessPoolExecutor,
    sent: Synchronized[int],
    url: str,
    items: Sequence[Item],
    clients: int,
    send: Callable[[http.client.HTTPConnection, Item], str | None],
    shown: Callable[[int], None],
) -> tuple[float, list[float]]:
    """`_drive` in `pool`'s one process, as meters and their DSO never share an interpreter
    (in this one the clients' threads would take the DSO node's GIL); `shown` is told how many
    items were sent so far."""
    before = sent.value
    driven = pool.submit(_drive, url, items, clients, send)
    while not wait([driven], timeout=0.2, return_when=FIRST_COMPLETED).done:
        shown(sent.value - before)
    shown(sent.value - before)
    try:
        return driven.result()
    except BrokenProcessPool:
        raise DsoBenchError("the clients' process died") from None


def _drive(
    url: str,
    items: Sequence[Item],
    clients: int,
    send: Callable[[http.client.HTTPConnection, Item], str | None],
) -> tuple[float, list[float]]:
    """`send` every item from `clients` keep-alive connections to `url` (`load.drive`), in the
    clients' process: a top-level function, so that the pool can run it."""
    return drive(partial(http_connection, url), items, clients, send, _tick, DsoBenchError)


def _exchange(
    connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes, Any]:
    """One request on `connection`: the answer's status, body and parsed JSON (None if the
    body is not JSON)."""
    status, raw = exchange(connection, method, path, body)
    try:
        return status, raw, json.loads(raw)
    except ValueError:
        return status, raw, None


def _read_deposit(connection: http.client.HTTPConnection, deposit: tuple[str, int]) -> str | None:
    """The baseline's one read of the ledger node for a bill: its deposit's output (txid hex,
    index), which must be that output."""
    tx, index = deposit
    path = f"/v1/outputs/{tx}/{index}"
    status, raw, answer = _exchange(connection, "GET", path)
    if status != 200 or not isinstance(answer, dict):
        return f"the ledger node answered {path} with {status} {raw.decode(errors='replace')}"
    if (answer.get("tx"), answer.get("index")) != (tx, index):
        return f"the ledger node answered {path} with another output: {raw[:200]!r}"
    return None


def _post_bill(connection: http.client.HTTPConnection, raw: bytes) -> str | None:
    """Post one bill, which must be stored new and reconciled."""
    status, body, answer = _exchange(connection, "POST", "/v1/bills", raw)
    text = body.decode(errors="replace")
    if status != 201 or not isinstance(answer, dict):
        return f"the DSO node answered a bill with {status} {text}"
    if answer.get("status") != "reconciled" or answer.get("duplicate") is not False:
        return f"a bill was stored {answer.get('status')}, not reconciled and new: {text}"
    return None


@contextmanager
def _serving(app: FastAPI) -> Iterator[str]:
    """`app` on a free loopback port, in a thread of this process, served as `petra dso serve`
    serves it (`service.server`, under its default limits); its URL."""
    port = free_port()
    server = serving(app, "127.0.0.1", port, ServeLimits(), log_level="warning")
    thread = threading.Thread(target=server.run, name="bench-dso-node", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise DsoBenchError(f"the DSO node did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop.set()
        thread.join(STOP_TIMEOUT_S)


def _wait_interval(scenario: Scenario, interval: int) -> None:
    """Return once this machine's clock (the ledger's and the DSO's) is in `interval`."""
    while (int(time.time()) - scenario.epoch) // scenario.interval_s < interval:
        time.sleep(0.05)


def run_dso_bench(
    as_json: bool,
    console: Console,
    bills: int = DEFAULT_BILLS,
    meters: int = DEFAULT_METERS,
    clients: int = CLIENTS,
) -> DsoBench:
    """Run the benchmark and print its figures (rates per second, latencies in milliseconds);
    `DsoBenchError` if it cannot run or any bill is refused or not reconciled."""
    if not 1 <= meters <= bills:
        raise DsoBenchError(f"need 1 <= meters <= bills, got {meters} meters and {bills} bills")
    scenario = Scenario(
        dso=Keypair(bytes([1]) * 32),
        sequencer=Keypair(bytes([2]) * 32),
        epoch=int(time.time()) - 10,
        interval_s=INTERVAL_S,
    )
    fleet = _meters(meters)
    with tempfile.TemporaryDirectory(prefix="petra-bench-dso-") as name:
        tmp = Path(name)
        console.print("Starting `petra ledger serve` on loopback and a DSO node following it...")
        node = LedgerProcess.of_scenario(scenario, tmp, error=HttpBenchError)
        store: DsoStore | None = None
        service: DsoService | None = None
        try:
            node.wait_until_serving()
            store = DsoStore(f"sqlite:///{tmp}/dso.sqlite")
            service = DsoService(store, LedgerClient(node.url), scenario.genesis, scenario.dso)
            service.start()
            result = _measure(scenario, service, node.url, fleet, bills, clients, as_json, console)
        except HttpBenchError as exc:
            raise DsoBenchError(str(exc)) from None
        except (DsoError, LedgerClientError) as exc:
            raise DsoBenchError(f"setting up the tariff and the meters failed: {exc}") from None
        except DsoBenchError as exc:
            if node.process.poll() is not None:
                raise DsoBenchError(f"{exc}; the ledger node exited: {node.log_tail()}") from None
            raise
        finally:
            if service is not None:
                service.close()
                service.client.close()
            if store is not None:
                store.close()
            node.stop()
    _report(result, as_json, console)
    return result


def _measure(
    scenario: Scenario,
    service: DsoService,
    ledger_url: str,
    meters: Sequence[_Meter],
    bills: int,
    clients: int,
    as_json: bool,
    console: Console,
) -> DsoBench:
    first, raws, deposits = _prepare(
        scenario, service, ledger_url, meters, bills, clients, as_json, console
    )
    read_s, bill_s, latencies = _take_turns(
        scenario, service, ledger_url, first, len(meters), raws, deposits, clients, as_json, console
    )
    reconciled = len(service.store.bills(status="reconciled"))
    if reconciled != bills:
        raise DsoBenchError(f"{reconciled} of {bills} bills were reconciled")
    bills_per_s, reads_per_s = round(bills / bill_s, 1), round(bills / read_s, 1)
    ordered = sorted(latencies)
    cores = os.cpu_count() or 1
    return DsoBench(
        bills_per_s=bills_per_s,
        baseline_reads_per_s=reads_per_s,
        ratio=round(bills_per_s / reads_per_s, 3),  # of the printed rates, so it can be checked
        p50_ms=round(1000 * percentile(ordered, 0.50), 2),
        p99_ms=round(1000 * percentile(ordered, 0.99), 2),
        meters_per_dso=int(bills_per_s * BILLING_INTERVAL_S),
        reconciled=reconciled,
        bills=bills,
        meters=len(meters),
        clients=clients,
        reads_per_bill=READS_PER_BILL,
        cores=cores,
        store="sqlite",
        note=(
            f"baseline_reads_per_s: one ledger read (GET /v1/outputs) per bill, which the DSO "
            f"no longer makes (it reconciles from its own index); {clients} client threads "
            f"(http.client, one keep-alive connection each) in a process of their own, the DSO "
            f"node in this one and the ledger node in its own, on the same {cores} cores"
        ),
    )


def _prepare(
    scenario: Scenario,
    service: DsoService,
    ledger_url: str,
    meters: Sequence[_Meter],
    bills: int,
    clients: int,
    as_json: bool,
    console: Console,
) -> tuple[int, list[bytes], list[tuple[str, int]]]:
    """Regulate, issue and deposit, and sign the bills: the first interval billed, the signed
    bills, and each bill's deposit (txid hex, index) for the baseline to read."""
    per_meter = -(-bills // len(meters))
    with LedgerClient(ledger_url, timeout_s=REQUEST_TIMEOUT_S) as ledger:
        with progress_bar("authorizing meters (DSO regulations)", as_json, console) as progress:
            first = _regulate(service, meters, clients, progress)
        _wait_interval(scenario, first)
        with progress_bar("issuing and depositing", as_json, console) as progress:
            counted, closed_height = _issue_and_deposit(
                scenario, ledger, meters, (first, first + per_meter - 1), progress
            )
    if not service.follower.wait_for(closed_height, INDEX_TIMEOUT_S):
        raise DsoBenchError(f"the DSO node did not index the ledger up to block {closed_height}")
    with progress_bar("signing bills", as_json, console) as progress:
        raws = _sign_bills(scenario, meters, counted, first, bills, closed_height, progress)
    outpoints = [counted[i % len(meters)].deposit for i in range(bills)]
    return first, raws, [(outpoint.txid.hex(), outpoint.index) for outpoint in outpoints]


def _take_turns(
    scenario: Scenario,
    service: DsoService,
    ledger_url: str,
    first: int,
    meters: int,
    raws: Sequence[bytes],
    deposits: Sequence[tuple[str, int]],
    clients: int,
    as_json: bool,
    console: Console,
) -> tuple[float, float, list[float]]:
    """The baseline reads and the bills, a part of each in turn, from one process of clients;
    (seconds reading, seconds posting bills, each bill's round trip in seconds)."""
    read_s = bill_s = 0.0
    latencies: list[float] = []
    context = multiprocessing.get_context("spawn")
    sent: Synchronized[int] = context.Value("q", 0)
    with (
        ProcessPoolExecutor(1, context, initializer=_count_into, initargs=(sent,)) as pool,
        _serving(create_app(service)) as dso_url,
        progress_bar("{task.description}", as_json, console) as progress,
    ):
        reads = progress.add_task(f"baseline: ledger reads ({clients} clients)", total=len(raws))
        posts = progress.add_task(f"posting bills ({clients} clients)", total=len(raws))

        def showing(task: TaskID, done: int) -> Callable[[int], None]:
            return lambda k: progress.update(task, completed=done + k)

        rounds = min(ROUNDS, len(raws))
        for n in range(rounds):
            part = slice(n * len(raws) // rounds, (n + 1) * len(raws) // rounds)
            # bills go meter by meter, interval by interval: this part's last must have ended
            _wait_interval(scenario, first + (part.stop - 1) // meters + 1)
            seconds, _ = _drive_apart(
                pool,
                sent,
                ledger_url,
                deposits[part],
                clients,
                _read_deposit,
                showing(reads, part.start),
            )
            read_s += seconds
            seconds, round_trips = _drive_apart(
                pool, sent, dso_url, raws[part], clients, _post_bill, showing(posts, part.start)
            )
            bill_s += seconds
            latencies.extend(round_trips)
    return read_s, bill_s, latencies


def _report(result: DsoBench, as_json: bool, console: Console) -> None:
    if as_json:
        print(json.dumps(asdict(result)))
        return
    table = Table(title="petra bench dso", show_header=True, caption=result.note)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("against", justify="right")
    table.add_row(
        f"ledger reads/s, one per bill ({result.clients} clients, loopback)",
        f"{result.baseline_reads_per_s:,.0f}",
        "1.000",
    )
    table.add_row(
        f"bills taken in and reconciled/s ({result.bills:,} bills, {result.meters:,} meters)",
        f"{result.bills_per_s:,.0f}",
        f"{result.ratio:.3f}",
    )
    table.add_row("bill latency p50", f"{result.p50_ms:,.1f} ms", "")
    table.add_row("bill latency p99", f"{result.p99_ms:,.1f} ms", "")
    table.add_row(
        f"meters one DSO node bills at {BILLING_INTERVAL_S} s intervals",
        f"{result.meters_per_dso:,}",
        "",
    )
    console.print(table)
