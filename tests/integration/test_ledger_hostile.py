"""Issue 14 against the real `petra ledger serve` process: each attack that once stopped or
exhausted the node, and the node answering honestly after it.

- The 33-byte fatal request (a lone surrogate escape) and JSON nested 986 deep are refused
  `malformed`, and honest transactions sent with them and after them land.
- The shared corpus of hostile bodies, and hypothesis-generated JSON, on every route: no 5xx,
  no traceback, in the answer or the log.
- Half-sent requests (slowloris) are closed by the node after its read deadline, and
  connections beyond its limit are closed at once; honest clients are served meanwhile.
- SIGTERM: exit status 0, no worker process and no semaphore left behind.
- A real storage fault (PostgreSQL refusing the block's write) stops the node with exit
  status 1 and a log line, so a supervisor restarts it; restarted, it has lost nothing.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hostile import (
    assert_no_traceback,
    assert_refused_cleanly,
    hostile_json,
    json_bytes,
    send_corpus,
)
from hypothesis import HealthCheck, given, settings
from sqlalchemy.engine import make_url
from waiting import wait_until

from assets import Authorization, Fa, Keypair, encode_transaction
from assets.keyfile import dump_keys
from simulation.processes import stop
from simulation.scenario import Scenario, pay

from .nodes import authorize_now, serve_ledger

SURROGATE = b'{"type":"transfer","x":"\\ud800"}'  # the 33-byte request of the issue
DEEP = b"[" * 986 + b"]" * 986
READ_TIMEOUT_S = 2  # the node's request deadline in these tests (PETRA_REQUEST_TIMEOUT_S)
MAX_CONNECTIONS = 300


METERS = 32  # honest submissions sent at once each come from a meter of their own


@dataclass
class Node:
    url: str
    process: Any
    log: Path
    scenario: Scenario
    meters: list[Keypair]
    turn: Iterator[int] = field(default_factory=lambda: itertools.cycle(range(METERS)))
    nonces: dict[int, int] = field(default_factory=dict)

    def honest(self) -> bytes:
        """A new valid issue, of the next meter in turn (each meter's nonces increasing)."""
        n = next(self.turn)
        self.nonces[n] = self.nonces.get(n, 0) + 1
        meter = self.meters[n]
        tx = self.scenario.issue(f"m{n}", meter, self.nonces[n], [pay(Fa(7), meter)])
        return encode_transaction(tx)


def start_node(tmp_path: Path, store_url: str, env: dict[str, str] | None = None) -> Node:
    scenario = Scenario(epoch=int(time.time()) - 10, interval_s=1)
    (tmp_path / "genesis.json").write_bytes(scenario.genesis_raw)
    (tmp_path / "keys.json").write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    log = tmp_path / "node.log"
    url, process = serve_ledger(
        tmp_path / "genesis.json", tmp_path / "keys.json", store_url, log, env
    )
    meters = [Keypair.generate() for _ in range(METERS)]
    try:
        authorize_now(
            url,
            scenario,
            [Authorization(f"m{n}", m.public_key, 10**6, 10**6) for n, m in enumerate(meters)],
        )
    except BaseException:
        stop(process)
        raise
    return Node(url, process, log, scenario, meters)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp_path = tmp_path_factory.mktemp("ledger-hostile")
    env = {
        "PETRA_REQUEST_TIMEOUT_S": str(READ_TIMEOUT_S),
        "PETRA_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    started = start_node(tmp_path, f"sqlite:///{tmp_path}/ledger.sqlite", env)
    try:
        yield started
    finally:
        stop(started.process)


def submit(node: Node, raw: bytes) -> httpx.Response:
    return httpx.post(f"{node.url}/v1/transactions", content=raw, timeout=30)


def test_the_fatal_request_is_refused_and_honest_ones_land_with_it_and_after(node: Node) -> None:
    """Hostile and honest submissions sent together share blocks; every hostile one is
    refused `malformed`, every honest one lands, in those blocks and the next."""
    bodies = [SURROGATE, DEEP] * 10
    honest = [node.honest() for _ in range(20)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda raw: submit(node, raw), [*bodies, *honest]))
    for answer in answers[: len(bodies)]:
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "malformed"
    heights = {a.json()["height"] for a in answers[len(bodies) :] if a.status_code == 200}
    assert all(a.status_code == 200 for a in answers[len(bodies) :]), answers[-1].text
    after = submit(node, node.honest())
    assert after.status_code == 200, after.text
    assert after.json()["height"] > max(heights)
    assert_no_traceback(node.log)


ROUTES = [
    ("POST", "/v1/transactions"),
    ("GET", "/v1/head"),
    ("GET", "/v1/blocks/1"),
    ("GET", "/v1/blocks"),
    ("GET", "/v1/genesis"),
    ("GET", "/v1/regulation/1"),
    ("GET", "/v1/proofs/consistency?old=0"),
    ("GET", f"/v1/addresses/{'00' * 32}/unspent"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_route_survives_the_hostile_corpus(node: Node, method: str, path: str) -> None:
    with httpx.Client(base_url=node.url, timeout=60) as client:
        assert send_corpus(client, method, path) == []
    assert submit(node, node.honest()).status_code == 200
    assert_no_traceback(node.log)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(value=hostile_json())
def test_hypothesis_json_never_gets_a_server_error(node: Node, value: Any) -> None:
    answer = submit(node, json_bytes(value))
    assert_refused_cleanly(answer, f"POST /v1/transactions {json_bytes(value)[:200]!r}")
    assert answer.status_code in (400, 413)


def test_the_node_answers_after_the_hypothesis_run(node: Node) -> None:
    assert submit(node, node.honest()).status_code == 200
    assert_no_traceback(node.log)


def half_sent(url: str) -> socket.socket:
    """A connection that sends part of a request's headers and then nothing."""
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=10)
    conn.sendall(b"POST /v1/transactions HTTP/1.1\r\nHost: ledger\r\nContent-Length: 100\r\n")
    return conn


def closed_by_peer(conn: socket.socket, within_s: float) -> bool:
    conn.settimeout(within_s)
    try:
        return conn.recv(1024) == b""  # the node sent nothing: it closed the connection
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_slowloris_connections_are_closed_and_honest_clients_served(node: Node) -> None:
    """A hundred and fifty half-sent requests: an honest submission is served at once, and
    the node closes every half-sent one after its read deadline (they once stayed open
    forever)."""
    attackers = [half_sent(node.url) for _ in range(150)]
    try:
        started = time.monotonic()
        assert submit(node, node.honest()).status_code == 200
        assert time.monotonic() - started < READ_TIMEOUT_S
        time.sleep(READ_TIMEOUT_S)
        still_open = [c for c in attackers if not closed_by_peer(c, within_s=3)]
        assert not still_open, f"{len(still_open)} half-sent requests still held open"
    finally:
        for conn in attackers:
            conn.close()
    assert submit(node, node.honest()).status_code == 200


def test_connections_beyond_the_limit_are_closed_at_once_and_the_node_recovers(
    node: Node,
) -> None:
    attackers = [half_sent(node.url) for _ in range(MAX_CONNECTIONS + 50)]
    try:
        refused = [c for c in attackers[-50:] if closed_by_peer(c, within_s=1)]
        assert len(refused) >= 40, f"only {len(refused)} of 50 beyond the limit were closed"
    finally:
        for conn in attackers:
            conn.close()

    def serves() -> bool:  # the held ones are closed by now or soon: the node serves again
        try:
            return bool(submit(node, node.honest()).status_code == 200)
        except httpx.TransportError:
            return False

    wait_until(serves, READ_TIMEOUT_S + 10, "the node to recover from the flood", interval_s=0.2)


# ---------------------------------------------------------------- shutdown


def descendants(pid: int) -> set[int]:
    """Every living process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_exits_0_leaving_no_process_or_semaphore(tmp_path: Path) -> None:
    node = start_node(tmp_path, f"sqlite:///{tmp_path}/ledger.sqlite")
    try:
        assert submit(node, node.honest()).status_code == 200
        workers = descendants(node.process.pid)
        assert workers, "the node runs its static checks on worker processes"
        os.kill(node.process.pid, signal.SIGTERM)  # the process alone, as a supervisor does
        status = node.process.wait(timeout=30)
    finally:
        stop(node.process)
    assert status == 0, node.log.read_text()
    wait_until(
        lambda: not any(alive(p) for p in workers),
        5,
        "the worker processes to exit",
        interval_s=0.1,
    )
    # multiprocessing's resource tracker (one of `workers`) says so on exit if it had to
    # clean up after the node
    assert "leaked semaphore" not in node.log.read_text(), node.log.read_text()
    assert_no_traceback(node.log)


# ---------------------------------------------------------------- a real storage fault


@pytest.mark.postgres
def test_a_storage_fault_stops_the_node_non_zero_and_a_restart_loses_nothing(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue("postgres_server")
    store_url = server.fresh_database()
    url = make_url(store_url)
    node = start_node(tmp_path, store_url)
    try:
        landed = submit(node, node.honest())
        assert landed.status_code == 200, landed.text
        with psycopg.connect(
            host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True
        ) as db:
            db.execute(
                "CREATE FUNCTION petra_test_full() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'no space left on device (simulated)'; END $$"
            )
            db.execute(
                "CREATE TRIGGER petra_test_full BEFORE INSERT ON transactions "
                "FOR EACH ROW EXECUTE FUNCTION petra_test_full()"
            )
        refused = submit(node, node.honest())
        assert refused.status_code == 503, refused.text
        status = node.process.wait(timeout=30)
        assert status == 1, node.log.read_text()
        assert "storage failure" in node.log.read_text()
        with psycopg.connect(
            host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True
        ) as db:
            db.execute("DROP TRIGGER petra_test_full ON transactions")
    finally:
        stop(node.process)
    restarted, process = serve_ledger(
        tmp_path / "genesis.json", tmp_path / "keys.json", store_url, tmp_path / "again.log"
    )
    try:
        head = httpx.get(f"{restarted}/v1/head", timeout=10).json()
        assert head["height"] == landed.json()["height"]  # every acknowledged block kept
        again = httpx.post(f"{restarted}/v1/transactions", content=node.honest(), timeout=30)
        assert again.status_code == 200, again.text
    finally:
        stop(process)
