"""The submission routes served before FastAPI (`ledger.api.SubmissionRoutes`): the batch
route `POST /v1/transactions/batch` and `LedgerClient.submit_many` over it, and the single
route answering exactly as docs/api.md says, against a real node in-process (TestClient)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import ledger.api
import ledger.batch
from assets import Authorization, Code, Fa, Keypair, Outpoint, Transaction, encode_transaction
from assets.codec import MAX_TX_BYTES
from ledger import InProcessSequencer, Ledger, LedgerNode, create_app
from ledger.batch import MAX_BATCH, MAX_BATCH_BYTES, NDJSON, encode_batch, split_batch
from ledger.client import LedgerClient, LedgerError, LedgerRejected, Submitted
from ledger.store import Store
from simulation.scenario import Scenario, pay

MALFORMED = b'{"type":"transfer","x":"\\ud800"}'


@dataclass
class Community:
    """A ledger where a meter may issue, and Alice owns 1,000 FA at `funds`."""

    scenario: Scenario
    ledger: Ledger
    meter: Keypair
    alice: Keypair
    funds: Outpoint
    nonce: int = 1

    def issue(self, amount: int = 10) -> bytes:
        self.nonce += 1
        tx = self.scenario.issue("meter-1", self.meter, self.nonce, [pay(Fa(amount), self.alice)])
        return encode_transaction(tx)

    def spend(self, to: Keypair, inputs: tuple[Outpoint, ...] | None = None) -> bytes:
        tx = self.scenario.transfer(inputs or (self.funds,), [pay(Fa(1_000), to)], self.alice)
        return encode_transaction(tx)


def _append(ledger: Ledger, scenario: Scenario, tx: Transaction, interval: int) -> bytes:
    result = ledger.append_block([encode_transaction(tx)], scenario.time_in(interval))
    (outcome,) = result.outcomes
    assert outcome.accepted and outcome.txid is not None, outcome
    return outcome.txid


@pytest.fixture
def community(tmp_path: Path) -> Iterator[Community]:
    scenario, meter, alice = Scenario(), Keypair.generate(), Keypair.generate()
    ledger = Ledger(Store(f"sqlite:///{tmp_path}/l.sqlite"), scenario.genesis, scenario.sequencer)
    authorize = Authorization("meter-1", meter.public_key, 10_000, 10_000)
    _append(ledger, scenario, scenario.regulate(0, [authorize]), 0)
    issue = scenario.issue("meter-1", meter, 1, [pay(Fa(1_000), alice)])
    funds = Outpoint(_append(ledger, scenario, issue, 1), 0)
    yield Community(scenario, ledger, meter, alice, funds)
    ledger.store.close()


@pytest.fixture
def node(community: Community) -> Iterator[LedgerNode]:
    served = LedgerNode(community.ledger)
    yield served
    served.close()


@pytest.fixture
def http(node: LedgerNode) -> Iterator[TestClient]:
    with TestClient(create_app(node)) as client:
        yield client


def post_batch(http: TestClient, raws: list[bytes]) -> httpx.Response:
    answer: httpx.Response = http.post(
        "/v1/transactions/batch", content=encode_batch(raws), headers={"Content-Type": NDJSON}
    )
    return answer


def codes(answer: httpx.Response) -> list[str | None]:
    assert answer.status_code == 200, answer.text
    return [r["error"]["code"] if "error" in r else None for r in answer.json()["results"]]


# ---------------------------------------------------------------- the wire format


def test_a_batch_body_is_one_transaction_per_line_with_one_trailing_newline_allowed() -> None:
    assert split_batch(b"a\nb\n") == split_batch(b"a\nb") == [b"a", b"b"]
    assert split_batch(b"") == split_batch(b"\n") == []
    assert split_batch(b"a\n\nb") == [b"a", b"", b"b"]  # an empty line is a transaction


def test_chunks_respect_both_the_count_and_the_byte_limit() -> None:
    many = [b"x"] * (MAX_BATCH * 2 + 1)
    assert [len(c) for c in ledger.batch.chunks(many)] == [MAX_BATCH, MAX_BATCH, 1]
    big = [b"y" * (MAX_BATCH_BYTES // 2)] * 3
    assert [len(c) for c in ledger.batch.chunks(big)] == [1, 1, 1]


# ---------------------------------------------------------------- the batch route


def test_a_batch_mixing_accepted_and_rejected_answers_each_in_order(
    http: TestClient, community: Community
) -> None:
    bob = Keypair.generate()
    unknown = Outpoint(bytes(32), 0)
    raws = [community.issue(), MALFORMED, community.spend(bob, (unknown,)), community.spend(bob)]
    answer = post_batch(http, raws)
    assert codes(answer) == [None, "malformed", "unknown_input", None]
    first, malformed, unknown_input, last = answer.json()["results"]
    assert set(first) == {"txid", "seq", "height"} and last["seq"] == first["seq"] + 1
    assert malformed["error"]["txid"] is None and unknown_input["error"]["txid"] is not None
    stored = http.get(f"/v1/transactions/{last['txid']}").json()
    assert (stored["seq"], stored["height"]) == (last["seq"], last["height"])


def test_the_later_of_two_equal_transactions_in_a_batch_is_a_duplicate(
    http: TestClient, community: Community
) -> None:
    issue = community.issue()
    answer = post_batch(http, [issue, issue])
    assert codes(answer) == [None, "duplicate"]
    accepted, duplicate = answer.json()["results"]
    assert duplicate["error"]["txid"] == accepted["txid"]


def test_the_later_of_two_spends_of_one_output_in_a_batch_is_a_double_spend(
    http: TestClient, community: Community
) -> None:
    answer = post_batch(
        http, [community.spend(Keypair.generate()), community.spend(community.meter)]
    )
    assert codes(answer) == [None, "double_spend"]


def test_a_batch_over_the_count_or_the_byte_limit_is_refused_whole(
    http: TestClient, community: Community
) -> None:
    size = community.ledger.size
    over_count = post_batch(http, [community.issue()] + [MALFORMED] * MAX_BATCH)
    over_bytes = http.post("/v1/transactions/batch", content=b"\n" * (MAX_BATCH_BYTES + 1))
    for answer in (over_count, over_bytes):
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"]["code"] == "too_large"
    assert community.ledger.size == size  # nothing of either was queued


def test_a_transaction_over_the_single_limit_is_refused_alone(
    http: TestClient, community: Community
) -> None:
    answer = post_batch(http, [b"x" * (MAX_TX_BYTES + 1), community.issue()])
    assert codes(answer) == ["too_large", None]
    assert answer.json()["results"][0]["error"]["txid"] is None


@pytest.mark.parametrize("body", [b"", b"\n"])
def test_an_empty_batch_is_a_bad_request(http: TestClient, body: bytes) -> None:
    answer = http.post("/v1/transactions/batch", content=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "bad_request"


def test_a_full_sequencer_queues_none_of_a_batch_and_answers_busy(
    http: TestClient, node: LedgerNode, community: Community, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(node.sequencer, InProcessSequencer)
    monkeypatch.setattr(ledger.api, "BUSY_WAIT_S", 0.05)
    node.sequencer.max_queued_blocks = 0  # as if the ledger were behind
    try:
        answer = post_batch(http, [community.issue(), community.issue()])
    finally:
        node.sequencer.max_queued_blocks = 4
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert answer.json()["error"]["code"] == "busy"
    assert post_batch(http, [community.issue()]).status_code == 200
    assert community.ledger.size == 3  # the regulation, the funding issue and the last one


def test_a_replica_refuses_batches_as_read_only(community: Community) -> None:
    replica = LedgerNode(community.ledger, primary="http://primary:7420")
    with TestClient(create_app(replica)) as http:
        answer = post_batch(http, [community.issue()])
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "read_only"
    assert "http://primary:7420" in answer.json()["error"]["message"]


# ---------------------------------------------------------------- the single route


def test_the_single_route_answers_as_docs_api_says(http: TestClient, community: Community) -> None:
    issue = community.issue()
    accepted = http.post("/v1/transactions", content=issue)
    assert accepted.status_code == 200
    assert accepted.headers["content-type"] == "application/json"
    assert set(accepted.json()) == {"txid", "seq", "height"}
    duplicate = http.post("/v1/transactions", content=issue)
    assert duplicate.status_code == 422
    assert duplicate.json() == {
        "error": {
            "code": "duplicate",
            "message": duplicate.json()["error"]["message"],
            "txid": accepted.json()["txid"],
        }
    }
    malformed = http.post("/v1/transactions", content=MALFORMED)
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "malformed"
    too_large = http.post("/v1/transactions", content=b"x" * (MAX_TX_BYTES + 1))
    assert too_large.status_code == 413
    assert too_large.json()["error"] == {
        "code": "too_large",
        "message": f"the body is over {MAX_TX_BYTES} bytes",
        "txid": None,
    }


def test_other_methods_and_paths_still_reach_fastapi(http: TestClient) -> None:
    assert http.get("/v1/genesis").status_code == 200
    assert http.put("/v1/transactions").json()["error"]["code"] == "bad_request"
    paths = http.get("/openapi.json").json()["paths"]
    assert "post" in paths["/v1/transactions"] and "get" in paths["/v1/transactions"]
    assert "post" in paths["/v1/transactions/batch"]


# ---------------------------------------------------------------- LedgerClient.submit_many


class Recording(httpx.BaseTransport):
    """The node's transport, counting batch requests; `lose` answers are dropped after the
    node did the work (a lost answer)."""

    def __init__(self, inner: httpx.BaseTransport, lose: int = 0) -> None:
        self.inner, self.lose, self.batches = inner, lose, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path.endswith("/batch"):
            self.batches += 1
            if self.lose:
                self.lose -= 1
                raise httpx.ReadError("connection reset", request=request)
        return response


def client_of(http: TestClient, transport: Recording) -> LedgerClient:
    client = LedgerClient(str(http.base_url), transport=transport)
    client.backoff_base_s = 0.0
    return client


def test_submit_many_splits_into_batches_and_answers_each_in_order(
    http: TestClient, community: Community, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger.batch, "MAX_BATCH", 2)  # the client's chunks only
    transport = Recording(http._transport)
    raws = [community.issue() for _ in range(4)] + [
        community.spend(Keypair.generate(), (Outpoint(bytes(32), 0),))
    ]
    outcomes = client_of(http, transport).submit_many(raws)
    assert transport.batches == 3
    assert all(isinstance(o, Submitted) for o in outcomes[:4])
    assert [o.seq for o in outcomes[:4] if isinstance(o, Submitted)] == [2, 3, 4, 5]
    rejected = outcomes[4]
    assert isinstance(rejected, LedgerRejected) and rejected.code is Code.UNKNOWN_INPUT


def test_submit_many_confirms_duplicates_after_a_lost_answer(
    http: TestClient, community: Community
) -> None:
    transport = Recording(http._transport, lose=1)
    issue = community.issue()
    first = http.post("/v1/transactions", content=issue).json()  # on the ledger before
    raws = [community.issue(), community.issue(), issue]
    outcomes = client_of(http, transport).submit_many(raws)
    assert transport.batches == 2
    assert all(isinstance(o, Submitted) for o in outcomes[:2])
    late = outcomes[2]  # a true duplicate is confirmed too: it is on the ledger
    assert isinstance(late, Submitted) and late.seq == first["seq"]


def test_submit_many_raises_a_refused_batch(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger.batch, "MAX_BATCH", 10 * MAX_BATCH)  # the client sends too many
    client = client_of(http, Recording(http._transport))
    with pytest.raises(LedgerError) as refused:
        client.submit_many([MALFORMED] * (MAX_BATCH + 1))
    assert (refused.value.status, refused.value.code) == (413, "too_large")
