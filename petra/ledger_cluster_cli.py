"""`petra ledger cluster up|down`: a replicated ledger on this machine, for trying it by hand:
three NATS JetStream servers and three ledger nodes (`petra ledger serve --nats`), each node
over its own SQLite store and signing with its own sequencer key of one genesis.

Everything lives in one folder: the genesis and its keys (in clear: a folder for trying, not
for keeping value), each node's key, store and log, each server's files, and `cluster.json`,
which names every process and where it serves. `down` stops them; `up` again starts them over
the same files, so the chain goes on where it stopped."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from assets import Genesis, Keypair, chain_id
from assets.codec import genesis_to_wire
from assets.keyfile import dump_keys
from petra.console import fail, warn, write_private

cluster_app = typer.Typer(
    help="A replicated ledger on this machine: three NATS servers, three ledger nodes.",
    no_args_is_help=True,
)

NODES = 3
STATE = "cluster.json"
STOP_TIMEOUT_S = 15

Folder = Annotated[
    Path,
    typer.Option(
        "--dir", help="The folder of the cluster: genesis, keys, stores, logs and cluster.json."
    ),
]


@cluster_app.command("up")
def up_command(folder: Folder = Path("petra-cluster")) -> None:
    """Start three NATS JetStream servers and three ledger nodes ordering through them; a new
    folder gets a new genesis with three sequencer keys first."""
    from simulation.nats import NatsCluster, NatsError
    from simulation.processes import LedgerProcess, NotServing

    if _running(folder):
        fail(f"a cluster already runs from {folder}: `petra ledger cluster down` first")
    folder.mkdir(parents=True, exist_ok=True)
    genesis = folder / "genesis.json"
    if not genesis.exists():
        _new_chain(folder)
    try:
        nats = NatsCluster(folder / "nats")
        nats.start()
    except NatsError as exc:
        fail(str(exc))
    state: dict[str, Any] = {
        "nats": [{"url": s.url, "pid": s.process.pid} for s in nats.servers if s.process],
        "nodes": [],
    }
    _save(folder, state)
    for n in range(NODES):
        node = folder / f"node{n}"
        try:
            process = LedgerProcess(
                genesis,
                node / "keys.json",
                f"sqlite:///{node / 'ledger.sqlite'}",
                node / "node.log",
                nats=nats.urls,
            )
            process.wait_until_serving()
        except NotServing as exc:
            _save(folder, state)
            _stop(folder)
            fail(f"ledger node {n} did not start: {exc}")
        state["nodes"].append({"url": process.url, "pid": process.process.pid})
        _save(folder, state)
    for n, node_state in enumerate(state["nodes"]):
        typer.echo(f"ledger node {n}: {node_state['url']}/v1  (log {folder}/node{n}/node.log)")
    typer.echo(f"NATS servers: {','.join(s['url'] for s in state['nats'])}")
    typer.echo(f"stop them with: petra ledger cluster down --dir {folder}")


@cluster_app.command("down")
def down_command(folder: Folder = Path("petra-cluster")) -> None:
    """Stop the ledger nodes, then the NATS servers, of the cluster in the folder."""
    if not (folder / STATE).exists():
        fail(f"no cluster was started from {folder}")
    stopped = _stop(folder)
    typer.echo(f"stopped {stopped} processes of the cluster in {folder}")


def _new_chain(folder: Path) -> None:
    keys = {"dso-0": Keypair.generate()}
    sequencers = [Keypair.generate() for _ in range(NODES)]
    genesis = Genesis(
        name=f"PETra replicated ledger ({folder.resolve().name})",
        interval_s=900,
        epoch=int(time.time()) // 900 * 900,
        currency="EUR",
        dso_keys=(keys["dso-0"].public_key,),
        sequencer_keys=tuple(k.public_key for k in sequencers),
    )
    keys.update({f"sequencer-{n}": k for n, k in enumerate(sequencers)})
    warn(f"the cluster's keys are kept in clear in {folder}: a cluster for trying, not for value")
    write_private(folder / "keys.json", dump_keys(keys, None))
    for n, key in enumerate(sequencers):
        (folder / f"node{n}").mkdir(exist_ok=True)
        write_private(folder / f"node{n}" / "keys.json", dump_keys({f"sequencer-{n}": key}, None))
    (folder / "genesis.json").write_text(
        json.dumps(genesis_to_wire(genesis), indent=2, sort_keys=True) + "\n"
    )
    typer.echo(f"genesis {chain_id(genesis).hex()} written to {folder / 'genesis.json'}")


def _save(folder: Path, state: dict[str, Any]) -> None:
    (folder / STATE).write_text(json.dumps(state, indent=2) + "\n")


def _pids(folder: Path) -> tuple[list[int], list[int]]:
    """The cluster's ledger nodes and its NATS servers."""
    try:
        state = json.loads((folder / STATE).read_text())
    except (OSError, ValueError):
        return [], []
    return [p["pid"] for p in state.get("nodes", [])], [p["pid"] for p in state.get("nats", [])]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running(folder: Path) -> bool:
    nodes, servers = _pids(folder)
    return any(_alive(pid) for pid in nodes + servers)


def _stop(folder: Path) -> int:
    """SIGTERM the cluster's ledger nodes (each a process group), then its servers, SIGKILL
    what lingers; how many processes were running."""
    stopped = 0
    for group in _pids(folder):
        running = [pid for pid in group if _alive(pid)]
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(_alive(pid) for pid in running) and time.monotonic() < deadline:
            for pid in running:
                _reap(pid)
            time.sleep(0.05)
        for pid in running:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        stopped += len(running)
    (folder / STATE).unlink(missing_ok=True)
    return stopped


def _reap(pid: int) -> None:
    """Collect `pid` if it is this process's child (started by `up` in the same process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
