"""`smartmeter.api`, the owner's local API, against a real `petra ledger serve` process: signed
withdrawals land on the ledger, refused ones leave it untouched, every unsigned, foreign,
stale or replayed request is refused, issue nonces only grow, deposit addresses never repeat."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from assets import Authorization, Eca, Epa, Fa, Keypair, canonical_json
from assets.codec import asset_to_wire
from assets.keyfile import dump_keys
from ledger.client import LedgerClient
from simulation.processes import free_port, stop
from simulation.scenario import Scenario
from smartmeter.api import OwnerService, create_app, sign_request
from smartmeter.deposits import deposit_key
from smartmeter.ledger_index import MeterLedgerIndex
from smartmeter.store import MeterStore

from .nodes import authorize_now, serve_ledger

SEED = bytes(range(32))  # the meter's deposit seed
LIMIT = 10**6  # MAXEPA and MAXECA, W
CREDIT = 5_000  # the owner's credit line, micro-units
FAR = 10**6  # an interval far ahead, where nothing was issued yet
WAIT_S = 30


@dataclass
class Meter:
    scenario: Scenario
    client: LedgerClient
    store: MeterStore
    ledger_index: MeterLedgerIndex
    key: Keypair
    owner: Keypair
    process: subprocess.Popen[bytes]
    http: TestClient = field(init=False)

    def desk(
        self, store: MeterStore | None = None, client: LedgerClient | None = None
    ) -> OwnerService:
        return OwnerService(
            store or self.store,
            self.ledger_index,
            client or self.client,
            self.scenario.chain,
            "m1",
            self.key,
            self.owner.public_key,
            CREDIT,
        )

    def tree_size(self) -> int:
        head = self.client.head()
        assert head is not None
        return head.header.tree_size


def body(path: str, key: Keypair, meter: str = "m1", at: int | None = None, **fields: Any) -> bytes:
    unsigned = {
        "v": 1,
        "path": path,
        "meter": meter,
        "at": int(time.time()) if at is None else at,
        "nonce": secrets.token_hex(16),
        **fields,
    }
    return sign_request(unsigned, key)


def outputs(owner: Keypair, *assets: Epa | Eca | Fa) -> list[dict[str, Any]]:
    return [{"asset": asset_to_wire(a), "address": owner.public_key.hex()} for a in assets]


def withdraw(http: TestClient, owner: Keypair, *assets: Epa | Eca | Fa) -> Any:
    wanted = outputs(owner, *assets)
    return http.post("/v1/withdrawals", content=body("/v1/withdrawals", owner, outputs=wanted))


def refused(answer: Any, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error"} and answer.json()["error"]["code"] == code


@pytest.fixture
def meter(tmp_path: Path) -> Iterator[Meter]:
    """Meter m1 authorized on a real ledger node, its ledger index following, its owner's API."""
    scenario = Scenario(epoch=int(time.time()) - 10, interval_s=1)
    key, owner = Keypair.generate(), Keypair.generate()
    genesis, keys = tmp_path / "genesis.json", tmp_path / "keys.json"
    genesis.write_bytes(scenario.genesis_raw)
    keys.write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    url, process = serve_ledger(
        genesis, keys, f"sqlite:///{tmp_path}/ledger.sqlite", tmp_path / "node.log"
    )
    authorize_now(url, scenario, [Authorization("m1", key.public_key, LIMIT, LIMIT)])
    client = LedgerClient(url)
    store = MeterStore(f"sqlite:///{tmp_path}/meter.sqlite")
    ledger_index = MeterLedgerIndex(client, store, scenario.genesis, "m1", SEED, lookahead=5)
    ledger_index.start()
    head = client.head()
    assert head is not None
    # the owner's API checks withdrawals against the ledger index: let it see the authorization
    assert ledger_index.wait_for(head.header.height, WAIT_S), ledger_index.problem
    found = Meter(scenario, client, store, ledger_index, key, owner, process)
    try:
        with TestClient(create_app(found.desk()), raise_server_exceptions=False) as http:
            found.http = http
            yield found
    finally:
        ledger_index.stop()
        stop(process)


def test_a_withdrawal_within_the_limits_is_issued_to_the_owner(meter: Meter) -> None:
    epa = Epa(LIMIT - 1, FAR, FAR + 3)
    answer = withdraw(meter.http, meter.owner, epa, Fa(CREDIT))
    assert answer.status_code == 201, answer.text
    made = answer.json()
    assert made["outputs"] == outputs(meter.owner, epa, Fa(CREDIT))
    stored = meter.client.transaction(bytes.fromhex(made["txid"]))
    assert stored is not None and stored["height"] == made["height"]
    issue = stored["transaction"]
    assert (issue["type"], issue["meter"], issue["nonce"]) == ("issue", "m1", made["nonce"])
    assert issue["outputs"] == made["outputs"]
    assert meter.ledger_index.height >= made["height"]  # indexed before the answer

    status = meter.http.post("/v1/status", content=body("/v1/status", meter.owner))
    assert status.status_code == 200, status.text
    shown = status.json()
    genesis = meter.ledger_index.genesis
    assert shown["interval_start"] == genesis.epoch + shown["interval"] * genesis.interval_s
    assert shown | {"interval": 0, "interval_start": 0} == {
        "meter": "m1",
        "height": meter.ledger_index.height,
        "interval": 0,
        "interval_start": 0,
        "currency": genesis.currency,
        "closing_delay_s": 60,
        "credit_used": CREDIT,
        "credit_line": CREDIT,
        "price_consumption": None,
        "price_production": None,
        "watcher_problem": None,
        "ledger_error": None,
    }


