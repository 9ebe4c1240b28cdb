"""`petra`: the command line of every PETra role. Errors are one sentence, never a traceback."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from assets import Genesis, Keypair, chain_id
from assets.codec import genesis_to_wire
from assets.keyfile import dump_keys
from petra.backup_cli import add_backup_command
from petra.bidstore_cli import bidstore_app
from petra.community_bench_cli import bench_community_command
from petra.community_cli import community_app
from petra.config import ConfiguredCommand, chosen, config_option
from petra.console import (
    LogFormat,
    LogLevel,
    MetricsHost,
    MetricsPort,
    PassphraseFile,
    configure_logging,
    err,
    fail,
    hold_store_for,
    read_genesis,
    read_keys,
    read_passphrase,
    serve,
    serve_limits,
    serving_metrics,
    shown_store,
    warn,
    write_private,
)
from petra.dso_cli import dso_app
from petra.ledger_check_cli import add_check_store_command
from petra.ledger_cluster_cli import cluster_app
from petra.meter_bench_cli import bench_meter_command
from petra.meter_cli import meter_app
from petra.migrate_cli import add_migrate_command
from petra.mixer_cli import mixer_app
from petra.monitor_cli import monitor_app
from petra.sim_bench_cli import bench_sim_command
from petra.sim_cli import sim_app
from petra.tor_cli import tor_app
from petra.vocabulary import PetraGroup, ledger_option, print_version
from petra.wallet_cli import wallet_app

if TYPE_CHECKING:
    from ledger import LedgerNode, SignedHead

log = logging.getLogger("petra")
app = typer.Typer(
    cls=PetraGroup,
    help="PETra: private peer-to-peer energy trading on a permissioned ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def petra_callback(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=print_version,
            is_eager=True,
            help="Print PETra's version and exit.",
        ),
    ] = False,
) -> None:
    """PETra: private peer-to-peer energy trading on a permissioned ledger."""


ledger_app = typer.Typer(
    help="The ledger: genesis, conformance replay, demo.", no_args_is_help=True
)
bench_app = typer.Typer(
    help="Benchmarks, printed as ratios against baselines of the same run.", no_args_is_help=True
)
app.add_typer(ledger_app, name="ledger")
ledger_app.add_typer(cluster_app, name="cluster")
app.add_typer(dso_app, name="dso")
app.add_typer(meter_app, name="meter")
app.add_typer(mixer_app, name="mixer")
app.add_typer(tor_app, name="tor")
app.add_typer(bidstore_app, name="bidstore")
app.add_typer(wallet_app, name="wallet")
app.add_typer(monitor_app, name="monitor")
app.add_typer(community_app, name="community")
app.add_typer(sim_app, name="sim")
app.add_typer(bench_app, name="bench")
bench_app.command("sim")(bench_sim_command)
bench_app.command("meter")(bench_meter_command)
# Every role with a database of its own upgrades it and backs it up the same way.
for _role_app, _role in (
    (ledger_app, "ledger"),
    (dso_app, "dso"),
    (meter_app, "meter"),
    (monitor_app, "monitor"),
):
    add_migrate_command(_role_app, _role)
    add_backup_command(_role_app, _role)
add_check_store_command(ledger_app)


@bench_app.callback()
def bench_callback() -> None:
    """Benchmarks, printed as ratios against baselines of the same run."""
    # The services a bench starts log warnings only, unless told otherwise: a log line per
    # request would be part of what the bench measures.
    os.environ.setdefault("PETRA_LOG_LEVEL", "warning")


@ledger_app.command("genesis")
def genesis_command(
    out: Annotated[Path, typer.Option(help="Where to write the genesis JSON.")] = Path(
        "genesis.json"
    ),
    keys_out: Annotated[
        Path, typer.Option("--keys", help="The key file to write: the DSO and sequencer keys.")
    ] = Path("keys.json"),
    name: Annotated[str, typer.Option(help="The community's name.")] = "PETra community",
    interval_s: Annotated[int, typer.Option(min=1, help="Interval length in seconds.")] = 900,
    epoch: Annotated[
        int | None,
        typer.Option(
            help="Unix time interval 0 starts at (default: the current interval's start)."
        ),
    ] = None,
    currency: Annotated[
        str, typer.Option(help="The currency FA amounts are micro-units of.")
    ] = "EUR",
    dso_keys: Annotated[int, typer.Option(min=1, max=64, help="How many DSO keys.")] = 1,
    sequencer_keys: Annotated[
        int, typer.Option(min=1, max=64, help="How many sequencer keys.")
    ] = 1,
    passphrase_file: PassphraseFile = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing files.")] = False,
) -> None:
    """Write a new genesis with fresh DSO and sequencer keys (sealed if a passphrase is given)."""
    for path in (out, keys_out):
        if path.exists() and not force:
            fail(f"{path} exists; pass --force to overwrite it")
        if not path.parent.is_dir():
            fail(f"cannot write {path}: the folder {path.parent} does not exist")
    keys = {f"dso-{n}": Keypair.generate() for n in range(dso_keys)}
    keys.update({f"sequencer-{n}": Keypair.generate() for n in range(sequencer_keys)})
    start = epoch if epoch is not None else int(time.time()) // interval_s * interval_s
    genesis = Genesis(
        name=name,
        interval_s=interval_s,
        epoch=start,
        currency=currency,
        dso_keys=tuple(k.public_key for n, k in keys.items() if n.startswith("dso-")),
        sequencer_keys=tuple(k.public_key for n, k in keys.items() if n.startswith("sequencer-")),
    )
    passphrase = read_passphrase(passphrase_file)
    if passphrase is None:
        warn(f"no passphrase given: {keys_out} holds the keys in clear")
    elif not passphrase:
        warn("the passphrase is empty: anyone can open the key file")
    try:
        write_private(keys_out, dump_keys(keys, passphrase))
        out.write_text(json.dumps(genesis_to_wire(genesis), indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        fail(f"cannot write {exc.filename}: {exc.strerror}")
    typer.echo(f"genesis {chain_id(genesis).hex()} written to {out}; keys in {keys_out}")


def _lines(path: Path) -> Iterator[bytes]:
    if str(path) == "-":
        yield from sys.stdin.buffer
        return
    with path.open("rb") as f:
        yield from f


@ledger_app.command("replay")
def replay_command(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help='JSON lines: transactions and {"block_time": N} (- for stdin).')
    ],
    genesis: Annotated[
        Path, typer.Option(help="The genesis JSON file.", exists=True, dir_okay=False)
    ],
    store: Annotated[
        str | None,
        typer.Option(
            help="The database's SQLAlchemy URL to replay into (default: a temporary SQLite file)."
        ),
    ] = None,
    keys: Annotated[
        Path | None, typer.Option(help="The key file holding a sequencer key, to sign heads.")
    ] = None,
    passphrase_file: PassphraseFile = None,
    parallel: Annotated[bool, typer.Option(help="Check signatures on every core.")] = True,
) -> None:
    """Replay transactions in order; print `<txid> ok` or `<txid> <code>` per transaction."""
    from ledger import open_ledger
    from ledger.replay import outcome_line, replay
    from service.database import StoreError

    genesis_raw, genesis_doc = read_genesis(genesis)
    sequencer = None
    if keys is not None:
        found = [
            k
            for k in read_keys(keys, passphrase_file).values()
            if k.public_key in genesis_doc.sequencer_keys
        ]
        if not found:
            fail(f"{keys} holds none of the genesis's sequencer keys")
        sequencer = found[0]
    if str(file) != "-" and not file.is_file():
        fail(f"cannot read {file}: no such file")
    with tempfile.TemporaryDirectory(prefix="petra-replay-") as tmp:
        url = store or f"sqlite:///{tmp}/ledger.sqlite"
        if store is not None:  # held first; a temporary store is this command's alone
            hold_store_for(ctx, store, "ledger", "petra ledger replay")
        try:
            ledger = open_ledger(url, genesis_raw, sequencer)
            out = sys.stdout
            summary = replay(
                ledger,
                _lines(file),
                lambda outcome: print(outcome_line(outcome), file=out),
                warn,
                workers=None if parallel else 1,
                block_done=out.flush,  # each block's lines leave as soon as it is durable
            )
        except StoreError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"cannot read {file}: {exc.strerror}")
        head = ledger.head
        root = head.header.root.hex() if head else "-"
        if summary.resumed_after_line is not None:
            err.print(
                f"resumed after line {summary.resumed_after_line}: the store already held its "
                f"{summary.skipped} transactions, not judged again",
                soft_wrap=True,
            )
        err.print(
            f"{summary.accepted} accepted, {summary.rejected} rejected, {summary.blocks} blocks; "
            f"tree size {ledger.size}, root {root}",
            soft_wrap=True,
        )
        ledger.store.close()


@ledger_app.command("demo")
def demo_command() -> None:
    """Walk through a trade on an in-process ledger, explaining each step."""
    from simulation import demo

    try:
        demo.run_demo(Console())
    except demo.DemoFailed as exc:
        fail(f"the demo went wrong: {exc}")


@ledger_app.command("serve", cls=ConfiguredCommand)
def serve_command(
    ctx: typer.Context,
    genesis: Annotated[
        list[Path],
        typer.Option(
            help="The genesis JSON file of the chain to follow; repeat it to follow several "
            "chains in this process (each then served under /chains/<chain id>/v1).",
            exists=True,
            dir_okay=False,
        ),
    ],
    keys: Annotated[
        Path,
        typer.Option(help="The key file holding one of the sequencer keys of each genesis."),
    ],
    config: Annotated[Path | None, config_option("ledger")] = None,
    store: Annotated[
        list[str] | None,
        typer.Option(
            help="The database's SQLAlchemy URL: the ledger's store (default "
            "sqlite:///petra-ledger.sqlite); one per --genesis, in the same order.",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="The address to listen on (loopback unless told).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="The port to listen on.")] = 7420,
    passphrase_file: PassphraseFile = None,
    log_level: LogLevel = "info",
    log_format: LogFormat = "text",
    metrics_host: MetricsHost = "127.0.0.1",
    metrics_port: MetricsPort = 9420,
    nats: Annotated[
        str,
        typer.Option(
            help="Order through the chain's NATS JetStream stream on these servers "
            "(nats://host:port, comma-separated) instead of in this process.",
        ),
    ] = "",
    nats_replicas: Annotated[
        int,
        typer.Option(min=1, max=5, help="How many servers keep the chain's stream (with --nats)."),
    ] = 3,
) -> None:
    """Serve the ledger over HTTP under /v1 (docs/api.md), ordering submissions into blocks:
    in this process, or with --nats through a replicated stream that every node of the chain
    applies (docs/architecture.md, "The replicated ledger"). Given several --genesis, follow
    each chain, every one under /chains/<chain id>/v1 (GET /chains lists them)."""

    from ledger import (
        LedgerNode,
        SequencerUnavailable,
        chain_path,
        create_chains_app,
        open_ledger,
    )
    from service import labelled_registry, new_registry
    from service.database import StoreError

    configure_logging(log_level, "ledger", log_format)
    stores = store or ["sqlite:///petra-ledger.sqlite"]
    if len(stores) != len(genesis):
        fail(
            f"give one --store per --genesis, in the same order: {len(genesis)} genesis "
            f"file(s), {len(stores)} store(s)"
        )
    if len(set(stores)) != len(stores):
        fail("two chains cannot share a store: give each --genesis a --store of its own")
    held = read_keys(keys, passphrase_file).values()
    chains: list[tuple[bytes, Keypair, str]] = []
    seen: dict[bytes, int] = {}
    for n, (path, url) in enumerate(zip(genesis, stores, strict=True)):
        genesis_raw, genesis_doc = read_genesis(path)
        signing = [k for k in held if k.public_key in genesis_doc.sequencer_keys]
        if not signing:
            fail(f"{keys} holds none of the sequencer keys of {path}: the node could not sign")
        first = seen.setdefault(chain_id(genesis_doc), n)
        if first != n:
            fail(
                f"--genesis {genesis[first]} and --genesis {path} are of one chain: give each "
                "chain once"
            )
        chains.append((genesis_raw, signing[0], url))
    if host not in ("127.0.0.1", "::1", "localhost"):
        warn(f"listening on {host}: the node is reachable beyond this machine")
    for url in stores:
        hold_store_for(ctx, url, "ledger", "petra ledger serve")
    stop = threading.Event()
    nodes: list[LedgerNode] = []
    try:
        for genesis_raw, signing_key, url in chains:
            nodes.append(
                LedgerNode(
                    open_ledger(url, genesis_raw, signing_key),
                    on_fatal=stop.set,
                    nats_servers=[u.strip() for u in nats.split(",") if u.strip()],
                    node_name=f"seq-{signing_key.public_key.hex()[:16]}",
                    nats_replicas=nats_replicas,
                    registry=None if len(chains) == 1 else new_registry(process=False),
                )
            )
        app = create_chains_app(nodes)
    except StoreError as exc:
        _close_all(nodes)
        fail(str(exc))
    except (SequencerUnavailable, ValueError) as exc:
        _close_all(nodes)
        fail(f"cannot order through NATS at {nats}: {exc}" if nats else str(exc))
    for node, url in zip(nodes, stores, strict=True):
        log.info(
            "ledger node on http://%s:%s%s/v1 (store %s, tree size %s)",
            host,
            port,
            "" if len(nodes) == 1 else chain_path(node),
            shown_store(url),
            node.ledger.size,
        )
    registry = (
        nodes[0].registry
        if len(nodes) == 1
        else labelled_registry("chain", {n.ledger.chain.hex(): n.registry for n in nodes})
    )
    try:
        serve(
            app,
            host,
            port,
            stop,
            metrics=(registry, metrics_host, metrics_port),
            metrics_by_default=not chosen(ctx, "metrics_port"),
        )
    finally:
        _close_all(nodes)
    stopped = [node for node in nodes if node.fatal is not None]
    for node in stopped:  # exit non-zero, so that a supervisor restarts the node
        chain = "" if len(nodes) == 1 else f"chain {node.ledger.chain.hex()[:16]}: "
        err.print(
            f"[red]error:[/red] {chain}{escape(node.why_stopped())}; nothing unwritten was "
            f"kept, restart the node"
        )
    if stopped:
        raise typer.Exit(1)
    log.info("stopped")


def _close_all(nodes: list[LedgerNode]) -> None:
    for node in nodes:
        node.close()


@ledger_app.command("replicate", cls=ConfiguredCommand)
def replicate_command(
    ctx: typer.Context,
    primary: Annotated[str, ledger_option(": the primary to follow, e.g. http://host:7420")],
    genesis: Annotated[
        Path, typer.Option(help="The genesis JSON file.", exists=True, dir_okay=False)
    ],
    config: Annotated[Path | None, config_option("replica")] = None,
    store: Annotated[
        str, typer.Option(help="The database's SQLAlchemy URL: the replica's store.")
    ] = ("sqlite:///petra-replica.sqlite"),
    host: Annotated[str, typer.Option(help="The address to listen on (loopback unless told).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="The port to listen on.")] = 7421,
    evidence: Annotated[
        Path, typer.Option(help="Folder to keep the evidence of a divergence in.", file_okay=False)
    ] = Path("petra-evidence"),
    log_level: LogLevel = "info",
    log_format: LogFormat = "text",
    metrics_host: MetricsHost = "127.0.0.1",
    metrics_port: MetricsPort = 9421,
) -> None:
    """Follow a primary: check and re-validate every block, serve the same read API; stop with
    exit code 3 and the evidence on any divergence."""
    from ledger import open_ledger
    from ledger.api import LedgerNode, create_app
    from ledger.client import LedgerClient
    from ledger.replica import Follower, GenesisMismatch, ReplicaDiverged
    from service import serving
    from service.database import StoreError

    configure_logging(log_level, "replica", log_format)
    genesis_raw, _ = read_genesis(genesis)
    if host not in ("127.0.0.1", "::1", "localhost"):
        warn(f"listening on {host}: the replica is reachable beyond this machine")
    hold_store_for(ctx, store, "ledger", "petra ledger replicate")  # before following the primary
    try:
        node = LedgerNode(open_ledger(store, genesis_raw), primary=primary)
    except StoreError as exc:
        fail(str(exc))
    server = serving.server(create_app(node), host, port, serve_limits())
    stop = threading.Event()
    stopped: list[BaseException] = []
    client = LedgerClient(primary)
    follower = Follower(node.ledger, client, evidence, on_block=lambda _: node.notify_block())
    node.watch(follower)  # readiness and the lag metrics: how far behind the primary it is

    def follow() -> None:
        try:
            follower.run(stop)
        except BaseException as exc:  # the read API stops with the follower, whatever the cause
            stopped.append(exc)
        finally:
            server.stop.set()

    # A daemon: the block stream blocks while the primary is idle and must not hold up the exit.
    thread = threading.Thread(target=follow, name="replica-follower", daemon=True)
    log.info(
        "replica of %s on http://%s:%s/v1 (store %s, tree size %s)",
        *(primary, host, port, shown_store(store), node.ledger.size),
    )
    metrics = (node.registry, metrics_host, metrics_port)
    try:
        with serving_metrics(metrics, by_default=not chosen(ctx, "metrics_port")):
            thread.start()
            server.run()
    except SystemExit:  # uvicorn's own exit code on a failed start would read as a divergence
        fail(f"cannot serve on {host}:{port}: the address is in use or not this machine's")
    finally:
        stop.set()
        node.close()
    if stopped:
        problem = stopped[0]
        if isinstance(problem, ReplicaDiverged):
            err.print(
                f"[red]diverged:[/red] {escape(problem.reason)}; the replica stopped and kept "
                f"the evidence in {escape(str(problem.evidence_path))}"
            )
            raise typer.Exit(3)
        if isinstance(problem, GenesisMismatch | StoreError):
            fail(f"the replica stopped: {problem}")
        raise problem
    log.info("stopped")


@bench_app.command("ledger")
def bench_ledger_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for programs: one object.")
    ] = False,
    large: Annotated[
        int, typer.Option(min=60_000, help="Ledger size for the large-ledger rate.")
    ] = 1_000_000,
    store: Annotated[
        str | None,
        typer.Option(help="The database's SQLAlchemy URL (default: a temporary SQLite file)."),
    ] = None,
    http: Annotated[
        bool,
        typer.Option(
            "--http",
            help="Transfers/s submitted over HTTP to `petra ledger serve` on loopback, one "
            "per request by --clients clients (with p50/p99 latency) and in batches, against "
            "the in-process rate of the same run.",
        ),
    ] = False,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            help="Transfers/s committed through the replicated ordering (a NATS JetStream "
            "stream per chain, three servers on loopback), for one chain and --chains chains, "
            "against the in-process rate of the same run, and the failover of the node that "
            "cuts the blocks.",
        ),
    ] = False,
    chains: Annotated[
        int, typer.Option(min=1, max=16, help="With --cluster: chains committing at once.")
    ] = 4,
    count: Annotated[
        int,
        typer.Option(min=1, help="With --http: transfers each way; with --cluster: each chain's."),
    ] = 40_000,
    clients: Annotated[
        int,
        typer.Option(
            min=1,
            max=1_024,
            help="With --http: connections posting one transfer at a time, each waiting for "
            "its answer.",
        ),
    ] = 32,
) -> None:
    """Committed transfers per second against Ed25519 verifications per second, one run."""
    from service.database import StoreError

    console = Console(stderr=as_json)
    if cluster:
        from simulation.bench import ledger_cluster, ledger_http

        if store is not None or http:
            fail("--cluster runs on temporary SQLite files and the loopback, without --http")
        from ledger import SequencerUnavailable
        from simulation import NatsError

        try:
            ledger_cluster.run_cluster_bench(as_json, count, chains, console)
        except (ledger_http.HttpBenchError, StoreError, NatsError) as exc:
            fail(str(exc))
        except SequencerUnavailable as exc:
            fail(f"the bench's NATS cluster did not take a chain: {exc}")
        return
    if http:
        from simulation.bench import ledger_http

        if store is not None:
            fail("--store does not apply to --http: both runs use temporary SQLite files")
        try:
            ledger_http.run_http_bench(
                as_json=as_json, count=count, console=console, clients=clients
            )
        except (ledger_http.HttpBenchError, StoreError) as exc:
            fail(str(exc))
        return
    from simulation.bench import ledger as ledger_bench

    try:
        ledger_bench.run_ledger_bench(as_json=as_json, large=large, store=store, console=console)
    except StoreError as exc:
        fail(str(exc))


@bench_app.command("dso")
def bench_dso_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for programs: one object.")
    ] = False,
    bills: Annotated[int, typer.Option(min=1, help="How many interval bills to post.")] = 2_000,
    meters: Annotated[
        int, typer.Option(min=1, help="How many meters bill (one bill per meter and interval).")
    ] = 200,
    clients: Annotated[
        int,
        typer.Option(min=1, max=256, help="Client threads, each with one request in flight."),
    ] = 16,
) -> None:
    """Interval bills one DSO node takes in and reconciles per second, against the ledger
    node's rate for one read per bill, one run; and so how many meters one DSO node can bill
    at 900 s intervals."""
    from service.database import StoreError
    from simulation.bench import dso as dso_bench

    if meters > bills:
        fail(f"--meters ({meters}) must not exceed --bills ({bills}): each meter bills once")
    console = Console(stderr=as_json)
    try:
        dso_bench.run_dso_bench(as_json, console, bills=bills, meters=meters, clients=clients)
    except (dso_bench.DsoBenchError, StoreError) as exc:
        fail(str(exc))


@bench_app.command("bidstore")
def bench_bidstore_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for programs: one object.")
    ] = False,
    orders: Annotated[
        int, typer.Option(min=1, help="How many orders (asks and bids in turn) to post.")
    ] = 2_000,
    clients: Annotated[
        int,
        typer.Option(min=1, max=256, help="Client threads, each with one request in flight."),
    ] = 16,
    tor: Annotated[
        bool,
        typer.Option(
            "--tor/--no-tor",
            help="Also time order posts through a private Tor network (20-60 s to bootstrap).",
        ),
    ] = True,
) -> None:
    """Orders the bid store checks and accepts per second on loopback, against the ledger
    node's rate for the reads checking one order makes, one run; and the p50 latency of an
    order post to the store as an onion service on a private Tor network."""
    from simulation.bench import bidstore as bidstore_bench

    console = Console(stderr=as_json)
    try:
        bidstore_bench.run_bidstore_bench(as_json, console, orders=orders, clients=clients, tor=tor)
    except bidstore_bench.BidStoreBenchError as exc:
        fail(str(exc))


@bench_app.command("monitor")
def bench_monitor_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for programs: one object.")
    ] = False,
    http_samples: Annotated[
        int, typer.Option(min=1_000, help="Samples posted to /input/bulk.")
    ] = 200_000,
    mqtt_samples: Annotated[
        int, typer.Option(min=1_000, help="Samples published over MQTT.")
    ] = 100_000,
    clients: Annotated[int, typer.Option(min=1, max=64, help="HTTP client threads.")] = 4,
) -> None:
    """Samples the monitoring service stores per second over HTTP and MQTT, and the time to
    render a member's year page, against baselines of the same run."""
    from simulation.bench.monitor import MonitorBenchError, run_monitor_bench
    from simulation.monitor import MonitorSetupError

    try:
        run_monitor_bench(
            as_json,
            Console(stderr=as_json),
            http_samples=http_samples,
            mqtt_samples=mqtt_samples,
            clients=clients,
        )
    except (MonitorBenchError, MonitorSetupError) as exc:
        fail(str(exc))


