"""A small energy community on loopback, every service a real process: a ledger node and the
DSO node over it (`running_dso`), two homes, each a `petra meter run` daemon reading its own
simulated SDM630 and SunSpec inverter and authorized at the DSO under its own meter id, a
`petra mixer serve` coordinator for pools of two, and a `petra bidstore serve` (published as an
onion service on the private Tor network when one is given). A third meter, the neighbours',
issues from the test itself: it funds wallets that mix alongside the homes'.

The DSO node's API is served on loopback for the community's whole life, so both meters
deliver their bills as they close them. The meters' key files are sealed with PASSPHRASE: the
caller sets `PETRA_PASSPHRASE` to it before `running_community`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.mosquitto import Mosquitto

from assets import Keypair, decode_transaction
from assets.keyfile import dump_keys
from bidstore.client import TOR_TIMEOUT_S
from ledger.client import LedgerClient
from simulation.bench.mixer import CoordinatorProcess
from simulation.devices import SimulatedSdm630, SimulatedSunSpecInverter
from simulation.processes import free_port, start_petra, stop, wait_serving
from simulation.tornet import TorNetwork
from smartmeter.owner_client import OwnerClient
from wallet.keystore import Contents
from wallet.wallet import Services

from .dso_harness import Dso, running_dso, serving
from .test_meter_daemon import METER, Home

PASSPHRASE = "community test passphrase"
PRICE_CONSUMPTION = 250_000  # the DSO's tariff, micro-units per kWh
PRICE_PRODUCTION = 60_000
MAX_W = 10_000  # every meter's MAXEPA and MAXECA
NEIGHBOUR_METER = "ES0021000000000009NB"
MIX_PEERS = 2
MIX_STEP_TIMEOUT_S = 60  # the coordinator's per-step timeout: generous on a loaded machine
ONION = re.compile(r"onion service http://([a-z2-7]{56}\.onion)")


@dataclass
class CommunityHome(Home):
    """A home of the community: `Home` under a meter id of its own."""

    meter_id: str = METER
    seed: bytes = bytes(32)  # its wallet's seed: key 0 is the meter's owner

    def configure(self, *, max_gap_s: int = 60, submeter: bool = False) -> Path:
        config = super().configure(max_gap_s=max_gap_s, submeter=submeter)
        text = config.read_text().replace(f'id = "{METER}"', f'id = "{self.meter_id}"')
        config.write_text(text.replace('node = "home1"', f'node = "{self.meter_id.lower()}"'))
        return config

    def owner_client(self) -> OwnerClient:
        return OwnerClient(self.meter_id, self.owner, self.meter_url)

    @property
    def meter_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


@dataclass
class Community:
    """The running community and what a test needs to reach it."""

    dso: Dso
    seller: CommunityHome
    buyer: CommunityHome
    neighbour_key: Keypair
    mixer_url: str
    bidstore_url: str
    tor_socks: int | None
    logs: list[Path] = field(default_factory=list)

    @property
    def interval_s(self) -> int:
        return self.dso.scenario.interval_s

    def services(self, home: CommunityHome | None) -> Services:
        """What a wallet of `home` (or of a neighbour, with no meter) talks to."""
        return Services(
            self.dso.ledger_url,
            meter_url=None if home is None else home.meter_url,
            meter_id=None if home is None else home.meter_id,
            mixer=self.mixer_url,
            bidstore=self.bidstore_url,
            tor_socks=self.tor_socks,
        )

    def bills(self, meter_id: str, first: int, last: int) -> dict[int, dict[str, Any]]:
        """The DSO's bills of `meter_id` for intervals `first` to `last`, by interval."""
        params = {"meter": meter_id, "first": first, "last": last}
        answer = self.dso.ok("GET", "/bills", params=params)["bills"]
        return {b["interval"]: b for b in answer}

    def log_text(self) -> str:
        homes = self.seller.log_text() + self.buyer.log_text()
        return homes + "".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in self.logs)


def _home(
    dso: Dso, tmp: Path, broker: Mosquitto, meter_id: str, seed: bytes, dso_port: int
) -> CommunityHome:
    """A home's directory (its genesis and sealed meter key), devices and daemon (not started)."""
    tmp.mkdir()
    shutil.copy(tmp.parent / "genesis.json", tmp / "genesis.json")
    meter_key = Keypair.generate()
    (tmp / "meter-keys.json").write_bytes(dump_keys({"meter": meter_key}, PASSPHRASE.encode()))
    grid, pv = SimulatedSdm630(clock=time.time), SimulatedSunSpecInverter(clock=time.time)
    return CommunityHome(
        dso,
        tmp,
        broker,
        meter_key,
        Contents(seed, {}).key(0),
        grid,
        pv,
        free_port(),
        dso_port,
        f"sqlite:///{tmp / 'meter.sqlite'}",
        meter_id=meter_id,
        seed=seed,
    )


def _register(dso: Dso, meter_id: str, key: Keypair, owner: str) -> int:
    """Authorize `meter_id` under `key` at the DSO; the interval it takes effect from."""
    body = {"meter": meter_id, "public_key": key.public_key.hex(), "owner": owner}
    answer = dso.ok("POST", "/meters", json={**body, "max_epa": MAX_W, "max_eca": MAX_W})
    return int(answer["effective_from"])


