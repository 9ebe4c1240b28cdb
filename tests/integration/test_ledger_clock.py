"""One ledger clock (service/clock.py) across real processes: a `petra ledger serve` and a
`petra bidstore serve` started with PETRA_CLOCK, from a start a month in the past and faster
than the wall clock. The ledger's blocks carry ledger time; a bid store at speed 1000 still
redeems a challenge taken two wall seconds before (its lifetime is wall time); and a malformed
PETRA_CLOCK stops `petra ledger serve` with one sentence."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from waiting import wait_until

from assets import Authorization, Epa, Keypair, Outpoint, encode_transaction, txid
from assets.keyfile import dump_keys
from bidstore.orders import Order, OrderSide, encode_order, sign_order
from ledger.client import LedgerClient
from service.clock import CLOCK_ENV, LedgerClock
from simulation.processes import HOST, PETRA, free_port, start_petra, stop, wait_serving
from simulation.scenario import Scenario, pay

from .nodes import serve_ledger

INTERVAL_S = 900  # a real 15-minute interval: 9 wall seconds at speed 100
MONTH_S = 30 * 86_400
METER = "clock-meter"


@dataclass
class Community:
    scenario: Scenario
    genesis: Path
    url: str
    start: float
    origin: float
    clock: LedgerClock  # the ledger node's, computed here from the same PETRA_CLOCK
    meter: Keypair

    def petra_clock(self, speed: float) -> dict[str, str]:
        return {CLOCK_ENV: f"start={self.start},speed={speed},origin={self.origin!r}"}

    def interval_now(self) -> int:
        return self.scenario.genesis.interval_at(int(self.clock.now()))


@pytest.fixture(scope="module", name="community")
def community_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Community]:
    """A ledger node whose clock started a month ago and runs 100 times as fast as the wall
    clock, with one meter authorized on it by that clock."""
    tmp = tmp_path_factory.mktemp("ledger-clock")
    origin = time.time()
    start = float(int(origin) - MONTH_S)
    scenario = Scenario(epoch=int(start) // INTERVAL_S * INTERVAL_S - 10 * INTERVAL_S)
    genesis, keys = tmp / "genesis.json", tmp / "keys.json"
    genesis.write_bytes(scenario.genesis_raw)
    keys.write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    community = Community(
        scenario, genesis, "", start, origin, LedgerClock(start, origin, 100), Keypair.generate()
    )
    url, process = serve_ledger(
        genesis,
        keys,
        f"sqlite:///{tmp / 'ledger.sqlite'}",
        tmp / "ledger.log",
        env=community.petra_clock(100),
    )
    community.url = url
    try:
        # In force from the interval after the regulation's time: some 2 to 20 wall seconds.
        at = scenario.genesis.interval_at(int(community.clock.now() + 200))
        authorization = Authorization(METER, community.meter.public_key, 10**6, 10**6)
        with LedgerClient(url) as ledger:
            ledger.submit(encode_transaction(scenario.regulate(at, authorize=[authorization])))
        wait_until(lambda: community.interval_now() > at, 30, "the authorization to be in force")
        yield community
    finally:
        stop(process)


def test_blocks_carry_ledger_time_not_wall_time(community: Community) -> None:
    with LedgerClient(community.url) as ledger:
        head = ledger.head()
    assert head is not None
    block_time = head.header.time
    ledger_now = community.clock.now()
    # The regulation's block was made a few wall seconds ago, at 100 ledger seconds a second.
    assert ledger_now - 100 * 60 <= block_time <= ledger_now + 100
    assert time.time() - block_time > MONTH_S - 100 * 60  # a month behind the wall clock


def test_a_bid_store_at_speed_1000_redeems_a_challenge_two_wall_seconds_old(
    community: Community, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "bidstore.log"
    process = start_petra(
        *("bidstore", "serve", "--genesis", str(community.genesis), "--ledger", community.url),
        *("--port", str(port)),
        log=log,
        env=community.petra_clock(1000),
    )
    url = f"http://{HOST}:{port}"
    try:
        wait_serving(url, process, log, probe="/v1/status", what="bid store")
        fast = LedgerClock(community.start, community.origin, 1000)
        with httpx.Client(base_url=url, timeout=30) as http:
            status = http.get("/v1/status").json()
            # Its intervals are those of its own, faster clock: 0.9 wall seconds each.
            expected = community.scenario.genesis.interval_at(int(fast.now()))
            assert abs(status["interval"] - expected) <= 2, (status, expected)

            # An ask for an interval well ahead of both clocks, on an EPA the meter issued.
            t = expected + 100_000
            seller = Keypair.generate()
            issue = community.scenario.issue(
                METER, community.meter, 1, [pay(Epa(1000, t, t), seller)]
            )
            with LedgerClient(community.url) as ledger:
                ledger.submit(encode_transaction(issue))

            answer = http.post("/v1/challenges")
            assert answer.status_code == 201, answer.text
            challenge = bytes.fromhex(answer.json()["challenge"])
            time.sleep(2)  # 2000 ledger seconds at speed 1000: longer than a challenge lives
            unsigned = Order(
                OrderSide.ASK,
                t,
                150_000,
                (Outpoint(txid(issue), 0),),
                "relay",
                Keypair.generate().public_key,
                seller.public_key,
                challenge,
            )
            posted = http.post("/v1/orders", content=encode_order(sign_order(unsigned, seller)))
            assert posted.status_code == 201, posted.text
    finally:
        stop(process)


@pytest.mark.parametrize(
    ("value", "problem"),
    [("start=1700000000", "it has no speed"), ("start=1,speed=0", "speed must be above 0")],
)
def test_a_malformed_clock_stops_the_ledger_with_one_sentence(
    community: Community, tmp_path: Path, value: str, problem: str
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_bytes(dump_keys({"sequencer-0": community.scenario.sequencer}, None))
    store = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    run = subprocess.run(
        [
            *PETRA,
            *("ledger", "serve", "--genesis", str(community.genesis), "--keys", str(keys)),
            *("--store", store, "--port", str(free_port())),
        ],
        env={"PATH": "/usr/bin:/bin", CLOCK_ENV: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"error: {CLOCK_ENV}={value!r} is malformed")
    assert problem in line and "Traceback" not in run.stderr
    assert not (tmp_path / "ledger.sqlite").exists()  # it stopped before opening anything
