"""The multi-process community: every node its own `petra` process on loopback, started,
watched and stopped by the harness, all on one accelerated ledger clock.

One run, in order:

1. with `tor`, a private Tor network on loopback, bootstrapped before ledger time starts; a
   genesis and keys for the DSO and the sequencer, in the run's `nodes/` folder;
2. the ledger node and a verifying replica; the DSO node (`petra dso init`, `petra dso serve`,
   reading the bid store's book for its forecast); the mixer coordinator; the bid store
   (published as an onion service on a private Tor network with `tor`);
3. the tariff and every home's meter authorized at the DSO, by its admin API;
4. per home: its simulated devices (an SDM630 on the household circuit, the load and the
   battery, and where it has PV a SunSpec inverter: the meter adds its sources, so M_t is the
   grid connection's net), its sealed meter key and `petra meter run`, and its wallet driven by
   its agent (the wallet autopilot with the home's strategy) in a thread of the harness;
5. the clock runs the run's intervals; each interval the harness reads the DSO's forecast for
   the next one and moves the progress on;
6. at the end (or on Ctrl-C) it gives the last bills time to arrive, reads back the record
   (the ledger's blocks, the DSO's bills and their reconciliation, the bid store's auctions)
   and stops every process it started, in the reverse order.

Every process gets `PETRA_CLOCK` (`service.clock`): ledger time starts `prelude` intervals
before the first simulated one, so the nodes are up and the meters authorized by then.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import secrets
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import numpy as np

from assets import Asset, Keypair
from assets.keyfile import dump_keys
from bidstore import OrderSide
from ledger import LedgerClient, LedgerClientError, LedgerRejected, Submitted
from service import LedgerClock
from simulation.agents import Market, policy_for
from simulation.broker import Mosquitto
from simulation.config import SimConfig, check_ports_free, config_to_wire
from simulation.devices import SimulatedSdm630, SimulatedSunSpecInverter
from simulation.metrics import trace_ledger  # the one definition of a trade on the ledger
from simulation.monitor import MonitorPlan, MonitorSetupError, publish_section, start_broker
from simulation.monitor import prepare as prepare_monitor
from simulation.processes import free_port, log_tail, start_petra, stop, wait_serving
from simulation.profiles import HomePlan
from simulation.record import (
    Forecast,
    HomeRecord,
    LedgerEntry,
    MixRound,
    RunRecord,
    Submission,
    Trade,
)
from simulation.scenario import Scenario

if TYPE_CHECKING:
    from simulation.tornet import TorNetwork
from wallet import (
    Autopilot,
    Coin,
    Contents,
    Cover,
    KdfLevel,
    Services,
    Settings,
    Step,
    Strategy,
    Wallet,
    WalletError,
    WalletFile,
    WalletOperations,
    new_data,
)

log = logging.getLogger("petra.sim")
T = TypeVar("T")

PASSPHRASE_BYTES = 24
BOOT_S = 20.0  # wall seconds the nodes are given to come up, before the first interval
BOOT_S_PER_HOME = 0.6
DRAIN_INTERVALS = 2  # intervals after the last one for its bills to close and arrive
MAX_W = 20_000  # every meter's MAXEPA and MAXECA, W: above any home's peak
COVER = Cover(epa_w=2_000, eca_w=2_000, fa=200_000)  # the same for every home, so all mix
LEAD = 2  # intervals ahead the cover is withdrawn: one to mix it, one to trade it
MIX_RUN_S = 10.0  # wall seconds a pool's run may take once it has its peers
STEP_TIMEOUT_S = 60.0  # wall seconds a trade's party has for its step
MIX_ROUNDS = 1  # rounds per coin: each ends at a fresh address; more cost time, not rules
POLL_S = 0.5  # wall seconds between the agents' looks at their trades
METER_POLL_S = 1.0  # wall seconds between device reads
ONION = re.compile(r"onion service http://([a-z2-7]{56}\.onion)")  # the bid store logs it
ONION_WAIT_S = 180.0


@dataclass(frozen=True, slots=True)
class HorizonCover(Cover):
    """The autopilot's cover for every interval up to `last`, nothing after: the run's end
    leaves no coin withdrawn for an interval it will not bill."""

    last: int = 0

    def assets(self, interval: int) -> list[Asset]:
        return Cover.assets(self, interval) if interval <= self.last else []


class HarnessError(Exception):
    """The community could not be started or run: one sentence saying what and where."""


@dataclass
class Node:
    """A `petra` process the harness started: its name, URL (if it serves) and log."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str | None = None

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Home:
    """A home of the running community: its plan, devices, meter daemon and wallet."""

    plan: HomePlan
    folder: Path
    owner: Keypair
    meter_key: Keypair
    api_port: int
    grid: SimulatedSdm630 | None = None
    pv: SimulatedSunSpecInverter | None = None
    meter: Node | None = None
    wallet: Wallet | None = None
    agent: Autopilot | None = None
    thread: threading.Thread | None = None
    steps: list[Step] = field(default_factory=list)
    stamps: list[tuple[float, float]] = field(default_factory=list)  # (wall, ledger) per step

    @property
    def meter_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


