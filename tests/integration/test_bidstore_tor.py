"""The bid store end to end through a real private Tor network on loopback: `petra bidstore
serve --onion` publishes itself as a v3 onion service through the network's client tor, and
a seller and a buyer, each with a `BidStoreClient` of its own that reaches it only through
Tor's SOCKS port, post, take, propose, fetch and countersign; the trade lands on the ledger
node."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services.tor import tor_network_fixture  # noqa: F401
from test_cli import petra
from waiting import wait_until

from assets import Keypair
from bidstore.client import TOR_TIMEOUT_S, BidStoreClient
from bidstore.orders import OrderSide
from ledger.client import LedgerClient
from simulation.processes import free_port, start_petra, stop
from simulation.tornet import TorNetwork

from .test_bidstore import (
    AHEAD,
    Chain,
    chain_fixture,  # noqa: F401  (its ledger node, for this module too)
    funded,
)

pytestmark = [pytest.mark.tor, pytest.mark.slow]
ONION = re.compile(r"onion service http://([a-z2-7]{56}\.onion)")


@pytest.fixture
def onion_store(chain: Chain, tor_network: TorNetwork, tmp_path: Path) -> Iterator[str]:
    """`petra bidstore serve --onion` over the chain's ledger: its .onion address."""
    log = tmp_path / "bidstore.log"
    process: subprocess.Popen[bytes] = start_petra(
        *("bidstore", "serve", "--genesis", str(chain.genesis), "--ledger", chain.url),
        *("--port", str(free_port()), "--onion"),
        *("--tor-control", str(tor_network.control_port)),
        log=log,
    )
    try:
        deadline = time.monotonic() + TOR_TIMEOUT_S
        while (found := ONION.search(log.read_text(errors="replace"))) is None:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no onion service published: {log.read_text()}"
            time.sleep(0.2)
        yield found.group(1)
    finally:
        stop(process)


def test_two_clients_trade_through_the_onion_service(
    chain: Chain, tor_network: TorNetwork, onion_store: str
) -> None:
    t = chain.now() + AHEAD
    parties = funded(chain, 800, 1_000, t)
    anyone = Keypair.generate().public_key
    url = f"http://{onion_store}"
    with (
        BidStoreClient(url, tor_socks=tor_network.socks_port) as seller,
        BidStoreClient(url, tor_socks=tor_network.socks_port) as buyer,
        LedgerClient(chain.url) as ledger,
    ):
        ask = seller.place(OrderSide.ASK, parties.seller, t, 120_000, [parties.epa], anyone)
        assert [a["id"] for a in buyer.interval_book(t)["asks"]] == [ask["id"]]
        seen = petra(
            *("bidstore", "book", "--bidstore", onion_store, "--interval", str(t), "--json"),
            *("--tor-socks", str(tor_network.socks_port)),
        )
        assert seen.code == 0, seen  # the command line reads the book through Tor too
        assert [o["id"] for o in json.loads(seen.out)["orders"]] == [ask["id"]]

        bid = buyer.signed_order(
            OrderSide.BID, parties.buyer, t, 150_000, [parties.eca, parties.fa], anyone
        )
        trade = buyer.take(ask["id"], bid)
        assert buyer.propose_signed(trade["id"], parties.buyer)["status"] == "proposed"
        submitted = seller.countersign_and_submit(trade["id"], parties.seller, ledger)

        def answered() -> dict[str, Any] | None:
            found = buyer.fetch_trade(trade["id"], parties.buyer)
            return found if found["status"] != "proposed" else None

        settled = wait_until(answered, 30, "the ledger's answer to the trade", interval_s=0.2)
    assert settled["status"] == "settled", settled
    assert settled["txid"] == submitted.txid.hex()