bench_app.command("community")(bench_community_command)


@bench_app.command("mixer")
def bench_mixer_command(
    peers: Annotated[
        str, typer.Option(help="Pool sizes to mix, comma-separated (each from 2 to 256).")
    ] = "10,50,100",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for programs: one object.")
    ] = False,
) -> None:
    """Seconds for one CoinShuffle mix of N peers on loopback, from the pool's start until the
    landed transfer pays every peer (and from the first join), and bytes each peer posts,
    against 2 (N + 3) sequential round trips to the coordinator measured in the same run."""
    from simulation.bench import mixer as mixer_bench

    try:
        sizes = [int(n) for n in peers.split(",") if n.strip()]
    except ValueError:
        fail(f"--peers must be comma-separated numbers, not {peers!r}")
    console = Console(stderr=as_json)
    try:
        mixer_bench.run_mixer_bench(sizes, as_json, console)
    except mixer_bench.MixerBenchError as exc:
        fail(str(exc))


# ---------------------------------------------------------------- auditing a ledger node

LedgerUrl = Annotated[str, ledger_option(", e.g. http://host:7420")]
TrustedGenesis = Annotated[
    Path | None,
    typer.Option(
        "--genesis",
        help="The genesis JSON file to check heads against (else the node's own, trusted).",
        exists=True,
        dir_okay=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for programs: one object.")]
VERIFIED, CONSISTENT = "verified", "consistent"


def _refuse(message: str, as_json: bool, evidence: dict[str, object], verdict: str) -> NoReturn:
    """A check failed: print the evidence, say which check in one sentence, exit 1.
    `verdict`: the JSON key that is false (`verified`, `consistent`)."""
    if as_json:
        typer.echo(json.dumps({verdict: False, "reason": message, **evidence}))
    else:
        for name, value in evidence.items():
            typer.echo(f"{name}: {json.dumps(value, sort_keys=True)}")
    err.print(f"[red]not verified:[/red] {escape(message)}")
    raise typer.Exit(1)


def _trusted_genesis(node: str, path: Path | None) -> Genesis:
    """The genesis from `path`; else the node's, with a warning that it is then trusted."""
    from ledger.client import LedgerClient, LedgerClientError

    if path is not None:
        return read_genesis(path)[1]
    warn("no --genesis given: the node's own genesis is used, so the node is trusted for it")
    try:
        with LedgerClient(node) as client:
            return client.genesis()
    except LedgerClientError as exc:
        fail(f"cannot read the node's genesis: {exc}")


def _with_cosignatures(head: SignedHead, cosigned: list[SignedHead]) -> dict[str, object]:
    """A head as GET /v1/head answers it: with the other sequencers' signatures on it."""
    listed = [
        {"sequencer_key": h.sequencer_key.hex(), "signature": h.signature.hex()} for h in cosigned
    ]
    return {**head.to_wire(), "cosignatures": listed}


def _save_head(path: Path, head: dict[str, object]) -> None:
    """Write a head as GET /v1/head answers it, replacing `path` atomically."""
    try:
        write_private(path, (json.dumps(head, indent=2) + "\n").encode())
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")


Quorum = Annotated[
    int,
    typer.Option(
        min=1,
        help="How many distinct sequencer keys of the genesis must have signed the head (a "
        "replicated ledger's nodes each sign it; 1 trusts the node's own signature alone).",
    ),
]


@ledger_app.command("verify-proof")
def verify_proof_command(
    node: LedgerUrl,
    txid_hex: Annotated[
        str,
        typer.Option("--txid", help="The transaction's id, or its first 4 hex digits or more."),
    ],
    genesis: TrustedGenesis = None,
    as_json: AsJson = False,
    quorum: Quorum = 1,
) -> None:
    """Check that a transaction is in the node's signed log, trusting nothing the node says."""
    from ledger.client import (
        LedgerClient,
        LedgerClientError,
        ProofRefused,
        head_problem,
        quorum_problem,
    )

    prefix = txid_hex.strip().lower()
    if not 4 <= len(prefix) <= 64 or not set(prefix) <= set("0123456789abcdef"):
        fail(f"--txid {txid_hex!r} is not a transaction's id nor its start (4 to 64 hex digits)")
    trusted = _trusted_genesis(node, genesis)
    try:
        with LedgerClient(node) as client:
            if len(prefix) == 64:  # a whole id: the proof says whether it is on the ledger
                found, more = [bytes.fromhex(prefix)], False
            else:
                found, more = client.txids_with_prefix(prefix)
            if not found:
                fail(f"no transaction on the ledger starts with {prefix}")
            if len(found) > 1 or more:
                named = ", ".join(t.hex() for t in found) + (" and more" if more else "")
                fail(f"{prefix} starts several transactions' ids: {named}; give more digits")
            tx_id = found[0]
            cosigned = client.cosigned_head()
            if cosigned is None:
                _refuse("the node has no block yet: its log holds nothing", as_json, {}, VERIFIED)
            head, cosignatures = cosigned
            evidence: dict[str, object] = {"head": head.to_wire()}
            problem = head_problem(head, trusted) or quorum_problem(
                head, cosignatures, trusted, quorum
            )
            if problem is not None:
                _refuse(problem, as_json, evidence, VERIFIED)
            try:
                proof = client.prove_inclusion(tx_id, head)
            except ProofRefused as exc:
                _refuse(str(exc), as_json, evidence, VERIFIED)
    except LedgerClientError as exc:
        fail(str(exc))
    root = head.header.root.hex()
    if as_json:
        result = {VERIFIED: True, "txid": tx_id.hex(), "index": proof.index}
        typer.echo(json.dumps({**result, "tree_size": proof.size, "root": root, **evidence}))
    else:
        typer.echo(
            f"verified: {tx_id.hex()} is leaf {proof.index} of tree size {proof.size}, root {root}"
        )


@ledger_app.command("audit")
def audit_command(
    node: LedgerUrl,
    head_file: Annotated[
        Path,
        typer.Option(
            "--head",
            help="A head saved earlier (JSON of GET /v1/head); created if it does not exist.",
            dir_okay=False,
        ),
    ],
    genesis: TrustedGenesis = None,
    as_json: AsJson = False,
    quorum: Quorum = 1,
) -> None:
    """Check that the node's log only grew since a saved head, then save its current head."""
    from ledger.client import (
        LedgerClient,
        LedgerClientError,
        LedgerProtocolError,
        ProofRefused,
        head_from_wire,
        head_problem,
        quorum_problem,
    )

    saved = None
    if head_file.exists():
        try:
            saved = head_from_wire(json.loads(head_file.read_bytes()))
        except OSError as exc:
            fail(f"cannot read {head_file}: {exc.strerror}")
        except (ValueError, LedgerProtocolError) as exc:
            fail(f"{head_file} does not hold a signed head: {exc}")
    trusted = _trusted_genesis(node, genesis)
    try:
        with LedgerClient(node) as client:
            cosigned = client.cosigned_head()
            current = None if cosigned is None else cosigned[0]
            evidence: dict[str, object] = {
                "saved": None if saved is None else saved.to_wire(),
                "current": None if current is None else current.to_wire(),
            }
            if current is None:
                if saved is None:
                    fail("the node has no block yet: there is no head to save")
                _refuse(
                    "the node has no block, though a head was saved from it",
                    as_json,
                    evidence,
                    CONSISTENT,
                )
            for head, what in ((saved, "the saved head"), (current, "the node's head")):
                problem = None if head is None else head_problem(head, trusted)
                if problem is not None:
                    _refuse(f"{what}: {problem}", as_json, evidence, CONSISTENT)
            assert cosigned is not None
            problem = quorum_problem(current, cosigned[1], trusted, quorum)
            if problem is not None:
                _refuse(f"the node's head: {problem}", as_json, evidence, CONSISTENT)
            if saved is not None:
                try:
                    client.prove_consistency(saved, current)
                except ProofRefused as exc:
                    _refuse(f"not consistent: {exc}", as_json, evidence, CONSISTENT)
    except LedgerClientError as exc:
        fail(str(exc))
    new = current.header
    if saved is None:
        _save_head(head_file, _with_cosignatures(current, cosigned[1]))
        message = (
            f"saved the node's head (height {new.height}, tree size {new.tree_size}, root "
            f"{new.root.hex()}) to {head_file}; audit again later to check the log against it"
        )
    else:
        old = saved.header
        message = (
            f"consistent: tree size {old.tree_size} (height {old.height}, root "
            f"{old.root.hex()}) is a prefix of tree size {new.tree_size} (height {new.height}, "
            f"root {new.root.hex()})"
        )
        if current != saved:
            _save_head(head_file, _with_cosignatures(current, cosigned[1]))
            message += f"; {head_file} now holds the node's head"
    if as_json:
        result = (
            {"created": True, **evidence}
            if saved is None
            else {CONSISTENT: True, "updated": current != saved, **evidence}
        )
        typer.echo(json.dumps(result))
    else:
        typer.echo(message)


def main() -> None:
    """The console script: no traceback reaches a user unless PETRA_DEBUG is set."""
    from service.clock import ledger_clock

    try:
        ledger_clock()  # read PETRA_CLOCK once, now: every service of the process takes its time
    except ValueError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(2)
    try:
        app()
    except Exception as exc:
        if os.environ.get("PETRA_DEBUG"):
            raise
        err.print(
            f"[red]error:[/red] {escape(type(exc).__name__)}: {escape(str(exc))} "
            "(an internal error: set PETRA_DEBUG=1 for the details and report it)"
        )
        sys.exit(1)
