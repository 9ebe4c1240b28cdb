"""Hostile input against the real `petra dso serve` process: the shared corpus of hostile
bodies (tests/hostile.py) and hypothesis-generated JSON on every route, strict types, failed
tokens throttled and logged in aggregate, the last admin kept and an offline recovery, and the
database readable by its owner only. Whatever is sent: no 5xx, no traceback in the node's log,
and the node answers honestly afterwards."""

from __future__ import annotations

import re
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hostile import (
    assert_no_traceback,
    assert_refused_cleanly,
    hostile_json,
    json_bytes,
    send_corpus,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets.keyfile import dump_keys
from dso.auth import new_token
from dso.throttle import FAILURES_PER_WINDOW
from simulation.processes import free_port, start_petra, stop
from simulation.scenario import Scenario

from .nodes import serve_ledger
from .test_dso_cli import INTERVAL_S, PASSPHRASE, petra, wait_dso

PATH_VALUES = {
    "{name}": "nobody",
    "{meter}": "m1",
    "{bill_id}": "00" * 32,
    "{proposal_id}": "1",
}


@dataclass
class Ledger:
    url: str
    scenario: Scenario
    folder: Path
    genesis: Path
    keys: Path
    passphrase_file: Path


@dataclass
class Node:
    """A `petra dso serve` process, its database, log and admin token."""

    url: str
    process: subprocess.Popen[bytes]
    store: str
    database: Path
    log: Path
    admin: str

    def request(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token or self.admin}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    folder = tmp_path_factory.mktemp("dso-hostile")
    scenario = Scenario(epoch=int(time.time()) - 20, interval_s=INTERVAL_S)
    genesis, ledger_keys = folder / "genesis.json", folder / "ledger-keys.json"
    keys, passphrase_file = folder / "dso-keys.json", folder / "passphrase"
    genesis.write_bytes(scenario.genesis_raw)
    ledger_keys.write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    keys.write_bytes(dump_keys({"dso-0": scenario.dso}, PASSPHRASE))
    passphrase_file.write_bytes(PASSPHRASE + b"\n")
    url, process = serve_ledger(
        genesis, ledger_keys, f"sqlite:///{folder / 'ledger.sqlite'}", folder / "ledger.log"
    )
    try:
        yield Ledger(url, scenario, folder, genesis, keys, passphrase_file)
    finally:
        stop(process)


def init_store(ledger: Ledger, name: str) -> tuple[str, Path, str]:
    """A DSO database made by `petra dso init`: its URL, its file and the admin's token."""
    database = ledger.folder / f"{name}.sqlite"
    token_file = ledger.folder / f"{name}.admin-token"
    store = f"sqlite:///{database}"
    made = petra("dso", "init", "--store", store, "--token-out", token_file)
    assert made.code == 0, made
    return store, database, token_file.read_text().strip()


def start_node(ledger: Ledger, store: str, database: Path, admin: str, log: Path) -> Node:
    port = free_port()
    process = start_petra(
        *("dso", "serve", "--genesis", str(ledger.genesis), "--keys", str(ledger.keys)),
        *("--passphrase-file", str(ledger.passphrase_file), "--ledger", ledger.url),
        *("--store", store, "--port", str(port), "--docs"),
        log=log,
    )
    url = f"http://127.0.0.1:{port}"
    wait_dso(url, process, log)
    return Node(url, process, store, database, log, admin)


@pytest.fixture(scope="module")
def node(ledger: Ledger) -> Iterator[Node]:
    store, database, admin = init_store(ledger, "dso")
    found = start_node(ledger, store, database, admin, ledger.folder / "dso.log")
    try:
        yield found
    finally:
        stop(found.process)


def routes(node: Node) -> list[tuple[str, str, bool]]:
    """Every operation of the node's OpenAPI document: method, concrete path, takes a body."""
    document = httpx.get(f"{node.url}/openapi.json", timeout=30).json()
    found = []
    for path, operations in document["paths"].items():
        concrete = path
        for placeholder, value in PATH_VALUES.items():
            concrete = concrete.replace(placeholder, value)
        assert "{" not in concrete, f"give PATH_VALUES a value for {path}"
        for method, operation in operations.items():
            found.append((method.upper(), concrete, "requestBody" in operation))
    assert len(found) >= 28, "the schema lost operations"
    return found


def assert_honest(node: Node) -> None:
    """The node still reads and still regulates."""
    status = node.request("GET", "/v1/status")
    assert status.status_code == 200, status.text
    price = node.request("PUT", "/v1/tariff", json={"price_consumption": 210_000})
    assert price.status_code == 201, price.text
    assert price.json()["status"] == "accepted"


# ---------------------------------------------------------------- the corpus, hypothesis


def test_the_corpus_on_every_route_gets_refusals_and_no_traceback(node: Node) -> None:
    failures = []
    headers = {"Authorization": f"Bearer {node.admin}"}
    with httpx.Client(base_url=node.url, timeout=120) as client:
        for method, path, _ in routes(node):
            failures += send_corpus(client, method, path, headers)
    assert not failures, "\n".join(failures)
    assert_honest(node)
    assert_no_traceback(node.log)


def test_generated_json_on_every_body_gets_refusals_and_no_traceback(node: Node) -> None:
    with_body = [(m, p) for m, p, body in routes(node) if body]
    assert len(with_body) >= 8
    headers = {"Authorization": f"Bearer {node.admin}", "content-type": "application/json"}
    with httpx.Client(base_url=node.url, timeout=60) as client:

        @given(route=st.sampled_from(with_body), value=hostile_json())
        @settings(
            max_examples=300,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def run(route: tuple[str, str], value: Any) -> None:
            method, path = route
            answer = client.request(method, path, content=json_bytes(value), headers=headers)
            assert_refused_cleanly(answer, f"{method} {path} {json_bytes(value)[:200]!r}")

        run()
    assert_honest(node)
    assert_no_traceback(node.log)


# ---------------------------------------------------------------- strict types


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/bills/reconcile", {"first": 0, "last": False}),
        ("POST", "/v1/bills/reconcile", {"first": True, "last": 1}),
        ("PUT", "/v1/controller", {"auto": 0}),
        ("PUT", "/v1/controller", {"auto": "true"}),
        ("PUT", "/v1/tariff", {"price_consumption": True}),
        ("PUT", "/v1/tariff", {"price_consumption": 1.0}),
        ("PUT", "/v1/tariff", {"price_consumption": "200000"}),
        ("PUT", "/v1/limits/default", {"max_epa": 1, "max_eca": 1, "time": False}),
        ("POST", "/v1/meters/m1/ban", {"time": 1.0}),
    ],
)
def test_a_body_value_of_another_json_type_is_refused(
    node: Node, method: str, path: str, body: dict[str, Any]
) -> None:
    answer = node.request(method, path, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize("value", ["+0.0", "+0", "0.0", "1e3", "007", " 1", "0x10", "\uff11"])
@pytest.mark.parametrize("path", ["/v1/meters", "/v1/tariff", "/v1/schedule", "/v1/forecast"])
def test_a_query_integer_is_decimal_digits_only(node: Node, path: str, value: str) -> None:
    param = "first" if path in ("/v1/schedule", "/v1/forecast") else "interval"
    answer = node.request("GET", path, params={param: value})
    assert answer.status_code == 400, answer.text
    assert "whole number" in answer.json()["error"]["message"]
    assert node.request("GET", path, params={param: "-3"}).status_code == 200


def test_a_path_or_paging_integer_is_decimal_digits_only(node: Node) -> None:
    for path, params in [
        ("/v1/controller/proposals/+1/accept", None),
        ("/v1/controller/proposals/1.0/accept", None),
        ("/v1/audit", {"after": "+0"}),
        ("/v1/audit", {"limit": "1e2"}),
    ]:
        method = "POST" if path.endswith("accept") else "GET"
        answer = node.request(method, path, params=params)
        assert answer.status_code == 400, f"{path} {params}: {answer.text}"


# ---------------------------------------------------------------- the database


def test_the_database_and_its_companions_are_its_owners_only(node: Node) -> None:
    assert_honest(node)  # something written, so the -wal and -shm files exist
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{node.database}{suffix}")
        assert path.exists(), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))


