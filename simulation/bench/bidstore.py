"""`petra bench bidstore`: orders (asks and bids) the bid store checks and accepts per second
on loopback HTTP, against the ledger node's rate for the reads that checking one order makes,
measured in the same run; and the p50 latency of an order post through a private Tor network.

One run, on a chain of one-second intervals: `petra ledger serve` in its own process over a
temporary SQLite store, and `petra bidstore serve` in its own process following it, its request
budget and per-owner cap raised so that they never refuse the bench. A meter issues, in a few
issues of up to `OUTPUTS_PER_ISSUE` outputs, an EPA to the owner of each ask and an ECA and FA
to the owner of each bid, one owner per order, all for one interval an hour ahead. Then
`clients` threads in this process each take fresh challenges (POST /v1/challenges?count=20,
as a wallet posting several orders would), sign an order over one and post it (POST
/v1/orders), which the store answers once it has checked the challenge, the signature and
every asset (one for an ask, two for a bid) against its index of the unspent outputs of the
blocks it follows (the ledger is asked only for an output the index lacks).

The baseline is the ledger reads one order's check would make without that index (GET
/v1/outputs/{tx}/{index}, 1.5 per order), made by the same threads: `ratio` above 1 is what
the index buys over asking the ledger. It is a rate of the same machine in the same run. The
two take turns, in rounds, so that this machine's drifting speed weighs on both alike; the
three processes share its cores. The client threads speak HTTP/1.1 through the standard
library's `http.client`, one keep-alive connection each (`_drive`): httpx cost the bench more
CPU per request than the store spends checking an order, on the cores the store runs on.

With Tor, a private Tor network (`TorNetwork`: 3 authorities, 3 relays, a client) is started in
a temporary directory, the store is published on it as an onion service (`publish_onion`), and
`tor_orders` more orders are posted one after another through the client's SOCKS port: the
latency is that of the order's POST alone (its challenge is taken just before), on a warm
circuit.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from assets import Authorization, Eca, Epa, Fa, Keypair, Outpoint, encode_transaction, txid
from assets.model import Output
from bidstore.orders import Order, OrderSide, encode_order, payment, sign_order
from ledger.client import LedgerClient, LedgerClientError
from simulation.bench.ledger_http import HttpBenchError, percentile, progress_bar
from simulation.bench.load import drive, exchange, http_connection
from simulation.processes import LedgerProcess, PetraProcess, free_port
from simulation.scenario import Scenario, pay

if TYPE_CHECKING:  # stem, which the Tor network needs, is imported only with --tor
    from simulation.tornet import TorNetwork

DEFAULT_ORDERS = 2_000
CLIENTS = 16
TOR_ORDERS = 20
CHALLENGES_AT_ONCE = 20  # challenges a client thread takes in one request
INTERVAL_S = 1  # one-second intervals: the meter's regulation is in force within seconds
AHEAD = 3_600  # orders are for an interval an hour ahead: no auction clears during the run
METER = "bench-bidstore-meter"
OUTPUTS_PER_ISSUE = 510  # below the codec's 512 outputs, and a whole number of ask-bid pairs
POWER_W = 1_000  # of each ask's EPA and each bid's ECA
ASK_PRICE = 200_000  # micro-units per kWh; above every bid, so nothing crosses
BID_PRICE = 100_000
MAX_W = 10**12  # the meter's MAXEPA and MAXECA
READS_PER_ASK, READS_PER_BID = 1, 2  # GET /v1/outputs/{tx}/{index} per asset of the order
REQUEST_TIMEOUT_S = 60
TOR_BOOTSTRAP_TIMEOUT_S = 180.0
TOR_REQUEST_DEADLINE_S = 60.0  # per request through Tor, SOCKS handshake included
ROUNDS = 4  # the baseline and the orders take turns
_JSON = {"content-type": "application/json"}


class BidStoreBenchError(Exception):
    """The benchmark could not run, or an order was refused."""


@dataclass(frozen=True)
class BidStoreBench:
    bids_per_s: float
    baseline_reads_per_s: float
    ratio: float
    p50_ms: float
    p99_ms: float
    tor_p50_ms: float | None
    tor_orders: int
    tor_bootstrap_s: float | None
    accepted: int
    orders: int
    asks: int
    bids: int
    clients: int
    reads_per_order: float
    cores: int
    note: str


@dataclass(frozen=True)
class _Funded:
    """An order waiting for its challenge: its owner holds `assets` on the ledger."""

    side: OrderSide
    interval: int
    assets: tuple[Outpoint, ...]
    owner: Keypair

    def signed(self, challenge: bytes) -> bytes:
        price = ASK_PRICE if self.side is OrderSide.ASK else BID_PRICE
        key = self.owner
        unsigned = Order(
            self.side,
            self.interval,
            price,
            self.assets,
            "relay",
            key.public_key,
            key.public_key,
            challenge,
        )
        return encode_order(sign_order(unsigned, key))


def _key(role: str, n: int) -> Keypair:
    return Keypair(hashlib.sha256(f"petra-bench-bidstore/{role}/{n}".encode()).digest())


def _outputs(side: OrderSide, owner: Keypair, interval: int) -> list[Output]:
    """What the meter issues to the owner of one order: an EPA for an ask, an ECA and the FA
    that pays for its whole power at its price for a bid."""
    if side is OrderSide.ASK:
        return [pay(Epa(POWER_W, interval, interval), owner)]
    funds = payment(POWER_W, INTERVAL_S, BID_PRICE)
    return [pay(Eca(POWER_W, interval, interval), owner), pay(Fa(funds), owner)]


def _fund(
    scenario: Scenario, ledger_url: str, count: int, interval: int, progress: Progress
) -> list[_Funded]:
    """Authorize the meter, then issue the assets of `count` orders (asks and bids in turn,
    one owner each) in as few issues as fit; the orders, in order."""
    meter = _key("meter", 0)
    task = progress.add_task("fund", total=count)
    sides = [OrderSide.ASK if n % 2 == 0 else OrderSide.BID for n in range(count)]
    owners = [_key("owner", n) for n in range(count)]
    funded: list[_Funded] = []
    with LedgerClient(ledger_url, timeout_s=REQUEST_TIMEOUT_S) as ledger:
        effective = int(time.time()) - scenario.epoch + 1
        regulation = scenario.regulate(
            effective, authorize=[Authorization(METER, meter.public_key, MAX_W, MAX_W)]
        )
        ledger.submit(encode_transaction(regulation))
        while int(time.time()) - scenario.epoch <= effective + 1:  # until it is in force
            time.sleep(0.05)
        n, nonce = 0, 0
        while n < count:
            batch: list[tuple[int, list[Output]]] = []
            size = 0
            while n < count and size + 2 <= OUTPUTS_PER_ISSUE:
                outputs = _outputs(sides[n], owners[n], interval)
                batch.append((n, outputs))
                size += len(outputs)
                n += 1
            nonce += 1  # one by one: each issue's nonce is above the last
            issue = scenario.issue(
                METER, meter, nonce, [output for _, outputs in batch for output in outputs]
            )
            ledger.submit(encode_transaction(issue))
            index = 0
            for m, outputs in batch:
                assets = tuple(Outpoint(txid(issue), index + k) for k in range(len(outputs)))
                funded.append(_Funded(sides[m], interval, assets, owners[m]))
                index += len(outputs)
            progress.advance(task, len(batch))
    return funded


class BidStoreProcess(PetraProcess):
    """`petra bidstore serve` in its own process, following the ledger at `ledger_url`, with
    its request budget and per-owner cap raised above anything the bench asks of it."""

    def __init__(self, genesis: Path, ledger_url: str, tmp: Path, orders: int) -> None:
        self.port = free_port()
        super().__init__(
            [
                *("bidstore", "serve", "--genesis", str(genesis), "--ledger", ledger_url),
                *("--port", str(self.port), "--max-orders", str(orders + 1)),
                *("--rate", "1000000", "--burst", str(10 * orders + 1000)),
                *("--service-rate", "1000000", "--service-burst", str(10 * orders + 1000)),
                *("--max-in-flight", "1024"),  # over the bench's most clients
            ],
            tmp / "bidstore.log",
            f"http://127.0.0.1:{self.port}",
            probe="/v1/status",
            what="bid store",
            error=BidStoreBenchError,
        )


def _read_assets(connection: http.client.HTTPConnection, order: _Funded) -> str | None:
    """The ledger reads the store's check of `order` makes: each asset's output."""
    for asset in order.assets:
        path = f"/v1/outputs/{asset.txid.hex()}/{asset.index}"
        status, body = exchange(connection, "GET", path)
        if status != 200:
            return f"the ledger node answered {path} with {status} {body.decode(errors='replace')}"
    return None


_spare = threading.local()  # each client thread's challenges not used yet


def _post_order(connection: http.client.HTTPConnection, order: _Funded) -> str | None:
    """Sign `order` over a fresh challenge (taken `CHALLENGES_AT_ONCE` at a time, as a wallet
    posting several orders would) and post it; why it failed, or None."""
    spare: list[str] = getattr(_spare, "challenges", [])
    if not spare:
        status, body = exchange(connection, "POST", f"/v1/challenges?count={CHALLENGES_AT_ONCE}")
        if status != 201:
            text = body.decode(errors="replace")
            return f"the bid store answered a challenge with {status} {text}"
        spare = _spare.challenges = list(json.loads(body)["challenges"])
    raw = order.signed(bytes.fromhex(spare.pop()))
    status, body = exchange(connection, "POST", "/v1/orders", raw)
    if status != 201:
        return f"the bid store refused an order: {status} {body.decode(errors='replace')}"
    return None


def _take_turns(
    ledger_url: str,
    store_url: str,
    orders: Sequence[_Funded],
    clients: int,
    as_json: bool,
    console: Console,
) -> tuple[float, float, list[float]]:
    """The baseline reads and the orders, a part of each in turn; (seconds reading, seconds
    posting, each order's round trip in seconds: challenge, signing and post)."""
    read_s = post_s = 0.0
    latencies: list[float] = []
    with progress_bar("{task.description}", as_json, console) as progress:
        reads = progress.add_task(f"baseline: ledger reads ({clients} clients)", total=len(orders))
        posts = progress.add_task(f"posting orders ({clients} clients)", total=len(orders))

        def ticking(task: TaskID) -> Callable[[object], None]:
            lock = threading.Lock()

            def tick(_: object) -> None:
                with lock:
                    progress.advance(task)

            return tick

        rounds = min(ROUNDS, len(orders))
        for n in range(rounds):
            part = orders[n * len(orders) // rounds : (n + 1) * len(orders) // rounds]
            seconds, _ = drive(
                partial(http_connection, ledger_url),
                part,
                clients,
                _read_assets,
                ticking(reads),
                BidStoreBenchError,
            )
            read_s += seconds
            seconds, round_trips = drive(
                partial(http_connection, store_url),
                part,
                clients,
                _post_order,
                ticking(posts),
                BidStoreBenchError,
            )
            post_s += seconds
            latencies.extend(round_trips)
    return read_s, post_s, latencies


def _tor_latencies(
    store_port: int, orders: Sequence[_Funded], tmp: Path, as_json: bool, console: Console
) -> tuple[float, list[float]]:
    """Start a private Tor network under `tmp`, publish the store on it and post `orders`
    through it one by one; (seconds to bootstrap, each order POST's round trip in seconds)."""
    from bidstore import onion
    from simulation.tornet import TorNetwork, TorNetworkError, tor_executables

    if tor_executables() is None:
        raise BidStoreBenchError("tor and tor-gencert are not installed (Debian package tor)")
    network = TorNetwork(tmp / "tornet")
    try:
        with progress_bar("{task.description}", as_json, console) as progress:
            bootstrap_s = _bootstrap(network, progress)
            task = progress.add_task("publishing the onion service", total=None)
            address, _ = onion.publish_onion(network.control_port, store_port)
            progress.update(task, total=1, completed=1)
            task = progress.add_task("posting orders through Tor", total=len(orders))
            latencies = asyncio.run(
                _post_over_tor(
                    f"http://{address}", network.socks_port, orders, lambda: progress.advance(task)
                )
            )
        return bootstrap_s, latencies
    except TorNetworkError as exc:
        raise BidStoreBenchError(f"the private Tor network failed: {exc}") from None
    except OSError as exc:  # stem's controller errors are OSErrors or theirs, below
        raise BidStoreBenchError(f"cannot publish the onion service: {exc}") from None
    finally:
        network.stop()


def _bootstrap(network: TorNetwork, progress: Progress) -> float:
    """Start `network` and wait for its client to bootstrap, showing its percentage."""
    from stem import ControllerError  # type: ignore[import-untyped]
    from stem.connection import AuthenticationFailure  # type: ignore[import-untyped]

    task = progress.add_task("bootstrapping a private Tor network (%)", total=100)
    network.start()
    outcome: list[float | BaseException] = []

    def wait() -> None:
        try:
            outcome.append(network.wait_until_bootstrapped(TOR_BOOTSTRAP_TIMEOUT_S))
        except BaseException as exc:  # handed to the main thread
            outcome.append(exc)

    waiter = threading.Thread(target=wait, name="bench-tor-bootstrap", daemon=True)
    waiter.start()
    while waiter.is_alive():
        try:
            with network.controller() as controller:
                phase = controller.get_info("status/bootstrap-phase")
            done = phase.split("PROGRESS=")[1].split()[0] if "PROGRESS=" in phase else "0"
            progress.update(task, completed=int(done))
        except (ControllerError, AuthenticationFailure, OSError, ValueError):
            pass  # its control port is not up yet
        waiter.join(1.0)
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    progress.update(task, completed=100)
    return result


async def _post_over_tor(
    url: str, socks_port: int, orders: Sequence[_Funded], tick: Callable[[], None]
) -> list[float]:
    """Post `orders` one by one to `url` through Tor's SOCKS port; each POST's seconds. Every
    request has a deadline of its own, since httpx's timeout leaves out the SOCKS handshake."""
    latencies: list[float] = []
    async with httpx.AsyncClient(
        base_url=url, proxy=f"socks5://127.0.0.1:{socks_port}", timeout=TOR_REQUEST_DEADLINE_S
    ) as client:

        async def request(method: str, path: str, content: bytes | None = None) -> httpx.Response:
            try:
                return await asyncio.wait_for(
                    client.request(method, path, content=content, headers=_JSON),
                    TOR_REQUEST_DEADLINE_S,
                )
            except TimeoutError:
                raise BidStoreBenchError(
                    f"{method} {path} through Tor took over {TOR_REQUEST_DEADLINE_S:.0f} s"
                ) from None
            except httpx.HTTPError as exc:
                raise BidStoreBenchError(f"{method} {path} through Tor failed: {exc}") from None

        await request("GET", "/v1/status")  # builds the circuit to the service, off the clock
        for order in orders:
            answer = await request("POST", "/v1/challenges")
            if answer.status_code != 201:
                raise BidStoreBenchError(f"a challenge through Tor: {answer.status_code}")
            raw = order.signed(bytes.fromhex(answer.json()["challenge"]))
            sent = time.perf_counter()
            answer = await request("POST", "/v1/orders", raw)
            latencies.append(time.perf_counter() - sent)
            if answer.status_code != 201:
                raise BidStoreBenchError(
                    f"the bid store refused an order through Tor: {answer.status_code} "
                    f"{answer.text}"
                )
            tick()
    return latencies


def run_bidstore_bench(
    as_json: bool,
    console: Console,
    orders: int = DEFAULT_ORDERS,
    clients: int = CLIENTS,
    tor: bool = True,
    tor_orders: int = TOR_ORDERS,
) -> BidStoreBench:
    """Run the benchmark and print its figures (rates per second, latencies in milliseconds);
    `BidStoreBenchError` if it cannot run or any order is refused."""
    scenario = Scenario(
        dso=Keypair(bytes([1]) * 32),
        sequencer=Keypair(bytes([2]) * 32),
        epoch=int(time.time()) - 10,
        interval_s=INTERVAL_S,
    )
    with tempfile.TemporaryDirectory(prefix="petra-bench-bidstore-") as name:
        tmp = Path(name)
        console.print("Starting `petra ledger serve` and `petra bidstore serve` on loopback...")
        node = LedgerProcess.of_scenario(scenario, tmp, error=HttpBenchError)
        store: BidStoreProcess | None = None
        try:
            node.wait_until_serving()
            store = BidStoreProcess(tmp / "genesis.json", node.url, tmp, orders + tor_orders)
            store.wait_until_serving()
            interval = (int(time.time()) - scenario.epoch) // INTERVAL_S + AHEAD
            extra = tor_orders if tor else 0
            with progress_bar("funding orders on the ledger", as_json, console) as progress:
                funded = _fund(scenario, node.url, orders + extra, interval, progress)
            read_s, post_s, latencies = _take_turns(
                node.url, store.url, funded[:orders], clients, as_json, console
            )
            tor_figures = (
                _tor_latencies(store.port, funded[orders:], tmp, as_json, console) if tor else None
            )
            accepted = _accepted(store.url, interval)
        except HttpBenchError as exc:
            raise BidStoreBenchError(str(exc)) from None
        except LedgerClientError as exc:
            raise BidStoreBenchError(f"the ledger node refused the funding: {exc}") from None
        except BidStoreBenchError as exc:
            for process, what, tail in (
                (node.process, "ledger node", node.log_tail),
                *(() if store is None else ((store.process, "bid store", store.log_tail),)),
            ):
                if process.poll() is not None:
                    raise BidStoreBenchError(f"{exc}; the {what} exited: {tail()}") from None
            raise
        finally:
            if store is not None:
                store.stop()
            node.stop()
    result = _result(funded[:orders], clients, read_s, post_s, latencies, tor_figures, accepted)
    _report(result, as_json, console)
    return result


def _accepted(store_url: str, interval: int) -> int:
    """How many orders the store's book holds for `interval`."""
    answer = httpx.get(f"{store_url}/v1/book/{interval}", timeout=REQUEST_TIMEOUT_S)
    if answer.status_code != 200:
        raise BidStoreBenchError(f"the bid store answered its book with {answer.status_code}")
    book = answer.json()
    return len(book["asks"]) + len(book["bids"])


def _result(
    orders: Sequence[_Funded],
    clients: int,
    read_s: float,
    post_s: float,
    latencies: Sequence[float],
    tor_figures: tuple[float, list[float]] | None,
    accepted: int,
) -> BidStoreBench:
    asks = sum(1 for order in orders if order.side is OrderSide.ASK)
    bids = len(orders) - asks
    reads_per_order = (asks * READS_PER_ASK + bids * READS_PER_BID) / len(orders)
    bids_per_s, reads_per_s = round(len(orders) / post_s, 1), round(len(orders) / read_s, 1)
    ordered = sorted(latencies)
    cores = os.cpu_count() or 1
    tor_p50 = tor_bootstrap = None
    tor_count = 0
    if tor_figures is not None:
        tor_bootstrap, tor_latencies = round(tor_figures[0], 1), sorted(tor_figures[1])
        tor_count = len(tor_latencies)
        tor_p50 = round(1000 * percentile(tor_latencies, 0.50), 1) if tor_latencies else None
    return BidStoreBench(
        bids_per_s=bids_per_s,
        baseline_reads_per_s=reads_per_s,
        ratio=round(bids_per_s / reads_per_s, 3),  # of the printed rates, so it can be checked
        p50_ms=round(1000 * percentile(ordered, 0.50), 2),
        p99_ms=round(1000 * percentile(ordered, 0.99), 2),
        tor_p50_ms=tor_p50,
        tor_orders=tor_count,
        tor_bootstrap_s=tor_bootstrap,
        accepted=accepted - tor_count,
        orders=len(orders),
        asks=asks,
        bids=bids,
        clients=clients,
        reads_per_order=reads_per_order,
        cores=cores,
        note=(
            f"bids_per_s counts asks and bids alike (challenge, signing, post); "
            f"baseline_reads_per_s counts one order's ledger reads ({reads_per_order:g} GETs on "
            f"average) as one; {clients} client threads in this process, the bid store and the "
            f"ledger node in their own, on the same {cores} cores"
        ),
    )


def _report(result: BidStoreBench, as_json: bool, console: Console) -> None:
    if as_json:
        print(json.dumps(asdict(result)))
        return
    table = Table(title="petra bench bidstore", show_header=True, caption=result.note)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("against", justify="right")
    table.add_row(
        f"one order's ledger reads/s ({result.clients} clients, loopback)",
        f"{result.baseline_reads_per_s:,.0f}",
        "1.000",
    )
    table.add_row(
        f"orders checked and accepted/s ({result.asks:,} asks, {result.bids:,} bids)",
        f"{result.bids_per_s:,.0f}",
        f"{result.ratio:.3f} (goal >= 1,500/s)",
    )
    table.add_row("order latency p50 (loopback)", f"{result.p50_ms:,.1f} ms", "")
    table.add_row("order latency p99 (loopback)", f"{result.p99_ms:,.1f} ms", "")
    if result.tor_p50_ms is None:
        table.add_row("order post latency p50 through Tor", "not measured", "")
    else:
        table.add_row(
            f"order post latency p50 through Tor ({result.tor_orders} orders)",
            f"{result.tor_p50_ms:,.1f} ms",
            f"bootstrap {result.tor_bootstrap_s:,.1f} s",
        )
    console.print(table)