def test_a_withdrawal_over_a_limit_or_the_credit_line_is_refused_and_not_issued(
    meter: Meter,
) -> None:
    first = withdraw(meter.http, meter.owner, Epa(500, FAR, FAR), Fa(1_000))
    assert first.status_code == 201, first.text
    size = meter.tree_size()
    refused(withdraw(meter.http, meter.owner, Epa(LIMIT - 500, FAR, FAR)), 422, "limit_exceeded")
    refused(withdraw(meter.http, meter.owner, Eca(LIMIT, FAR, FAR)), 422, "limit_exceeded")
    refused(withdraw(meter.http, meter.owner, Fa(CREDIT - 999)), 422, "credit_exceeded")
    answer = withdraw(meter.http, meter.owner, Fa(1), Eca(LIMIT, FAR + 1, FAR + 1))
    refused(answer, 422, "limit_exceeded")
    assert "MAXECA" in answer.json()["error"]["message"]
    assert meter.tree_size() == size
    assert withdraw(meter.http, meter.owner, Fa(CREDIT - 1_000)).status_code == 201


def test_requests_not_signed_by_the_owner_now_for_this_meter_are_refused(meter: Meter) -> None:
    http, owner, path = meter.http, meter.owner, "/v1/status"
    good = body(path, owner)
    assert http.post(path, content=good).status_code == 200
    refused(http.post(path, content=good), 401, "replayed")

    forged = json.loads(body(path, owner))
    forged["signature"] = ("1" if forged["signature"][0] == "0" else "0") + forged["signature"][1:]
    refused(http.post(path, content=canonical_json(forged)), 401, "bad_signature")
    refused(http.post(path, content=body(path, Keypair.generate())), 401, "bad_signature")
    refused(
        http.post(path, content=body(path, owner, at=int(time.time()) - 120)), 401, "stale_request"
    )
    refused(
        http.post(path, content=body(path, owner, at=int(time.time()) + 120)), 401, "stale_request"
    )
    refused(http.post(path, content=body(path, owner, meter="m2")), 422, "wrong_meter")
    # Signed for the status, sent as a withdrawal or for a deposit address: not its request.
    refused(http.post("/v1/deposit-addresses", content=body(path, owner)), 400, "malformed")

    spaced = body(path, owner).replace(b',"path"', b', "path"')
    refused(http.post(path, content=spaced), 400, "malformed")
    refused(http.post(path, content=b"not json"), 400, "malformed")
    refused(http.post(path, content=body(path, owner, extra=1)), 400, "malformed")
    bad_address = [{"asset": asset_to_wire(Fa(1)), "address": "00"}]
    answer = http.post(
        "/v1/withdrawals", content=body("/v1/withdrawals", owner, outputs=bad_address)
    )
    refused(answer, 400, "malformed")
    refused(http.post(path, content=b"{" + b" " * 70_000 + b"}"), 413, "too_large")


def test_issue_nonces_only_grow_and_a_new_desk_continues_above_them(
    meter: Meter, tmp_path: Path
) -> None:
    first = withdraw(meter.http, meter.owner, Fa(1)).json()["nonce"]
    second = withdraw(meter.http, meter.owner, Fa(2)).json()["nonce"]
    assert first < second

    with TestClient(create_app(meter.desk()), raise_server_exceptions=False) as again:
        answer = withdraw(again, meter.owner, Fa(3))
    assert answer.status_code == 201, answer.text
    assert answer.json()["nonce"] > second

    # A meter whose state was lost signs a nonce the ledger already saw: the ledger's code.
    lost = meter.desk(MeterStore(f"sqlite:///{tmp_path}/lost.sqlite"))
    with TestClient(create_app(lost), raise_server_exceptions=False) as forgetful:
        refused(withdraw(forgetful, meter.owner, Fa(4)), 422, "stale_nonce")

    # The ledger out of reach: 503, and the nonce signed for it is never signed again.
    size = meter.tree_size()
    away = meter.desk(client=LedgerClient(f"http://127.0.0.1:{free_port()}", retries=0))
    with TestClient(create_app(away), raise_server_exceptions=False) as cut_off:
        refused(withdraw(cut_off, meter.owner, Fa(5)), 503, "ledger_unavailable")
    assert meter.tree_size() == size
    answer = withdraw(meter.http, meter.owner, Fa(6))
    assert answer.status_code == 201, answer.text
    assert answer.json()["nonce"] > second + 2


def test_deposit_addresses_are_new_each_time_and_bills_are_listed(meter: Meter) -> None:
    path = "/v1/deposit-addresses"
    handed = [meter.http.post(path, content=body(path, meter.owner)) for _ in range(2)]
    assert [a.status_code for a in handed] == [201, 201]
    assert [a.json() for a in handed] == [
        {"address": deposit_key(SEED, n).public_key.hex(), "index": n} for n in (0, 1)
    ]

    bill = {"meter": "m1", "interval": 7}
    assert meter.store.enqueue("bill", "bill/m1/7", canonical_json(bill))
    answer = meter.http.post("/v1/bills", content=body("/v1/bills", meter.owner))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "currency": meter.ledger_index.genesis.currency,
        "pending": 1,
        "due": [{"key": "bill/m1/7", "attempts": 0, "last_error": None, "bill": bill}],
    }
