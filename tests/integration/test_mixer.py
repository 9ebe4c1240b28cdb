"""The mixer end to end: a ledger node and `petra mixer serve` in processes of their own, and
`MixClient`s in threads of this one, on loopback (DESIGN.md section 8, docs/mixer-api.md)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from mixer_network import BadSignature, FalseAccuser

from assets import Keypair, Outpoint, Output, Transfer, canonical_json, encode_transaction, sign
from assets.keyfile import dump_keys
from ledger.client import LedgerClient
from mixer.client import MixClient, MixError, MixResult, join_request
from mixer.protocol import Input, Kind, Message, Peer, peer_order
from simulation.bench.mixer import DENOMINATION, CoordinatorProcess, authorize_meter, fund, mix_all
from simulation.processes import stop
from simulation.scenario import Scenario

from .nodes import serve_ledger

INTERVAL_S = 1


@dataclass
class Chain:
    scenario: Scenario
    url: str
    genesis: Path
    meter: Keypair
    nonces: itertools.count[int]
    tmp: Path

    def fund(self, owners: list[Keypair]) -> list[Outpoint]:
        with LedgerClient(self.url) as ledger:
            return fund(ledger, self.scenario, self.meter, next(self.nonces), owners)


@pytest.fixture(scope="module", name="chain")
def chain_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """A ledger node on a chain of one-second intervals, with one meter authorized."""
    tmp = tmp_path_factory.mktemp("mixer")
    scenario = Scenario(epoch=int(time.time()) - 10 * INTERVAL_S, interval_s=INTERVAL_S)
    genesis, keys = tmp / "genesis.json", tmp / "keys.json"
    genesis.write_bytes(scenario.genesis_raw)
    keys.write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    url, process = serve_ledger(genesis, keys, f"sqlite:///{tmp / 'ledger.sqlite'}", tmp / "l.log")
    meter = Keypair.generate()
    try:
        with LedgerClient(url) as ledger:
            authorize_meter(ledger, scenario, meter)
        yield Chain(scenario, url, genesis, meter, itertools.count(1), tmp)
    finally:
        stop(process)


@contextmanager
def coordinator(chain: Chain, peers: int, log: Path, timeout_s: int = 10) -> Iterator[str]:
    """`petra mixer serve` for pools of exactly `peers`; its URL."""
    process = CoordinatorProcess(chain.genesis, chain.url, peers, log, timeout_s=timeout_s)
    try:
        process.wait_until_serving()
        yield process.url
    finally:
        process.stop()


def mixing(chain: Chain, url: str, owners: list[Keypair], ledger: LedgerClient) -> list[MixClient]:
    outpoints = chain.fund(owners)
    return [
        MixClient(url, ledger, chain.scenario.chain, owner, outpoint, DENOMINATION, timeout_s=120)
        for owner, outpoint in zip(owners, outpoints, strict=True)
    ]


def assert_paid(ledger: LedgerClient, results: list[MixResult]) -> None:
    """One transfer landed, and each peer's output key owns one of its outputs."""
    assert len({r.txid for r in results}) == 1
    assert len({r.output.public_key for r in results}) == len(results)
    for result in results:
        owned = ledger.unspent(result.output.public_key)
        assert [(o["tx"], o["address"]) for o in owned] == [
            (result.txid.hex(), result.output.public_key.hex())
        ]
        assert ledger.transaction(result.txid) is not None


def assert_nothing_links(clients: list[MixClient], results: list[MixResult], log: Path) -> None:
    """No peer saw another's output in clear before the final list, shuffles reached only the
    next peer, and the coordinator's log names no output."""
    outputs = {r.output.public_key.hex() for r in results}
    for client, result in zip(clients, results, strict=True):
        others = outputs - {result.output.public_key.hex()}
        index: int | None = None
        final_seen = False
        for event in client.events:
            if event["type"] == "start":
                owners = [p["owner"] for p in event["peers"]]
                index, final_seen = owners.index(client.key.public_key.hex()), False
            if event["type"] != "message":
                continue
            message = event["message"]
            if message["kind"] == Kind.SHUFFLE:
                assert message["sender"] in (index, (index or 0) - 1)
            if message["kind"] == Kind.FINAL:
                final_seen = True
            if not final_seen:
                seen = canonical_json(message).decode()
                assert not any(o in seen for o in others)
    log_text = log.read_text(errors="replace")
    assert not any(o in log_text for o in outputs)


@pytest.mark.parametrize(
    "peers", [2, 3, 10, pytest.param(50, marks=pytest.mark.slow)], ids=lambda n: f"{n}-peers"
)
def test_honest_peers_mix(chain: Chain, peers: int, tmp_path: Path) -> None:
    log = tmp_path / "coordinator.log"
    owners = [Keypair.generate() for _ in range(peers)]
    with LedgerClient(chain.url) as ledger, coordinator(chain, peers, log) as url:
        clients = mixing(chain, url, owners, ledger)
        _, results = mix_all(clients)
        assert_paid(ledger, results)
        assert all(r.runs == 1 and not r.excluded and r.bytes_sent > 0 for r in results)
        assert_nothing_links(clients, results, log)
        if peers >= 10:  # the outputs are not in the inputs' order (a chance of 1 in 10!)
            order = peer_order(Input(c.outpoint, c.key.public_key) for c in clients)
            stored = ledger.transaction(results[0].txid)
            assert stored is not None
            addresses = [o["address"] for o in stored["transaction"]["outputs"]]
            by_owner = {
                c.key.public_key: r.output.public_key.hex()
                for c, r in zip(clients, results, strict=True)
            }
            assert addresses != [by_owner[i.owner] for i in order]
        for client in clients:
            client.close()