@dataclass
class Recorder:
    """What the harness measures itself while the run goes on (thread-safe)."""

    submissions: list[Submission] = field(default_factory=list)
    forecasts: list[Forecast] = field(default_factory=list)
    mix_rounds: list[MixRound] = field(default_factory=list)
    matched: list[tuple[int, int, int]] = field(default_factory=list)  # interval, W, price
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submitted(self, kind: str, sent: float, answered: float, code: str) -> None:
        with self.lock:
            self.submissions.append(Submission(kind, sent, answered, code))

    def mixed(self, peers: int, began: float, ended: float, outcome: str) -> None:
        with self.lock:
            self.mix_rounds.append(MixRound(peers, began, ended, outcome))


class TimedLedgerClient(LedgerClient):
    """A wallet's ledger client that tells the recorder how long each submission took and
    how it ended (`committed`, the rejection code, or `unavailable`)."""

    def __init__(self, url: str, recorder: Recorder) -> None:
        super().__init__(url)
        self.recorder = recorder

    def submit(self, raw: bytes) -> Submitted:
        sent = time.time()
        kind = str(json.loads(raw).get("type", "unknown"))
        try:
            submitted = super().submit(raw)
        except LedgerRejected as exc:
            self.recorder.submitted(kind, sent, time.time(), str(exc.code))
            raise
        except LedgerClientError:
            self.recorder.submitted(kind, sent, time.time(), "unavailable")
            raise
        self.recorder.submitted(kind, sent, time.time(), "committed")
        return submitted


class TimedOperations(WalletOperations):
    """The autopilot's operations on a real wallet, each mix timed for the recorder: one
    round per coin (`rounds` 1) of a pool of up to `peers`."""

    def __init__(
        self, wallet: Wallet, recorder: Recorder, peers: int, *, mix_timeout_s: float
    ) -> None:
        super().__init__(wallet, rounds=MIX_ROUNDS, mix_timeout_s=mix_timeout_s)
        self.recorder, self.peers = recorder, peers
        self.timings: list[tuple[str, float, float]] = []  # (operation, began, ended), wall s

    def _timed(self, name: str, action: Callable[[], T]) -> T:
        began = time.time()
        try:
            return action()
        finally:
            self.timings.append((name, began, time.time()))

    def withdraw(self, assets: Sequence[Asset]) -> list[Coin]:
        return self._timed("withdraw", lambda: super(TimedOperations, self).withdraw(assets))

    def unspent(self) -> list[Coin]:
        return self._timed("refresh", lambda: super(TimedOperations, self).unspent())

    def deposit(self, coins: Sequence[Coin]) -> int:
        return self._timed("deposit", lambda: super(TimedOperations, self).deposit(coins))

    def settle_orders(self) -> None:
        self._timed("settle", lambda: super(TimedOperations, self).settle_orders())

    def step_trades(self) -> int:
        return self._timed("trade", lambda: super(TimedOperations, self).step_trades())

    def mix(
        self, coins: Sequence[Coin], replaced: Callable[[Coin, list[Coin]], None]
    ) -> list[WalletError]:
        began = time.time()
        failed = super().mix(coins, replaced)
        ended = time.time()
        self.timings.append(("mix", began, ended))
        codes = sorted({e.code for e in failed})
        for _ in range(len(coins) - len(failed)):
            self.recorder.mixed(self.peers, began, ended, "done")
        for code in codes:
            self.recorder.mixed(self.peers, began, ended, code)
        return failed


def plan_clock(config: SimConfig, homes: int) -> tuple[int, int, float]:
    """(epoch, first interval, boot seconds): ledger time starts at the epoch when the harness
    starts, and the first simulated interval, which begins at `config.start`, comes after
    `boot` wall seconds at the configured speed."""
    boot_s = BOOT_S + BOOT_S_PER_HOME * homes
    prelude = math.ceil(boot_s * config.speed / config.interval_s) + 1
    start = int(config.start.timestamp()) // config.interval_s * config.interval_s
    return start - prelude * config.interval_s, prelude, boot_s