def _bidstore(
    tmp: Path, dso: Dso, tor: TorNetwork | None
) -> tuple[subprocess.Popen[bytes], Path, str]:
    """`petra bidstore serve` over the ledger (as an onion service with `tor`): the process,
    its log and the URL wallets use."""
    log, port = tmp / "bidstore.log", free_port()
    args = ["bidstore", "serve", "--genesis", str(tmp / "genesis.json"), "--ledger"]
    args += [dso.ledger_url, "--port", str(port), "--rate", "1000", "--burst", "1000"]
    args += ["--metrics-port", "0"]  # none: the tests' services share one machine
    if tor is not None:
        args += ["--onion", "--tor-control", str(tor.control_port)]
    process = start_petra(*args, log=log)
    if tor is None:
        url = f"http://127.0.0.1:{port}"
        wait_serving(url, process, log)
        return process, log, url
    deadline = time.monotonic() + TOR_TIMEOUT_S
    while (found := ONION.search(log.read_text(errors="replace"))) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise AssertionError(f"no onion service published: {log.read_text()}")
        time.sleep(0.2)
    return process, log, f"http://{found.group(1)}"


@contextmanager
def running_community(
    tmp: Path, broker: Mosquitto, tor: TorNetwork | None = None
) -> Iterator[Community]:
    """The community, its meters authorized and in force, both daemons measuring (the seller's
    home a net producer, the buyer's a consumer) and delivering bills, the mixer and the bid
    store serving."""
    with ExitStack() as stack:
        dso = stack.enter_context(running_dso(tmp))
        dso.ok(
            "PUT",
            "/tariff",
            json={"price_consumption": PRICE_CONSUMPTION, "price_production": PRICE_PRODUCTION},
        )
        dso_port = free_port()
        seller = _home(dso, tmp / "seller", broker, "ES0021000000000001SL", bytes(32), dso_port)
        buyer = _home(dso, tmp / "buyer", broker, "ES0021000000000002BY", bytes([1] * 32), dso_port)
        neighbour_key = Keypair.generate()
        in_force = max(
            _register(dso, seller.meter_id, seller.meter_key, "seller"),
            _register(dso, buyer.meter_id, buyer.meter_key, "buyer"),
            _register(dso, NEIGHBOUR_METER, neighbour_key, "neighbours"),
        )
        dso.wait_interval(in_force)
        stack.enter_context(serving(dso, dso_port))

        # The seller's roof makes more than the house uses; the buyer's house only uses.
        for home, grid_w, pv_w in ((seller, 600, 12_000), (buyer, 6_000, 0)):
            home.grid.set_profile([(0, grid_w)])
            home.pv.set_profile([(0, pv_w)])
            home.grid.start()
            home.pv.start()
            stack.callback(home.grid.close)
            stack.callback(home.pv.close)
            home.configure()
            stack.callback(home.stop)
            home.start()

        mixer = CoordinatorProcess(
            tmp / "genesis.json",
            dso.ledger_url,
            MIX_PEERS,
            tmp / "mixer.log",
            timeout_s=MIX_STEP_TIMEOUT_S,
        )
        stack.callback(mixer.stop)
        mixer.wait_until_serving()
        process, log, url = _bidstore(tmp, dso, tor)
        stack.callback(stop, process)
        yield Community(
            dso,
            seller,
            buyer,
            neighbour_key,
            mixer.url,
            url,
            None if tor is None else tor.socks_port,
            [tmp / "mixer.log", log],
        )


# ---------------------------------------------------------------- the ledger, walked


@dataclass(frozen=True)
class LedgerView:
    """Every transaction on the ledger as its wire JSON, by txid hex, with its block's height
    and the interval its block's time falls in; every output by `(txid hex, index)` and the
    txid that spent it."""

    transactions: dict[str, dict[str, Any]]
    heights: dict[str, int]
    intervals: dict[str, int]
    outputs: dict[tuple[str, int], dict[str, Any]]
    spent_by: dict[tuple[str, int], str]

    def issues_of(self, meter_id: str) -> list[str]:
        return [
            t
            for t, tx in self.transactions.items()
            if tx["type"] == "issue" and tx["meter"] == meter_id
        ]

    def inputs_of(self, tx_id: str) -> list[tuple[str, int]]:
        inputs = self.transactions[tx_id].get("inputs", [])
        return [(i["tx"], i["index"]) for i in inputs]

    def reachable(self, start: list[str], through: Callable[[str], bool]) -> set[str]:
        """The transactions spending, directly or through later spends, an output of the
        transactions `start`, walking on only through those for which `through(txid)`."""
        seen: set[str] = set()
        frontier = list(start)
        while frontier:
            tx_id = frontier.pop()
            for index in range(len(self.transactions[tx_id].get("outputs", []))):
                spender = self.spent_by.get((tx_id, index))
                if spender is not None and spender not in seen:
                    seen.add(spender)
                    if through(spender):
                        frontier.append(spender)
        return seen


def ledger_view(ledger_url: str, interval_s: int, epoch: int) -> LedgerView:
    """Read every block of the ledger at `ledger_url` into a LedgerView."""
    transactions: dict[str, dict[str, Any]] = {}
    heights: dict[str, int] = {}
    intervals: dict[str, int] = {}
    with LedgerClient(ledger_url) as ledger:
        height = 1
        while blocks := ledger.blocks(height, 100):
            for head, raws in blocks:
                for raw in raws:
                    tx_id = decode_transaction(raw).txid.hex()
                    transactions[tx_id] = json.loads(raw)
                    heights[tx_id] = head.header.height
                    intervals[tx_id] = (head.header.time - epoch) // interval_s
            height = blocks[-1][0].header.height + 1
    outputs: dict[tuple[str, int], dict[str, Any]] = {}
    spent_by: dict[tuple[str, int], str] = {}
    for tx_id, tx in transactions.items():
        for index, output in enumerate(tx.get("outputs", [])):
            outputs[(tx_id, index)] = output
        for spent in tx.get("inputs", []):
            spent_by[(spent["tx"], spent["index"])] = tx_id
    return LedgerView(transactions, heights, intervals, outputs, spent_by)
