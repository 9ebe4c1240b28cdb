"""Real `petra` processes for the integration tests: start one, wait until it serves, stop it,
and the checks every node test makes of a node's proofs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
import pytest

from assets import Authorization, Transaction, encode_transaction, txid
from ledger import merkle
from ledger.bench_http import free_port as free_port  # re-exported for the tests
from ledger.blocks import SignedHead
from ledger.client import head_from_wire
from ledger.scenario import Scenario

START_TIMEOUT_S = 60  # a restart on PostgreSQL may first wait for a killed node's session


def start_petra(
    *args: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`petra ARGS` in a process group of its own, its standard error in `log`; `env` adds
    to the environment."""
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-c", "from petra.cli import main; main()", *args],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )


def wait_serving(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Return once `url` answers; stop the process and fail the test, with its log, if it
    exits or does not answer in time."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            httpx.get(f"{url}/v1/genesis", timeout=1)
            return
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop(process)
                pytest.fail(f"{url} did not start: {log.read_text()}")
            time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers, and reap it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def serve_ledger(
    genesis: Path, keys: Path, store_url: str, log: Path, env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """`petra ledger serve` on a free loopback port, once it answers: its URL and process."""
    port = free_port()
    process = start_petra(
        *("ledger", "serve", "--genesis", str(genesis), "--keys", str(keys)),
        *("--store", store_url, "--port", str(port)),
        log=log,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_serving(url, process, log)
    return url, process


def authorize_now(url: str, scenario: Scenario, authorizations: Iterable[Authorization]) -> None:
    """Put `authorizations` on the ledger at `url` and return once they are in force.

    The scenario has one-second intervals: a regulation for the next interval is in force a
    second or two after it lands.
    """
    effective = int(time.time()) - scenario.epoch + 1
    regulation = scenario.regulate(effective, authorize=authorizations)
    answer = httpx.post(
        f"{url}/v1/transactions", content=encode_transaction(regulation), timeout=30
    )
    assert answer.status_code == 200, answer.text
    while int(time.time()) - scenario.epoch <= effective + 1:
        time.sleep(0.1)


def assert_proofs_verify(
    get: Callable[..., httpx.Response], tx: Transaction, head: SignedHead
) -> None:
    """The node's inclusion proof of `tx` and its consistency proof from block 1 both verify
    against `head`, hashed here from what was sent, not from what the node says."""
    proof = get("/proofs/inclusion", txid=txid(tx).hex()).json()
    leaf = merkle.leaf_hash(encode_transaction(tx))
    assert bytes.fromhex(proof["leaf_hash"]) == leaf
    size, root = head.header.tree_size, head.header.root
    path = [bytes.fromhex(h) for h in proof["proof"]]
    assert merkle.verify_inclusion(leaf, proof["index"], size, path, root)
    first = head_from_wire(get("/blocks/1").json()["head"])
    consistency = get("/proofs/consistency", old=first.header.tree_size).json()
    assert merkle.verify_consistency(
        first.header.tree_size,
        size,
        first.header.root,
        root,
        [bytes.fromhex(h) for h in consistency["proof"]],
    )