class Community:
    """A community run as processes. Use as a context manager: `start()` brings it up,
    `run()` runs its intervals, `record()` reads what the nodes recorded; leaving the block
    stops everything it started, whatever happened."""

    def __init__(
        self,
        config: SimConfig,
        plans: Sequence[HomePlan],
        folder: Path,
        *,
        on_interval: Callable[[int, int], None] | None = None,
        on_status: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
        manual: Collection[str] = (),
        mix_wait_s: float | None = None,
        step_timeout_s: float = STEP_TIMEOUT_S,
        clock: LedgerClock | None = None,
    ) -> None:
        """`manual` names homes whose wallets no agent drives (a person does, by hand);
        `mix_wait_s` is how long a mixing pool waits for more peers, wall seconds (default:
        a tenth of an interval, at least 1); `step_timeout_s` how long a trade's party has for
        its step at the bid store; `clock` the ledger clock (default: the configured speed,
        ledger time starting at the epoch now)."""
        self.config, self.plans, self.folder = config, list(plans), folder.resolve()
        self.manual, self.mix_wait_s = frozenset(manual), mix_wait_s
        self.on_interval = on_interval or (lambda done, total: None)
        self.on_status = on_status or (lambda text: None)
        self.stop_event = stop or threading.Event()
        self.nodes: list[Node] = []
        self.homes: list[Home] = []
        self.recorder = Recorder()
        epoch, self.first, self.boot_s = plan_clock(config, len(self.plans))
        self.scenario = Scenario(
            name=config.name, interval_s=config.interval_s, epoch=epoch, currency="EUR"
        )
        self.last = self.first + config.intervals - 1
        self._own_clock = clock is None  # started again once a Tor network is up (`start`)
        self.clock = clock or self._clock_from_now()
        self.step_timeout_s = step_timeout_s
        self.passphrase = secrets.token_urlsafe(PASSPHRASE_BYTES)  # the key files' and wallets'
        self.passphrase_file = self.folder / "nodes" / "passphrase"
        self.admin_token = ""
        self.tor: TorNetwork | None = None
        self.started_wall = time.time()
        self.completed = False
        self._stack = contextlib.ExitStack()
        self._stores: dict[str, str] = {}  # node -> its database URL
        self.broker: Mosquitto | None = None  # with --monitor: the meters publish to it
        self.monitor: MonitorPlan | None = None

    def _clock_from_now(self) -> LedgerClock:
        """Ledger time at the genesis epoch now, running at the configured speed."""
        return LedgerClock(float(self.scenario.epoch), origin=time.time(), speed=self.config.speed)

    # ------------------------------------------------------------ life

    def __enter__(self) -> Community:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def env(self) -> dict[str, str]:
        clock = self.clock
        return {
            "PETRA_CLOCK": f"start={clock.start},speed={clock.speed},origin={clock.origin}",
            "PETRA_PASSPHRASE": self.passphrase,
        }

    def url(self, name: str) -> str:
        for node in self.nodes:
            if node.name == name and node.url is not None:
                return node.url
        raise KeyError(name)

    def start(self) -> None:
        """Bring every node up, authorize the meters, start the devices, meters and agents."""
        self.folder.mkdir(parents=True, exist_ok=True)
        nodes = self.folder / "nodes"
        nodes.mkdir(exist_ok=True)
        if self.config.tor:
            # Before the ledger's clock starts, which no Tor network reads: its bootstrap takes
            # a minute or more, and in the boot's budget it left the agents the run's last
            # intervals only.
            self._start_tor(nodes)
            if self._own_clock:
                self.clock = self._clock_from_now()
        if self.config.base_port:
            count = 5 + len(self.plans)
            check_ports_free(range(self.config.base_port, self.config.base_port + count))
        self._ports = iter(
            range(self.config.base_port, self.config.base_port + 10_000)
            if self.config.base_port
            else iter(free_port, None)
        )
        genesis = nodes / "genesis.json"
        genesis.write_bytes(self.scenario.genesis_raw)
        descriptor = os.open(self.passphrase_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as private:  # never readable by others, not even once
            private.write(self.passphrase + "\n")
        (nodes / "ledger-keys.json").write_bytes(
            dump_keys({"sequencer-0": self.scenario.sequencer}, self.passphrase.encode())
        )
        (nodes / "dso-keys.json").write_bytes(
            dump_keys({"dso-0": self.scenario.dso}, self.passphrase.encode())
        )
        self.on_status("starting the ledger node and its replica")
        ledger = self._serve(
            "ledger",
            "/v1/head",
            "ledger",
            "serve",
            *("--genesis", str(genesis), "--keys", str(nodes / "ledger-keys.json")),
            *("--store", self._store_url("ledger")),
        )
        self._serve(
            "replica",
            "/v1/head",
            "ledger",
            "replicate",
            *("--ledger", ledger, "--genesis", str(genesis)),
            *("--store", self._store_url("replica"), "--evidence", str(nodes / "evidence")),
        )
        self.on_status("starting the bid store and the mixer")
        bidstore_port = next(self._ports)
        bidstore_args = [
            *("bidstore", "serve", "--genesis", str(genesis), "--ledger", ledger),
            *("--gate-s", str(self.config.interval_s // 3)),
            *("--step-timeout-s", str(self.step_timeout_s)),
            *("--service-rate", "100000", "--service-burst", "100000"),
            *("--rate", "1000", "--burst", "1000", "--max-orders", "64"),
        ]
        if self.tor is not None:
            bidstore_args += ["--onion", "--tor-control", str(self.tor.control_port)]
        self._serve("bidstore", "/v1/status", *bidstore_args, port=bidstore_port)
        if self.config.mixing:
            self._serve(
                "mixer",
                "/v1/pools/0",
                *("mixer", "serve", "--genesis", str(genesis), "--ledger", ledger),
                *("--min-peers", "2", "--max-peers", str(self.config.mix_pool)),
                *("--start-s", str(self._mix_wait_s()), "--timeout-s", "10"),
            )
        self.on_status("starting the DSO node")
        token = nodes / "dso-token"
        self._run(
            "dso-init",
            "dso",
            "init",
            *("--store", self._store_url("dso"), "--admin", "sim", "--token-out", str(token)),
        )
        self.admin_token = token.read_text().strip()
        self._serve(
            "dso",
            "/v1/status",
            *("dso", "serve", "--genesis", str(genesis), "--keys", str(nodes / "dso-keys.json")),
            *("--ledger", ledger, "--store", self._store_url("dso")),
            *("--book", self.url("bidstore")),
        )
        if self.config.monitor:
            self.on_status("starting the monitoring service and its MQTT broker")
            self._start_monitor()
        self.on_status(f"authorizing {len(self.plans)} meters at the DSO")
        self._regulate()
        for index, plan in enumerate(self.plans):
            self.on_status(f"starting home {index + 1} of {len(self.plans)}: {plan.name}")
            self.homes.append(self._start_home(plan, genesis))
        self.on_status("starting the agents")
        for home in self.homes:
            if home.plan.name not in self.manual:
                self._start_agent(home)

    def _start_monitor(self) -> None:
        folder = self.folder / "monitor"
        try:  # mosquitto missing or failing is one sentence, as any node's failed start
            self.broker = start_broker(folder / "broker")
            self._stack.callback(self.broker.stop)
            self.monitor = prepare_monitor(folder, self.config, self.plans, self.broker, self._run)
        except MonitorSetupError as exc:
            raise HarnessError(str(exc)) from None
        self._serve(
            "monitor", "/login", "monitor", "serve", "--config", str(self.monitor.run_config)
        )

    def close(self) -> None:
        """Stop the agents, the meters, the devices and the nodes, newest first."""
        self.stop_event.set()
        for home in self.homes:
            if home.thread is not None:
                home.thread.join(30)
            _save_steps(home)
        for home in self.homes:
            if home.meter is not None:
                stop(home.meter.process)
            for device in (home.grid, home.pv):
                if device is not None:
                    device.close()
        for node in reversed(self.nodes):
            stop(node.process)
        self.nodes.clear()
        self._stack.close()

    def describe(self) -> dict[str, Any]:
        """Where everything is, for people: the nodes' URLs and logs, each home's meter, wallet
        file and whether an agent drives it, the clock and the passphrase's file."""
        return {
            "name": self.config.name,
            "folder": str(self.folder),
            "interval_s": self.config.interval_s,
            "epoch": self.scenario.epoch,
            "speed": self.config.speed,
            "first_interval": self.first,
            "last_interval": self.last,
            "genesis": str(self.folder / "nodes" / "genesis.json"),
            "passphrase_file": str(self.passphrase_file),
            "admin_token_file": str(self.folder / "nodes" / "dso-token"),
            "monitor": None
            if self.monitor is None
            else {"config": str(self.monitor.config), "logins": str(self.monitor.logins)},
            "nodes": {
                n.name: {"url": n.url, "log": str(n.log), "pid": n.process.pid} for n in self.nodes
            },
            "homes": [
                {
                    "name": h.plan.name,
                    "meter_id": h.plan.meter_id,
                    "meter_url": h.meter_url,
                    "wallet": str(h.folder / "wallet.json"),
                    "strategy": h.plan.strategy,
                    "pv_kwp": h.plan.pv_kwp,
                    "agent": h.agent is not None,
                    "log": str(h.folder / "meter.log"),
                    "pid": None if h.meter is None else h.meter.process.pid,
                }
                for h in self.homes
            ],
        }

    # ------------------------------------------------------------ running

    def interval_now(self) -> int:
        return int(self.clock.now() - self.scenario.epoch) // self.config.interval_s

    def run(self) -> None:
        """Run until the last interval's bills are due, or `stop` is set; report each interval
        begun through `on_interval(done, total)`."""
        total = self.config.intervals
        seen = -1
        end = self.last + 1 + DRAIN_INTERVALS
        while not self.stop_event.is_set():
            now = self.interval_now()
            if now != seen:
                seen = now
                self._read_forecast(now + 1)
                self._read_auction(now + 1)  # its gate comes later in this interval
                self.on_interval(min(max(now - self.first, 0), total), total)
                self._check_nodes()
            if now >= end:
                self.completed = True
                self.on_interval(total, total)
                return
            next_start = self.scenario.epoch + (now + 1) * self.config.interval_s
            self.stop_event.wait(min(1.0, max(0.05, self.clock.seconds_until(next_start))))

    # ------------------------------------------------------------ reading back

    def record(self) -> RunRecord:
        """What the nodes recorded: the ledger's blocks, the DSO's bills, the bid store's
        auctions, with the homes' profiles and what the harness measured itself."""
        ledger = self._ledger_entries()
        bills, reconciled = self._bills()
        trades = self._trades(ledger)
        placed = [
            s for h in self.homes for s in h.steps if s.name == "order" and "(order " in s.text
        ]
        return RunRecord(
            name=self.config.name,
            mode="processes",
            seed=self.config.seed,
            genesis=json.loads(self.scenario.genesis_raw),
            first_interval=self.first,
            last_interval=self.last,
            price_consumption=self.config.price_consumption,
            price_production=self.config.price_production,
            mix_pool=self.config.mix_pool if self.config.mixing else 0,
            tor=self.config.tor,
            wall_s=time.time() - self.started_wall,
            homes=[HomeRecord.of_plan(h.plan, h.owner.public_key.hex()) for h in self.homes],
            ledger=ledger,
            bills=bills,
            reconciled=reconciled,
            submissions=list(self.recorder.submissions),
            mix_rounds=list(self.recorder.mix_rounds),
            orders=len(placed),
            trades=trades,
            forecasts=list(self.recorder.forecasts),
            busy_s=self._busy_s(),
            config=config_to_wire(self.config),
            complete=self.completed,
        )

    # ------------------------------------------------------------ nodes

    def _store_url(self, name: str) -> str:
        """The database of node `name`: a SQLite file in the run's `nodes/` folder, or with a
        PostgreSQL URL a database of its own on that server, named after the run and the node
        (created here; kept after the run, for inspection)."""
        if name in self._stores:
            return self._stores[name]
        if self.config.store == "sqlite":
            url = f"sqlite:///{self.folder / 'nodes' / (name + '.sqlite')}"
        else:
            url = _postgres_database(self.config.store, f"{self.folder.name}_{name}")
        self._stores[name] = url
        return url

    def _meter_store(self, home: str, folder: Path) -> str:
        if self.config.store == "sqlite":
            return f"sqlite:///{folder / 'meter.sqlite'}"
        return self._store_url(f"meter_{home}")

    def _serve(self, name: str, probe: str, *args: str, port: int | None = None) -> str:
        port = port if port is not None else next(self._ports)
        log_path = self.folder / "nodes" / f"{name}.log"
        # No metrics: a community's services share one machine and would race for a port.
        process = start_petra(
            *args, "--port", str(port), "--metrics-port", "0", log=log_path, env=self.env
        )
        url = f"http://127.0.0.1:{port}"
        node = Node(name, process, log_path, url)
        self.nodes.append(node)
        try:
            wait_serving(url, process, log_path, probe=probe)
        except Exception:
            raise _not_started(name, log_path) from None
        return url

    def _run(self, name: str, *args: str) -> None:
        log_path = self.folder / "nodes" / f"{name}.log"
        process = start_petra(*args, log=log_path, env=self.env)
        if process.wait(60) != 0:
            raise HarnessError(f"`petra {' '.join(args[:2])}` failed: {log_tail(log_path, 3)}")

    def _check_nodes(self) -> None:
        for node in [*self.nodes, *(h.meter for h in self.homes if h.meter is not None)]:
            if not node.alive():
                raise HarnessError(
                    f"the {node.name} stopped (exit {node.process.returncode}): "
                    f"{log_tail(node.log, 3)}"
                )

    def _mix_wait_s(self) -> float:
        """Wall seconds a pool waits for more peers: a tenth of an interval, at least 1."""
        if self.mix_wait_s is not None:
            return self.mix_wait_s
        return max(1.0, self.clock.wall_seconds(self.config.interval_s) / 10)

    def _start_tor(self, nodes: Path) -> None:
        from simulation.tornet import TorNetwork

        self.on_status("bootstrapping a private Tor network on loopback (about a minute)")
        network = TorNetwork(nodes / "tor")
        self._stack.callback(network.stop)
        network.up()
        self.tor = network

    def _admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url("dso"),
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
        )

    def _regulate(self) -> None:
        with self._admin() as dso:
            answer = dso.put(
                "/v1/tariff",
                json={
                    "price_consumption": self.config.price_consumption,
                    "price_production": self.config.price_production,
                },
            )
            _ok(answer, "set the tariff")
            for plan, key in zip(self.plans, self._meter_keys(), strict=True):
                answer = dso.post(
                    "/v1/meters",
                    json={
                        "meter": plan.meter_id,
                        "public_key": key.public_key.hex(),
                        "max_epa": MAX_W,
                        "max_eca": MAX_W,
                        "owner": plan.name,
                    },
                )
                _ok(answer, f"authorize the meter of {plan.name}")

    def _meter_keys(self) -> list[Keypair]:
        if not hasattr(self, "_keys"):
            self._keys = [Keypair.generate() for _ in self.plans]
        return self._keys

    # ------------------------------------------------------------ homes

    def _device_profile(self, values: Sequence[float]) -> list[tuple[float, float]]:
        """Steps in ledger time: each simulated interval's mean power, 0 before and after."""
        start = self.scenario.epoch + self.first * self.config.interval_s
        steps = [
            (float(start + k * self.config.interval_s), float(v)) for k, v in enumerate(values)
        ]
        return [*steps, (float(start + len(values) * self.config.interval_s), 0.0)]

    def _start_home(self, plan: HomePlan, genesis: Path) -> Home:
        index = len(self.homes)
        folder = self.folder / "homes" / plan.name
        folder.mkdir(parents=True, exist_ok=True)
        seed = secrets.token_bytes(32)
        owner = Contents(seed, {}).key(0)
        home = Home(plan, folder, owner, self._meter_keys()[index], next(self._ports))
        household = [float(a + b) for a, b in zip(plan.load_w, plan.battery_w, strict=True)]
        home.grid = SimulatedSdm630(profile=self._device_profile(household), clock=self.clock.now)
        home.grid.start()
        sources = [_source("grid", "sdm630", home.grid.port)]
        if plan.pv_kwp > 0:
            pv = [float(v) for v in plan.pv_w]
            home.pv = SimulatedSunSpecInverter(
                profile=self._device_profile(pv), clock=self.clock.now
            )
            home.pv.start()
            sources.append(_source("pv", "sunspec", home.pv.port))
        (folder / "meter-keys.json").write_bytes(
            dump_keys({"meter": home.meter_key}, self.passphrase.encode())
        )
        # t's bill waits for deposits of t that an agent busy with later cycles makes late
        closing_delay = self.config.interval_s * 2 // 3
        (folder / "meter.toml").write_text(
            "[meter]\n"
            f'id = "{plan.meter_id}"\nkeys = "meter-keys.json"\n'
            f'genesis = "{genesis}"\nowner = "{owner.public_key.hex()}"\n'
            f'ledger = "{self.url("ledger")}"\ndso = "{self.url("dso")}"\n'
            f'store = "{self._meter_store(plan.name, folder)}"\n'
            f"closing_delay_s = {closing_delay}\ncredit_line = 1000000000\n"
            f"api_port = {home.api_port}\nmetrics_port = 0\n\n"
            + ("" if self.broker is None else publish_section(self.broker, plan) + "\n")
            + "\n".join(sources)
        )
        log_path = folder / "meter.log"
        process = start_petra(
            "meter", "run", "--config", str(folder / "meter.toml"), log=log_path, env=self.env
        )
        home.meter = Node(f"meter of {plan.name}", process, log_path, home.meter_url)
        try:
            wait_serving(home.meter_url, process, log_path, probe="/v1/status")
        except Exception:
            raise _not_started(home.meter.name, log_path) from None
        services = Services(
            self.url("ledger"),
            meter_url=home.meter_url,
            meter_id=plan.meter_id,
            mixer=self.url("mixer") if self.config.mixing else None,
            bidstore=self._bidstore_address(),
            tor_socks=None if self.tor is None else self.tor.socks_port,
        )
        path = folder / "wallet.json"
        WalletFile.create(
            path,
            self.passphrase.encode(),
            kdf=KdfLevel.INTERACTIVE,
            seed=seed,
            data=new_data(self.scenario.genesis, services, self.clock.now()),
        )
        home.wallet = Wallet(
            WalletFile.open(path, self.passphrase.encode()),
            clock=self.clock.now,
            ledger_client=lambda url: TimedLedgerClient(url, self.recorder),
        )
        return home

    def _bidstore_address(self) -> str:
        if self.tor is None:
            return self.url("bidstore")
        for node in self.nodes:
            if node.name == "bidstore":
                deadline = time.monotonic() + ONION_WAIT_S
                while (found := ONION.search(node.log.read_text(errors="replace"))) is None:
                    if time.monotonic() > deadline or not node.alive():
                        raise HarnessError(
                            f"the bid store published no onion service: {log_tail(node.log, 3)}"
                        )
                    time.sleep(0.5)
                return f"http://{found.group(1)}"
        raise KeyError("bidstore")

    def _start_agent(self, home: Home) -> None:
        assert home.wallet is not None
        policy = policy_for(home.plan.strategy)
        market = Market(
            self.config.price_consumption, self.config.price_production, self.config.interval_s
        )
        rng = np.random.default_rng([self.config.seed, len(self.homes), self.homes.index(home)])

        def pricing(side: OrderSide, interval: int, forecast: int) -> int | None:
            intent = policy.decide(forecast, market, COVER, rng)
            return intent.price if intent is not None and intent.side is side else None

        cover = HorizonCover(COVER.epa_w, COVER.eca_w, COVER.fa, last=self.last)
        settings = Settings(
            cover=cover,
            strategy=Strategy(pricing=pricing),
            lead=LEAD,
            poll_s=POLL_S,
            trade_unmixed=not self.config.mixing,  # to measure what mixing buys
        )
        # a pool's wait for people and its run; else most of an interval, so a failed mix
        # leaves the agent time to deposit what it could not mix
        mix_timeout = (
            self.mix_wait_s + MIX_RUN_S
            if self.mix_wait_s is not None
            else self.clock.wall_seconds(self.config.interval_s) * 0.6
        )
        operations = TimedOperations(
            home.wallet, self.recorder, self.config.mix_pool, mix_timeout_s=mix_timeout
        )
        home.agent = Autopilot(
            operations,
            settings,
            epoch=self.scenario.epoch,
            report=lambda step: self._heard(home, step),
            clock=self.clock.now,
            stop=self.stop_event,
        )
        home.thread = threading.Thread(
            target=self._agent_loop, args=(home,), name=f"agent-{home.plan.name}", daemon=True
        )
        home.thread.start()

    def _heard(self, home: Home, step: Step) -> None:
        home.stamps.append((time.time(), self.clock.now()))
        home.steps.append(step)

    def _agent_loop(self, home: Home) -> None:
        assert home.agent is not None
        while self.interval_now() < self.first - LEAD and not self.stop_event.is_set():
            self.stop_event.wait(0.2)
        try:
            home.agent.run()
        except Exception:  # an agent's end must not take the harness with it
            log.exception("the agent of %s stopped", home.plan.name)

    # ------------------------------------------------------------ reading the nodes

    def _read_forecast(self, interval: int) -> None:
        if not self.first <= interval <= self.last:
            return
        try:
            with self._admin() as dso:
                answer = dso.get("/v1/forecast", params={"first": interval, "last": interval})
            if answer.status_code == 200:
                for row in answer.json().get("intervals", []):
                    net = row.get("net_load_w")
                    if row.get("interval") == interval and isinstance(net, int):
                        self.recorder.forecasts.append(Forecast(interval, net))
        except httpx.HTTPError as exc:
            log.warning("no forecast for %d: %s", interval, exc)

    def _ledger_entries(self) -> list[LedgerEntry]:
        entries: list[LedgerEntry] = []
        height = 1
        with httpx.Client(base_url=self.url("ledger"), timeout=60) as ledger:
            while True:
                answer = ledger.get("/v1/blocks", params={"from": height, "limit": 100})
                blocks = answer.json().get("blocks", []) if answer.status_code == 200 else []
                if not blocks:
                    return entries
                for block in blocks:
                    head = block["head"]
                    for body in block["transactions"]:
                        tx = json.loads(bytes.fromhex(body))
                        entries.append(LedgerEntry(head["height"], head["time"], tx))
                    height = head["height"] + 1

    def _bills(self) -> tuple[list[dict[str, Any]], dict[str, str]]:
        bills: list[dict[str, Any]] = []
        reconciled: dict[str, str] = {}
        with self._admin() as dso:
            for plan in self.plans:
                params: dict[str, str | int] = {
                    "meter": plan.meter_id,
                    "first": self.first - LEAD,  # the first cycles' withdrawals are billed
                    "last": self.last + 1,  # and so are the last cycle's late deposits
                }
                answer = dso.get("/v1/bills", params=params)
                if answer.status_code != 200:
                    continue
                for view in answer.json().get("bills", []):
                    bills.append(view["bill"])
                    reconciled[view["id"]] = view["status"]
        return bills, reconciled

    def _busy_s(self) -> list[float]:
        """Per home and interval of the run, the wall seconds its agent spent in operations."""
        busy: dict[tuple[str, int], float] = {}
        for home in self.homes:
            if home.agent is None or not isinstance(home.agent.ops, TimedOperations):
                continue
            for _, began, ended in home.agent.ops.timings:
                interval = int(self.clock.at(began) - self.scenario.epoch) // self.config.interval_s
                if self.first <= interval <= self.last:
                    key = (home.plan.name, interval)
                    busy[key] = busy.get(key, 0.0) + ended - began
        return [round(seconds, 3) for seconds in busy.values()]

    def _read_auction(self, interval: int) -> None:
        """How the bid store's call auction of `interval` stands before its gate: the matches
        it will trade (settled or not, the ledger says later)."""
        if not self.first <= interval <= self.last:
            return
        try:
            with httpx.Client(base_url=self.url("bidstore"), timeout=10) as store:
                answer = store.get(f"/v1/auctions/{interval}")
        except httpx.HTTPError as exc:
            log.warning("no auction view of %d: %s", interval, exc)
            return
        if answer.status_code == 200:
            for match in answer.json().get("matches", []):
                self.recorder.matched.append((interval, int(match["power"]), int(match["price"])))

    def _trades(self, ledger: Sequence[LedgerEntry]) -> list[Trade]:
        """The matches read before each gate; settled when the ledger holds a trade (a transfer
        of EPA and FA between several owners) delivering that power in that interval."""
        delivered: Counter[tuple[int, int]] = Counter(
            (epa.start, epa.power)
            for epa in trace_ledger(ledger).traded_epa()
            if epa.start == epa.end
        )
        trades = []
        for interval, power, price in self.recorder.matched:
            settled = delivered[(interval, power)] > 0
            if settled:
                delivered[(interval, power)] -= 1
            trades.append(Trade(interval, power, price, settled))
        return trades


def _postgres_database(server_url: str, name: str) -> str:
    """A new database on the PostgreSQL server of `server_url`, named `name` made safe (lower
    case letters, digits and underscores, at most 63 bytes); its URL."""
    from sqlalchemy import create_engine, make_url, text

    safe = re.sub(r"[^a-z0-9_]+", "_", f"petra_{name}".lower())[:63]
    url = make_url(server_url)
    if url.drivername == "postgresql":  # the driver PETra installs, not SQLAlchemy's default
        url = url.set(drivername="postgresql+psycopg")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{safe}"'))
    except Exception as exc:
        reason = (str(exc).splitlines() or ["unknown"])[0]
        shown = url.render_as_string(hide_password=True)
        raise HarnessError(f"cannot create the database {safe} on {shown}: {reason}") from None
    finally:
        engine.dispose()
    return url.set(database=safe).render_as_string(hide_password=False)


def _save_steps(home: Home) -> None:
    """The agent's steps, one JSON line each with the wall and ledger times it was heard, in
    the home's folder (`agent.jsonl`)."""
    lines = (
        json.dumps({**dataclasses.asdict(step), "wall": wall, "ledger": ledger}) + "\n"
        for step, (wall, ledger) in zip(home.steps, home.stamps, strict=True)
    )
    (home.folder / "agent.jsonl").write_text("".join(lines))
    if home.agent is not None and isinstance(home.agent.ops, TimedOperations):
        timings = (
            json.dumps({"operation": name, "began": began, "ended": ended}) + "\n"
            for name, began, ended in home.agent.ops.timings
        )
        (home.folder / "operations.jsonl").write_text("".join(timings))


def _not_started(name: str, log_path: Path) -> HarnessError:
    last = log_tail(log_path, 1).strip() or "nothing"
    return HarnessError(f"the {name} did not start; its log ({log_path}) ends with: {last}")


def _source(name: str, kind: str, port: int) -> str:
    return (
        f'[[source]]\nname = "{name}"\nkind = "{kind}"\nport = {port}\n'
        f"poll_s = {METER_POLL_S}\nmax_gap_s = 600\n"
    )


def _ok(answer: httpx.Response, what: str) -> None:
    if answer.status_code not in (200, 201):
        raise HarnessError(f"could not {what}: the DSO answered {answer.status_code} {answer.text}")


@contextlib.contextmanager
def running(config: SimConfig, plans: Sequence[HomePlan], folder: Path) -> Iterator[Community]:
    """A started community, stopped on leaving."""
    with Community(config, plans, folder) as community:
        community.start()
        yield community


def run_processes(config: SimConfig) -> RunRecord:
    """The whole run as processes, quietly, in a temporary folder: for the bench."""
    import tempfile

    from simulation.profiles import plan_community

    plans = plan_community(config)
    with (
        tempfile.TemporaryDirectory(prefix="petra-sim-") as tmp,
        running(config, plans, Path(tmp)) as community,
    ):
        community.run()
        return community.record()
