"""The bid store end to end through a real private Tor network on loopback: `petra bidstore
serve --onion` publishes itself as a v3 onion service through the network's client tor, and
a seller and a buyer, each with an HTTP client of its own that reaches it only through Tor's
SOCKS port, post, take, propose, fetch and countersign; the trade lands on the ledger node."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from services.tor import tor_network_fixture  # noqa: F401

from assets import Transfer, encode_transaction, txid
from assets.codec import tx_from_wire
from assets.signing import sign_transfer
from bidstore.orders import OrderSide
from bidstore.tornet import TorNetwork

from .nodes import free_port, start_petra, stop
from .test_bidstore import (
    AHEAD,
    Chain,
    _wire,
    chain_fixture,  # noqa: F401  (its ledger node, for this module too)
    fetch,
    funded,
    order,
    post,
    wait_settled,
)

pytestmark = [pytest.mark.tor, pytest.mark.slow]
ONION = re.compile(r"onion service http://([a-z2-7]{56}\.onion)")
TOR_TIMEOUT_S = 120  # a first request through a fresh onion service builds several circuits


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


def through_tor(onion: str, network: TorNetwork) -> httpx.Client:
    """An HTTP client of the onion service that reaches it only through Tor's SOCKS port."""
    return httpx.Client(
        base_url=f"http://{onion}",
        proxy=f"socks5://127.0.0.1:{network.socks_port}",
        timeout=TOR_TIMEOUT_S,
    )


def test_two_clients_trade_through_the_onion_service(
    chain: Chain, tor_network: TorNetwork, onion_store: str
) -> None:
    t = chain.now() + AHEAD
    parties = funded(chain, 800, 1_000, t)
    with (
        through_tor(onion_store, tor_network) as seller,
        through_tor(onion_store, tor_network) as buyer,
    ):
        ask = order(seller, parties.seller, OrderSide.ASK, t, 120_000, [parties.epa])
        posted = post(seller, ask)
        assert posted.status_code == 201, posted.text
        listed = buyer.get(f"/v1/book/{t}").json()
        assert [a["id"] for a in listed["asks"]] == [posted.json()["id"]]

        bid = order(buyer, parties.buyer, OrderSide.BID, t, 150_000, [parties.eca, parties.fa])
        taken = buyer.post("/v1/takes", json={"order": posted.json()["id"], "taker": _wire(bid)})
        assert taken.status_code == 201, taken.text
        trade = taken.json()

        unsigned = tx_from_wire(trade["terms"]["transfer"])
        assert isinstance(unsigned, Transfer)
        proposal = sign_transfer(unsigned, [parties.buyer])
        proposed = buyer.post(
            f"/v1/trades/{trade['id']}/proposal",
            content=encode_transaction(proposal),
        )
        assert proposed.status_code == 201, proposed.text

        fetched = fetch(seller, trade["id"], parties.seller)
        assert fetched.status_code == 200, fetched.text
        relayed = tx_from_wire(fetched.json()["proposal"])
        assert relayed == proposal
        assert isinstance(relayed, Transfer)
        signed = sign_transfer(relayed, [parties.seller])
        chain.submit(signed)

        settled = wait_settled(buyer, trade["id"], parties.buyer)
    assert settled["status"] == "settled", settled
    assert settled["txid"] == txid(signed).hex()
