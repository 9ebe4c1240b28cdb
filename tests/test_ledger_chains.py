"""One ledger process following several chains (`ledger.chains`): each chain's API under
`/chains/<chain id>/v1`, exactly as a node of that chain alone serves it under `/v1`; the
chains listed at `GET /chains`; readiness over every chain; a path naming no chain refused
with 404 `not_found` and where the chains are; each chain's metrics labelled by chain."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from assets import Authorization, Keypair, encode_transaction
from ledger import Ledger, LedgerNode, chain_path, create_chains_app
from ledger.store import Store
from service import labelled_registry, new_registry
from simulation.scenario import Scenario


def node_of(scenario: Scenario, store: Path, registry: bool = False) -> LedgerNode:
    ledger = Ledger(Store(f"sqlite:///{store}"), scenario.genesis, scenario.sequencer)
    return LedgerNode(ledger, registry=new_registry(process=False) if registry else None)


def regulation(scenario: Scenario) -> bytes:
    now = scenario.genesis.interval_at(int(time.time()))
    meter = Authorization("m", Keypair.generate().public_key, 10, 10)
    return encode_transaction(scenario.regulate(now + 1, authorize=[meter]))


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[list[Scenario], list[LedgerNode]]]:
    scenarios = [Scenario(name=f"community {n}", epoch=int(time.time()) - 60) for n in (1, 2)]
    nodes = [node_of(s, tmp_path / f"{n}.sqlite", registry=True) for n, s in enumerate(scenarios)]
    try:
        yield scenarios, nodes
    finally:
        for node in nodes:
            node.close()
            node.ledger.store.close()


def test_each_chain_answers_under_its_own_path_and_only_there(
    two: tuple[list[Scenario], list[LedgerNode]],
) -> None:
    scenarios, nodes = two
    paths = [chain_path(node) for node in nodes]
    with TestClient(create_chains_app(nodes)) as client:
        first = client.post(f"{paths[0]}/v1/transactions", content=regulation(scenarios[0]))
        second = [
            client.post(f"{paths[1]}/v1/transactions", content=regulation(scenarios[1]))
            for _ in range(2)
        ]
        # a chain's transaction sent to the other chain is refused there, as a node alone would
        crossed = client.post(f"{paths[1]}/v1/transactions", content=regulation(scenarios[0]))
        heads = [client.get(f"{path}/v1/head").json() for path in paths]
        listed = client.get("/chains").json()["chains"]
        ready = client.get("/readyz")
        at_root = client.get("/v1/head")
        unknown = client.get(f"/chains/{'ab' * 32}/v1/head")
        glued = client.get(f"{paths[0]}v1/head")

    assert first.status_code == 200 and [s.status_code for s in second] == [200, 200]
    assert crossed.status_code == 422 and crossed.json()["error"]["code"] == "wrong_chain"
    assert [h["tree_size"] for h in heads] == [1, 2]
    assert [h["chain"] for h in heads] == [s.chain.hex() for s in scenarios]
    assert listed == [
        {
            "chain": s.chain.hex(),
            "name": s.genesis.name,
            "path": f"{path}/v1",
            "height": head["height"],
            "tree_size": head["tree_size"],
        }
        for s, path, head in zip(scenarios, paths, heads, strict=True)
    ]
    assert ready.status_code == 200
    assert {name.split()[0] for name in ready.json()["checks"]} == {
        s.chain.hex()[:16] for s in scenarios
    }
    assert at_root.status_code == 404
    assert "this node follows 2 chains" in at_root.json()["error"]["message"]
    assert "/chains/<chain id>/v1" in at_root.json()["error"]["message"]
    for refused in (unknown, glued):
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "not_found"
        assert "names no chain this node follows" in refused.json()["error"]["message"]


def test_a_chain_that_cannot_work_makes_the_process_not_ready(
    two: tuple[list[Scenario], list[LedgerNode]],
) -> None:
    _, nodes = two
    nodes[1].fatal = OSError("disk full")
    with TestClient(create_chains_app(nodes)) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    message = ready.json()["error"]["message"]
    assert message.startswith(f"{nodes[1].ledger.chain.hex()[:16]} sequencer: ")
    assert "storage failure: disk full" in message


def test_one_chain_answers_under_v1_and_under_its_path(tmp_path: Path) -> None:
    scenario = Scenario(epoch=int(time.time()) - 60)
    node = node_of(scenario, tmp_path / "one.sqlite")
    try:
        with TestClient(create_chains_app([node])) as client:
            posted = client.post("/v1/transactions", content=regulation(scenario))
            direct = client.get("/v1/head").json()
            by_path = client.get(f"{chain_path(node)}/v1/head").json()
            listed = client.get("/chains").json()["chains"]
            ready = client.get("/readyz")
    finally:
        node.close()
        node.ledger.store.close()
    assert posted.status_code == 200
    assert direct == by_path and direct["tree_size"] == 1
    assert [c["chain"] for c in listed] == [scenario.chain.hex()]
    assert ready.status_code == 200 and "sequencer" in ready.json()["checks"]


def test_two_nodes_of_one_chain_are_refused(tmp_path: Path) -> None:
    scenario = Scenario()
    nodes = [node_of(scenario, tmp_path / f"{n}.sqlite") for n in range(2)]
    try:
        with pytest.raises(ValueError, match="two of the nodes follow the same chain"):
            create_chains_app(nodes)
    finally:
        for node in nodes:
            node.close()
            node.ledger.store.close()


def test_each_chains_figures_carry_its_chain_and_the_process_figures_appear_once(
    two: tuple[list[Scenario], list[LedgerNode]],
) -> None:
    scenarios, nodes = two
    registry = labelled_registry("chain", {n.ledger.chain.hex(): n.registry for n in nodes})
    with TestClient(create_chains_app(nodes)) as client:
        client.post(f"{chain_path(nodes[1])}/v1/transactions", content=regulation(scenarios[1]))

    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    accepted = {
        s.labels["chain"]: s.value
        for s in families["petra_ledger_transactions_accepted"].samples
        if s.name.endswith("_total")
    }
    assert accepted == {scenarios[0].chain.hex(): 0.0, scenarios[1].chain.hex(): 1.0}
    resident = families["process_resident_memory_bytes"].samples
    assert len(resident) == 1 and "chain" not in resident[0].labels