# ---------------------------------------------------------------- failed tokens


def test_failed_tokens_are_throttled_and_logged_once_per_window(ledger: Ledger) -> None:
    """300 made-up tokens from one address: a few 401s, then 429 with Retry-After, none of
    them a log line of its own; the count is logged in one line when the window is over (at
    the latest when the node stops). Another address is not throttled meanwhile."""
    store, database, admin = init_store(ledger, "dso-tokens")
    log = ledger.folder / "dso-tokens.log"
    node = start_node(ledger, store, database, admin, log)
    try:
        statuses = []
        with httpx.Client(base_url=node.url, timeout=30) as client:
            for _ in range(300):
                answer = client.get(
                    "/v1/whoami", headers={"Authorization": f"Bearer {new_token()}"}
                )
                assert_refused_cleanly(answer, "a made-up token")
                statuses.append(answer.status_code)
                if answer.status_code == 429:
                    assert answer.json()["error"]["code"] == "too_many_requests"
                    wait = int(answer.headers["retry-after"])
                    assert 1 <= wait <= 60
        assert statuses[:FAILURES_PER_WINDOW] == [401] * FAILURES_PER_WINDOW
        assert set(statuses[FAILURES_PER_WINDOW:]) == {429}
        # The throttle counts addresses: the admin's valid token from this one waits too.
        assert node.request("GET", "/v1/whoami").status_code == 429
        assert "tokens refused" not in log.read_text()
    finally:
        stop(node.process)
    said = [line for line in log.read_text().splitlines() if "tokens refused" in line]
    # one warning of the node's log (`petra.console.configure_logging`: date, time, role, level)
    lines = [re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d dso WARNING ", "", line) for line in said]
    assert lines == [
        "operator tokens refused from 127.0.0.1: 301 within 60 s (a token this node never "
        f"issued: {FAILURES_PER_WINDOW}, refused unchecked while throttled: "
        f"{301 - FAILURES_PER_WINDOW})"
    ]
    assert_no_traceback(log)


# ---------------------------------------------------------------- the last admin


def test_the_last_admin_is_kept_and_recovered_offline(ledger: Ledger) -> None:
    store, database, admin = init_store(ledger, "dso-admins")
    log = ledger.folder / "dso-admins.log"
    node = start_node(ledger, store, database, admin, log)
    try:
        refused = node.request("DELETE", "/v1/operators/admin")
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "last_admin"
        assert "add another admin" in refused.json()["error"]["message"]
        assert node.request("GET", "/v1/whoami").json() == {"name": "admin", "role": "admin"}
        # With a second admin, either may go, but not both.
        second = node.request("POST", "/v1/operators", json={"name": "ann", "role": "admin"})
        assert second.status_code == 201, second.text
        assert node.request("DELETE", "/v1/operators/admin").status_code == 200
        ann = second.json()["token"]
        last = node.request("DELETE", "/v1/operators/ann", token=ann)
        assert last.status_code == 409 and last.json()["error"]["code"] == "last_admin"
        # Recovery refuses while the node serves the database.
        running = petra("dso", "admin", "recover", "--store", store)
        assert running.code == 2, running
        assert f"the DSO store {store} is held by `petra dso serve` (pid {node.process.pid}" in (
            running.err.replace("\n", "")
        )
    finally:
        stop(node.process)
    # Suppose ann's token is lost: nobody can administer. Offline, with the node stopped:
    token_file = ledger.folder / "recovered.token"
    recovered = petra(
        *("dso", "admin", "recover", "--store", store, "--admin", "bob"),
        *("--token-out", token_file),
    )
    assert recovered.code == 0, recovered
    assert "while no node served it" in recovered.err.replace("\n", " ")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    again = petra("dso", "admin", "recover", "--store", store, "--admin", "bob")
    assert again.code == 2 and "exists already" in again.err, again
    node = start_node(ledger, store, database, admin, ledger.folder / "dso-admins-2.log")
    try:
        bob = token_file.read_text().strip()
        assert node.request("GET", "/v1/whoami", token=bob).json() == {
            "name": "bob",
            "role": "admin",
        }
        entries = node.request("GET", "/v1/audit", token=bob).json()["entries"]
        assert [e["action"] for e in entries if e["target"] == "bob"] == ["operator.recover"]
        assert node.request("GET", "/v1/audit/verify", token=bob).json()["intact"] is True
    finally:
        stop(node.process)


def test_recovery_refuses_a_database_that_does_not_exist_or_has_no_operator(
    tmp_path: Path,
) -> None:
    missing = f"sqlite:///{tmp_path / 'missing.sqlite'}"
    run = petra("dso", "admin", "recover", "--store", missing)
    assert run.code == 2 and "petra dso init" in run.err, run
    assert not (tmp_path / "missing.sqlite").exists()