def test_silent_peer_is_excluded(chain: Chain, tmp_path: Path) -> None:
    """A peer that joins and then never answers is named silent by the coordinator's timeout;
    the others run again without it and land."""
    log = tmp_path / "coordinator.log"
    owners = [Keypair.generate() for _ in range(3)]
    quiet = Keypair.generate()
    with LedgerClient(chain.url) as ledger, coordinator(chain, 4, log, timeout_s=2) as url:
        clients = mixing(chain, url, owners, ledger)
        (quiet_input,) = chain.fund([quiet])
        joined = httpx.post(
            f"{url}/v1/join",
            json=join_request(DENOMINATION, quiet_input, quiet, int(time.time())),
            timeout=10,
        )
        assert joined.status_code == 201, joined.text
        _, results = mix_all(clients)
        assert_paid(ledger, results)
        everyone = [Input(c.outpoint, c.key.public_key) for c in clients]
        silent = peer_order([*everyone, Input(quiet_input, quiet.public_key)]).index(
            Input(quiet_input, quiet.public_key)
        )
        for result in results:
            assert result.runs == 2
            assert list(result.excluded.values()) == [{silent: "silent past the timeout"}]
        assert ledger.unspent(quiet.public_key) != []
        for client in clients:
            client.close()


def mix_each(clients: list[MixClient]) -> list[MixResult | MixError]:
    """Run every client in a thread of its own; each one's result or error."""
    outcomes: list[MixResult | MixError | None] = [None] * len(clients)

    def mix(n: int) -> None:
        try:
            outcomes[n] = clients[n].run()
        except MixError as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=mix, args=(n,)) for n in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert all(o is not None for o in outcomes), "a client never ended"
    return [o for o in outcomes if o is not None]


def cheat_index(clients: list[MixClient], cheat: MixClient) -> int:
    inputs = [Input(c.outpoint, c.key.public_key) for c in clients]
    return peer_order(inputs).index(Input(cheat.outpoint, cheat.key.public_key))


def others_land_without(
    ledger: LedgerClient, clients: list[MixClient], culprit: int, reason: str
) -> None:
    """Mix every client: the first, the cheat, is excluded; the others land in run 2, each
    naming only the cheat, for `reason`."""
    outcomes = mix_each(clients)
    refused = outcomes[0]
    assert isinstance(refused, MixError) and refused.code == "excluded", refused
    results = [o for o in outcomes[1:] if isinstance(o, MixResult)]
    assert len(results) == len(clients) - 1, outcomes
    assert_paid(ledger, results)
    for result in results:
        assert result.runs == 2
        [named] = result.excluded.values()
        assert list(named) == [culprit] and named[culprit].startswith(reason), named
    for client in clients:
        client.close()


CHEATS: dict[str, tuple[Callable[..., Peer], str]] = {
    # after agreement: nobody reveals a key, the signed evidence names the cheat
    "bad-signature": (BadSignature, "signed the transfer with a signature that does not verify"),
    # before agreement: every peer reveals its key and the replay finds nothing wrong
    "false-accusation": (partial(FalseAccuser, at=Kind.ANNOUNCE), "blamed without cause"),
}


@pytest.mark.parametrize("cheat", sorted(CHEATS))
def test_a_cheat_is_named_and_the_others_land_without_it(
    chain: Chain, cheat: str, tmp_path: Path
) -> None:
    log = tmp_path / "coordinator.log"
    make_peer, reason = CHEATS[cheat]
    owners = [Keypair.generate() for _ in range(4)]
    with LedgerClient(chain.url) as ledger, coordinator(chain, 4, log) as url:
        clients = mixing(chain, url, owners, ledger)
        clients[0].make_peer = make_peer
        others_land_without(ledger, clients, cheat_index(clients, clients[0]), reason)
        assert ledger.unspent(owners[0].public_key) != []  # the cheat keeps its coin, unmixed


def test_a_double_spender_is_named_on_the_ledgers_word(chain: Chain, tmp_path: Path) -> None:
    """A peer that spends its input elsewhere just before it signs: the ledger refuses the
    mixed transfer, the coordinator finds the input spent, and the others run again and land."""
    log = tmp_path / "coordinator.log"
    owners = [Keypair.generate() for _ in range(4)]
    with LedgerClient(chain.url) as ledger, coordinator(chain, 4, log) as url:
        clients = mixing(chain, url, owners, ledger)
        spender = clients[0]
        elsewhere = Keypair.generate()

        class SpendsFirst(Peer):
            def _own(self, kind: Kind, body: Mapping[str, Any]) -> list[Message]:
                if kind is Kind.SIGN:
                    away = Transfer(
                        chain.scenario.chain,
                        (spender.outpoint,),
                        (Output(DENOMINATION, elsewhere.public_key),),
                    )
                    ledger.submit(encode_transaction(sign(away, self.key)))
                return super()._own(kind, body)

        spender.make_peer = SpendsFirst
        culprit = cheat_index(clients, spender)
        others_land_without(ledger, clients, culprit, "spent its input elsewhere (double spend)")
        assert len(ledger.unspent(elsewhere.public_key)) == 1
