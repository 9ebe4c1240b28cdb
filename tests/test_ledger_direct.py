"""`POST /v1/transactions` answered by the server itself (`ledger.api.DirectSubmission`), on
a node served by a real uvicorn server in a thread of the test: every answer is the bytes the
ASGI route (`SubmissionRoutes`) gives the same request, including its refusals, a replica's,
a full sequencer's and a failed store's; a process serving several chains answers each
chain's submissions directly."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from starlette.types import ASGIApp
from test_ledger_batch import MALFORMED, Community, community  # noqa: F401 (a fixture)
from test_ledger_chains import regulation
from test_serving import serve_in_thread
from test_serving_direct import Connection, post, without_date
from waiting import wait_until

import ledger.api
from assets.codec import MAX_TX_BYTES
from ledger import InProcessSequencer, Ledger, LedgerNode, create_app
from ledger.chains import chain_path, create_chains_app
from ledger.store import Store
from service.http import direct_routes
from service.serving import ServeLimits
from simulation.scenario import Scenario


class Served:
    """An application served on loopback until `close`."""

    def __init__(self, app: ASGIApp) -> None:
        url, self.stop, self.thread = serve_in_thread(app, ServeLimits())
        host, port = url.removeprefix("http://").split(":")
        self.address = (host, int(port))

    def post(self, path: str, body: bytes) -> bytes:
        """The whole answer to one POST of `body` on a connection of its own."""
        with Connection(socket.create_connection(self.address, timeout=10)) as connection:
            connection.sendall(post(path, body))
            return connection.answer()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> dict[str, object]:
    loaded = orjson.loads(answer.partition(b"\r\n\r\n")[2])
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture
def node(community: Community) -> Iterator[LedgerNode]:  # noqa: F811 (the fixture above)
    served = LedgerNode(community.ledger)
    yield served
    served.close()


@pytest.fixture
def served(node: LedgerNode) -> Iterator[Served]:
    serving = Served(create_app(node))
    yield serving
    serving.close()


# A query string keeps a request off the direct route: it reaches `SubmissionRoutes`
BY_APP = "/v1/transactions?by=app"


def test_an_accepted_transaction_is_answered_once_durable(
    served: Served,
    community: Community,  # noqa: F811
) -> None:
    answer = served.post("/v1/transactions", community.issue())
    assert status_of(answer) == 200
    assert b"content-type: application/json" in answer
    accepted = body_of(answer)
    assert set(accepted) == {"txid", "seq", "height"}
    head = community.ledger.durable_head
    assert head is not None and head.header.height == accepted["height"]


def test_refusals_are_the_bytes_the_asgi_route_answers(
    served: Served,
    community: Community,  # noqa: F811
) -> None:
    issue = community.issue()
    assert status_of(served.post("/v1/transactions", issue)) == 200
    for body, status in [(issue, 422), (MALFORMED, 400), (b"x" * (MAX_TX_BYTES + 1), 413)]:
        direct = served.post("/v1/transactions", body)
        assert status_of(direct) == status, direct
        assert without_date(direct) == without_date(served.post(BY_APP, body))


def test_a_replica_answers_read_only_directly(community: Community) -> None:  # noqa: F811
    replica = LedgerNode(community.ledger, primary="http://primary:7420")
    serving = Served(create_app(replica))
    try:
        direct = serving.post("/v1/transactions", community.issue())
        assert status_of(direct) == 503 and body_of(direct)["error"]["code"] == "read_only"  # type: ignore[index]
        assert without_date(direct) == without_date(serving.post(BY_APP, community.issue()))
    finally:
        serving.close()
        replica.close()


def test_a_full_sequencer_answers_busy_after_waiting_for_room(
    served: Served,
    node: LedgerNode,
    community: Community,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(node.sequencer, InProcessSequencer)
    monkeypatch.setattr(ledger.api, "BUSY_WAIT_S", 0.05)
    node.sequencer.max_queued_blocks = 0  # as if the ledger were behind
    try:
        busy = served.post("/v1/transactions", community.issue())
    finally:
        node.sequencer.max_queued_blocks = 4
    assert status_of(busy) == 503 and b"retry-after: 1" in busy
    assert body_of(busy)["error"]["code"] == "busy"  # type: ignore[index]
    assert status_of(served.post("/v1/transactions", community.issue())) == 200


def test_a_submission_waiting_for_room_is_queued_once_there_is_some(
    served: Served,
    node: LedgerNode,
    community: Community,  # noqa: F811
) -> None:
    assert isinstance(node.sequencer, InProcessSequencer)
    sequencer = node.sequencer
    sequencer.max_queued_blocks = 0
    timer = threading.Timer(0.3, lambda: setattr(sequencer, "max_queued_blocks", 4))
    timer.start()
    answer = served.post("/v1/transactions", community.issue())
    timer.join()
    assert status_of(answer) == 200, answer


def test_a_block_the_store_could_not_keep_is_answered_unavailable(
    served: Served,
    node: LedgerNode,
    community: Community,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing_write(*_: object) -> None:
        raise OSError("the disk is full")

    monkeypatch.setattr(community.ledger, "write", failing_write)
    answer = served.post("/v1/transactions", community.issue())
    assert status_of(answer) == 503
    error = body_of(answer)["error"]
    assert error["code"] == "unavailable"  # type: ignore[index]
    assert "the disk is full" in error["message"]  # type: ignore[index]
    wait_until(lambda: node.fatal is not None, 5, "the node to know it stopped")
    stopped = served.post("/v1/transactions", community.issue())  # the sequencer is closed
    assert status_of(stopped) == 503 and body_of(stopped)["error"]["code"] == "unavailable"  # type: ignore[index]


def test_each_chain_of_a_process_is_submitted_to_directly(tmp_path: Path) -> None:
    scenarios = [Scenario(name=name, epoch=int(time.time()) - 60) for name in ("north", "south")]
    nodes = [
        LedgerNode(Ledger(Store(f"sqlite:///{tmp_path}/{n}.sqlite"), s.genesis, s.sequencer))
        for n, s in enumerate(scenarios)
    ]
    app = create_chains_app(nodes)
    paths = {f"{chain_path(node)}/v1/transactions" for node in nodes}
    assert set(direct_routes(app)) == paths  # none at /v1: it would name no chain
    assert set(direct_routes(create_chains_app(nodes[:1]))) == {
        "/v1/transactions",
        f"{chain_path(nodes[0])}/v1/transactions",
    }
    serving = Served(app)
    try:
        south = nodes[1]
        answer = serving.post(f"{chain_path(south)}/v1/transactions", MALFORMED)
        assert status_of(answer) == 400  # judged by that chain's node, over the direct route
        accepted = serving.post(f"{chain_path(south)}/v1/transactions", regulation(scenarios[1]))
        assert status_of(accepted) == 200, accepted
        assert south.ledger.size == 1 and nodes[0].ledger.size == 0
    finally:
        serving.close()
        for node in nodes:
            node.close()
            node.ledger.store.close()
