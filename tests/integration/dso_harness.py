"""A DSO node over a real ledger node process: the service and its API in this process (so a
test can read its database and logs), the ledger in its own, both on loopback."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi.testclient import TestClient
from waiting import wait_until

from assets import Keypair, Output, encode_transaction
from assets.keyfile import dump_keys
from dso.api import create_app
from dso.auth import Role, new_token, token_hash
from dso.service import DsoService
from dso.store import DsoStore, Operator
from dso.throttle import TokenThrottle
from ledger.client import LedgerClient, Submitted
from simulation.processes import stop
from simulation.scenario import Scenario

from .nodes import serve_ledger

# A price policy for tests: a band of ±2 kW around zero, prices from 0.2 EUR/kWh.
TEST_POLICY = {
    "low_w": -2_000,
    "high_w": 2_000,
    "gain_ppm": 100_000,
    "max_change_ppm": 50_000,
    "min_price": 10_000,
    "max_price": 1_000_000,
    "default_price": 200_000,
}
INTERVAL_S = 2  # short enough for a test to watch a ban take effect, long enough to act within


@dataclass
class Dso:
    """A running DSO node and what a test needs around it."""

    scenario: Scenario
    ledger_url: str
    ledger_process: subprocess.Popen[bytes]
    ledger: LedgerClient
    store: DsoStore
    service: DsoService
    http: TestClient
    tokens: dict[str, str]  # role -> token
    database: Path
    nonces: dict[str, int] = field(default_factory=dict)

    def call(
        self, method: str, path: str, role: str | None = "admin", **kwargs: Any
    ) -> Any:  # the httpx response
        headers = {} if role is None else {"Authorization": f"Bearer {self.tokens[role]}"}
        return self.http.request(method, f"/v1{path}", headers=headers, **kwargs)

    def ok(self, method: str, path: str, role: str = "admin", **kwargs: Any) -> Any:
        answer = self.call(method, path, role, **kwargs)
        assert answer.status_code in (200, 201), answer.text
        return answer.json()

    def now(self) -> int:
        return self.service.now()

    def wait_interval(self, interval: int) -> None:
        """Return once the ledger's clock (the same as ours) is in `interval` or later."""
        while self.now() < interval:
            time.sleep(0.05)

    def issue(self, meter: str, key: Keypair, *outputs: Output) -> Submitted:
        """An issue by `meter`, submitted to the ledger (raises LedgerRejected if refused),
        once the DSO node has indexed its block."""
        self.nonces[meter] = self.nonces.get(meter, 0) + 1
        tx = self.scenario.issue(meter, key, self.nonces[meter], outputs)
        submitted = self.ledger.submit(encode_transaction(tx))
        assert self.service.follower.wait_for(submitted.height, 30)
        return submitted


@contextmanager
def running_dso(
    tmp_path: Path,
    dso_store: str | None = None,
    *,
    throttle: TokenThrottle | None = None,
) -> Iterator[Dso]:
    """A ledger node process (SQLite) and a DSO node over it, its database at `dso_store`
    (default: a SQLite file in `tmp_path`), with a token per role. `throttle` counts failed
    tokens (default: the node's own)."""
    scenario = Scenario(epoch=int(time.time()) - 10 * INTERVAL_S, interval_s=INTERVAL_S)
    genesis, keys = tmp_path / "genesis.json", tmp_path / "keys.json"
    genesis.write_bytes(scenario.genesis_raw)
    keys.write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    ledger_store = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    url, process = serve_ledger(genesis, keys, ledger_store, tmp_path / "ledger.log")
    database = tmp_path / "dso.sqlite"
    ledger = LedgerClient(url)
    store = DsoStore(dso_store or f"sqlite:///{database}")
    tokens = {role.value: new_token() for role in Role}
    with store.writing() as conn:
        for role, token in tokens.items():
            operator = Operator(f"test-{role}", role, int(time.time()), "test", None)
            store.add_operator(conn, operator, token_hash(token))
    service = DsoService(
        store, LedgerClient(url), scenario.genesis, scenario.dso, throttle=throttle
    )
    service.start()
    try:
        with TestClient(create_app(service, docs=True), raise_server_exceptions=False) as http:
            yield Dso(scenario, url, process, ledger, store, service, http, tokens, database)
    finally:
        service.close()
        store.close()
        ledger.close()
        stop(process)


@contextmanager
def serving(dso: Dso, port: int) -> Iterator[str]:
    """The DSO node's API under uvicorn on loopback `port`, in a thread; its URL. The port may
    be busy for a moment: a meter retrying a port nothing listens on can connect to itself
    (TCP simultaneous open, when the kernel picks that same port as the source), which holds
    it until the meter gives that attempt up; so a failed bind is tried again for 30 s."""
    deadline = time.monotonic() + 30
    while True:
        config = uvicorn.Config(
            create_app(dso.service), host="127.0.0.1", port=port, log_level="critical"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="test-dso-http", daemon=True)
        thread.start()

        def up_or_ended(s: uvicorn.Server = server, t: threading.Thread = thread) -> bool:
            return bool(s.started) or not t.is_alive()

        wait_until(up_or_ended, 30, f"the DSO on port {port}")
        if server.started:
            break
        assert time.monotonic() < deadline, f"port {port}: the DSO could not bind it in 30 s"
        time.sleep(0.5)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive()
