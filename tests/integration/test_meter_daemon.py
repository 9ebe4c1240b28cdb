"""`petra meter run`, the whole smart-meter daemon as its own process, in a community on
loopback: a real ledger node process, a DSO node served over HTTP, an SDM630 and a SunSpec
inverter served by pymodbus following power profiles, and a real mosquitto broker (an MQTT
source and the monitoring layer).

The devices follow their profiles on the wall clock, as the daemon reads them. Their power
steps only in the middle of intervals, so a reading period that spans an interval boundary
sees one power and the boundary's energy is apportioned exactly: a measured interval must hold
its profile's energy, up to the time between a device computing its counters and the daemon
stamping the reading (the `tolerance`), and for the inverter, its whole-Wh counter.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from services.mosquitto import Mosquitto
from sqlalchemy import func, select
from waiting import wait_until

from assets import Epa, Keypair, Output
from assets.keyfile import dump_keys
from ledger.client import LedgerClient
from simulation.devices import PowerProfile, SimulatedSdm630, SimulatedSunSpecInverter
from simulation.processes import free_port, start_petra
from simulation.scenario import Scenario
from smartmeter.energy import IntervalStatus
from smartmeter.modbus import SDM630_IMPORT_KWH
from smartmeter.owner_client import OwnerApiError, OwnerClient
from smartmeter.store import MeterStore, readings

from .dso_harness import Dso, running_dso, serving

PASSPHRASE = "meter daemon test passphrase"
METER = "ES0021000000000001AB"
POLL_S = 0.2
WAIT_S = 60
MEASURED = IntervalStatus.MEASURED
MISSING = IntervalStatus.MISSING


def mid_interval_steps(
    epoch: int, interval_s: int, powers: list[float]
) -> list[tuple[float, float]]:
    """A profile cycling through `powers`, stepping in the middle of each interval."""
    first = math.floor((time.time() - epoch) / interval_s) - 1
    return [
        (epoch + (first + n) * interval_s + interval_s / 2, powers[n % len(powers)])
        for n in range(2_000)
    ]


@dataclass
class Feed:
    """A device publishing its import counter as JSON to the broker every POLL_S, following a
    constant power (QoS 0, and nothing while the broker is away: a device does not queue)."""

    broker: Mosquitto
    power_w: float
    topic: str = "home/submeter/state"
    started_at: float = field(default_factory=time.time)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.reconnect_delay_set(1, 1)
        self.client.connect_async(self.broker.host, self.broker.port)
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def counter_wh(self, at: float) -> float:
        return 1_000 + self.power_w * (at - self.started_at) / 3600

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            if self.client.is_connected():
                now = time.time()
                payload = {"total": {"in_kwh": self.counter_wh(now) / 1000}, "ts": now}
                self.client.publish(self.topic, json.dumps(payload))

    def publish_raw(self, payload: bytes) -> None:
        self.client.publish(self.topic, payload).wait_for_publish(5)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()


class Monitor:
    """A monitoring subscriber of the daemon's emoncms-style readings; it subscribes again
    whenever it reconnects (the broker keeps no session)."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.topic = topic
        self.messages: list[dict[str, float]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._connected
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_disconnect = lambda *_: self.subscribed.clear()
        self.client.on_message = self._message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the monitor could not subscribe"

    def _connected(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(json.loads(message.payload))

    def times(self, key: str) -> set[float]:
        with self.lock:
            return {m["time"] for m in self.messages if key in m}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Home:
    """A home with a metered consumption circuit, an inverter and a submeter on MQTT, and the
    smart meter's daemon (not started until `start()`)."""

    dso: Dso
    tmp: Path
    broker: Mosquitto
    meter_key: Keypair
    owner: Keypair
    grid: SimulatedSdm630
    pv: SimulatedSunSpecInverter
    api_port: int
    dso_port: int
    store_url: str
    process: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def interval_s(self) -> int:
        return self.dso.scenario.interval_s

    @property
    def epoch(self) -> int:
        return self.dso.scenario.epoch

    def interval_now(self) -> int:
        return math.floor((time.time() - self.epoch) / self.interval_s)

    def configure(self, *, max_gap_s: int = 60, submeter: bool = False) -> Path:
        sources = [
            f'[[source]]\nname = "grid"\nkind = "sdm630"\nport = {self.grid.port}\n'
            f"poll_s = {POLL_S}\nmax_gap_s = {max_gap_s}\n",
            f'[[source]]\nname = "pv"\nkind = "sunspec"\nport = {self.pv.port}\n'
            f"poll_s = {POLL_S}\nmax_gap_s = {max_gap_s}\n",
        ]
        if submeter:
            sources.append(
                f'[[source]]\nname = "sub"\nkind = "mqtt"\nport = {self.broker.port}\n'
                f'format = "json"\ntopic = "home/submeter/state"\ntime_path = "$.ts"\n'
                f"poll_s = {POLL_S}\nmax_gap_s = {max_gap_s}\n"
                '[source.paths]\n"$.total.in_kwh" = { quantity = "import_wh", factor = 1000 }\n'
            )
        config = self.tmp / "meter.toml"
        config.write_text(
            f'[meter]\nid = "{METER}"\nkeys = "meter-keys.json"\ngenesis = "genesis.json"\n'
            f'owner = "{self.owner.public_key.hex()}"\nledger = "{self.dso.ledger_url}"\n'
            f'dso = "http://127.0.0.1:{self.dso_port}"\nstore = "{self.store_url}"\n'
            f"closing_delay_s = 1\ncredit_line = 1000000\napi_port = {self.api_port}\n\n"
            f'[publish]\nport = {self.broker.port}\nnode = "home1"\n\n' + "\n".join(sources)
        )
        return config

    def start(self) -> None:
        """Start the daemon and wait until its owner API answers."""
        log = self.tmp / f"meter-{len(self.logs)}.log"
        self.logs.append(log)
        self.process = start_petra(
            "meter", "run", "--config", str(self.tmp / "meter.toml"), log=log
        )
        with self.owner_client() as client:

            def answers() -> bool:
                assert self.process is not None and self.process.poll() is None, self.log_text()
                try:
                    client.status()
                except OwnerApiError as exc:
                    if exc.code == "unreachable":
                        return False
                    raise
                return True

            wait_until(answers, WAIT_S, "the meter's owner API")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()}" for log in self.logs)

    def owner_client(self) -> OwnerClient:
        return OwnerClient(METER, self.owner, f"http://127.0.0.1:{self.api_port}")

    def store(self) -> MeterStore:
        return MeterStore(self.store_url)

    def closed(self, source: str, first: int, last: int) -> dict[int, Any]:
        """`source`'s stored intervals `first` to `last` (absent ones left out)."""
        with self.store() as store:
            totals = store.intervals(first, last, [source])
        return {t.interval: t for t in totals if t.reasons != (f"{source}: not closed",)}

    def wait_closed(self, source: str, last: int) -> None:
        wait_until(
            lambda: last in self.closed(source, last, last), WAIT_S, f"{source} to close {last}"
        )

    def wait_interval(self, interval: int) -> None:
        wait_until(lambda: self.interval_now() >= interval, WAIT_S, f"interval {interval}")


@pytest.fixture
def home_owner() -> Keypair:
    """The key the meter's configuration names as its owner (a wallet's test overrides it)."""
    return Keypair.generate()


@pytest.fixture(name="home")
def home_fixture(
    tmp_path: Path, mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch, home_owner: Keypair
) -> Iterator[Home]:
    monkeypatch.setenv("PETRA_PASSPHRASE", PASSPHRASE)
    with running_dso(tmp_path) as dso:
        meter_key, owner = Keypair.generate(), home_owner
        (tmp_path / "meter-keys.json").write_bytes(
            dump_keys({"meter": meter_key}, PASSPHRASE.encode())
        )
        dso.ok("PUT", "/tariff", json={"price_consumption": 250_000, "price_production": 60_000})
        body = {"meter": METER, "public_key": meter_key.public_key.hex(), "owner": "alice"}
        answer = dso.ok("POST", "/meters", json={**body, "max_epa": 10_000, "max_eca": 10_000})
        dso.wait_interval(int(answer["effective_from"]))
        grid = SimulatedSdm630(clock=time.time)
        pv = SimulatedSunSpecInverter(clock=time.time)
        grid.start()
        pv.start()
        site = Home(
            dso,
            tmp_path,
            mosquitto,
            meter_key,
            owner,
            grid,
            pv,
            free_port(),
            free_port(),
            f"sqlite:///{tmp_path / 'meter.sqlite'}",
        )
        try:
            yield site
        finally:
            site.stop()
            grid.close()
            pv.close()
            mosquitto.start()  # a test may have left it stopped


def expected_j(profile: PowerProfile, start: float, end: float) -> tuple[float, float]:
    forward, reverse = profile.energy_wh(start, end)
    return forward * 3600, reverse * 3600


def tolerance(power_w: float) -> float:
    """Joules a measured interval may differ from its profile: a reading is stamped up to a
    few tens of milliseconds after the device computed its counters, on a loaded machine."""
    return power_w * 0.15 + 50


def test_the_daemon_measures_bills_publishes_and_serves_its_owner(home: Home) -> None:
    grid_steps = mid_interval_steps(home.epoch, home.interval_s, [1_200, 2_500, 800, 3_000])
    pv_steps = mid_interval_steps(home.epoch, home.interval_s, [9_000, 7_200])
    home.grid.set_profile(grid_steps)
    home.pv.set_profile(pv_steps)
    home.configure()
    monitor = Monitor(home.broker, "emon/home1")
    try:
        home.start()
        first = home.interval_now() + 1

        with home.owner_client() as owner:
            status = owner.status()
            assert (status["meter"], status["credit_line"]) == (METER, 1_000_000)
            assert status["price_consumption"] == 250_000
            target = home.interval_now() + 5
            issued = owner.withdraw([Output(Epa(1_500, target, target), home.owner.public_key)])
            assert LedgerClient(home.dso.ledger_url).transaction(bytes.fromhex(issued["txid"]))
            with pytest.raises(OwnerApiError) as refused:
                owner.withdraw([Output(Epa(9_000, target, target), home.owner.public_key)])
            assert (refused.value.status, refused.value.code) == (422, "limit_exceeded")
            addresses = {owner.deposit_address()["address"] for _ in range(3)}
            assert len(addresses) == 3

        last = max(first + 5, target)
        home.wait_closed("grid", last)
        home.wait_closed("pv", last)
        grid_profile, pv_profile = PowerProfile(grid_steps), PowerProfile(pv_steps)
        grid_closed = home.closed("grid", first, last)
        pv_closed = home.closed("pv", first, last)
        for t in range(first, last + 1):
            start, end = home.epoch + t * home.interval_s, home.epoch + (t + 1) * home.interval_s
            used, _ = expected_j(grid_profile, start, end)
            produced, _ = expected_j(pv_profile, start, end)
            assert grid_closed[t].status is MEASURED, grid_closed[t]
            assert abs(grid_closed[t].import_j - used) <= tolerance(3_000), (t, grid_closed[t])
            assert pv_closed[t].status is MEASURED, pv_closed[t]
            # The inverter's counter is in whole Wh: 3600 J either way at each end.
            assert abs(pv_closed[t].export_j - produced) <= 2 * 3600 + tolerance(9_000)

        # Every interval is billed to the DSO, with M_t the sources' net energy, and the DSO
        # finds each bill to agree with its own view of the ledger.
        def reconciled() -> dict[int, dict[str, Any]]:
            answer = home.dso.ok("GET", "/bills", params={"meter": METER})["bills"]
            found = {b["interval"]: b for b in answer if first <= b["interval"] <= last}
            done = len(found) == last - first + 1
            return (
                found if done and all(b["status"] == "reconciled" for b in found.values()) else {}
            )

        with serving(home.dso, home.dso_port):
            bills = wait_until(reconciled, WAIT_S, "every bill delivered and reconciled")
        with home.store() as store:
            totals = {t.interval: t for t in store.intervals(first, last, ["grid", "pv"])}
        for t in range(first, last + 1):
            assert bills[t]["discrepancies"] == []
            assert bills[t]["bill"]["measured_j"] == totals[t].net_j
            assert bills[t]["bill"]["issued_epa_w"] == (1_500 if t == target else 0)

        # The monitoring layer got the readings.
        with home.store() as store, store.engine.connect() as conn:
            stored = conn.scalar(
                select(func.count()).select_from(readings).where(readings.c.source == "grid")
            )
        assert stored and stored >= (last - first) * home.interval_s / POLL_S / 2
        wait_until(
            lambda: len(monitor.times("grid_import_kwh")) >= stored * 0.9, WAIT_S, "publishing"
        )
        assert "Traceback" not in home.log_text()
    finally:
        monitor.close()


def test_outages_of_a_device_and_the_broker_leave_intervals_measured_or_missing(
    home: Home,
) -> None:
    grid_steps = mid_interval_steps(home.epoch, home.interval_s, [1_800, 2_400])
    home.grid.set_profile(grid_steps)
    home.pv.set_profile([(0, 0)])
    home.configure(max_gap_s=1, submeter=True)
    feed = Feed(home.broker, power_w=3_600)
    try:
        home.start()
        first = home.interval_now() + 1
        home.wait_interval(first + 2)
        home.grid.stop()  # the meter's Modbus gateway goes away for three intervals
        grid_down = home.interval_now()
        home.wait_interval(grid_down + 3)
        home.grid.start()
        home.broker.stop()  # then the broker, for three intervals
        broker_down = home.interval_now()
        home.wait_interval(broker_down + 3)
        home.broker.start()
        last = home.interval_now() + 6
        for source in ("grid", "pv", "sub"):
            home.wait_closed(source, last)
    finally:
        feed.close()

    grid = home.closed("grid", first, last)
    sub = home.closed("sub", first, last)
    profile = PowerProfile(grid_steps)
    for t in range(first, last + 1):
        start, end = home.epoch + t * home.interval_s, home.epoch + (t + 1) * home.interval_s
        used, _ = expected_j(profile, start, end)
        for name, closed, expected in (("grid", grid, used), ("sub", sub, 3_600 * 2)):
            interval = closed[t]  # every interval is stored, whatever happened in it
            if interval.status is MEASURED:
                assert abs(interval.import_j - expected) <= tolerance(3_600), (name, t, interval)
            else:  # partial or missing: never more energy than there was
                assert interval.import_j <= expected + tolerance(3_600), (name, t, interval)
    # The outages are gaps, and each source measures again after its outage.
    assert grid[grid_down + 2].status is MISSING, grid[grid_down + 2]
    assert sub[broker_down + 2].status is MISSING, sub[broker_down + 2]
    assert all(grid[t].status is MEASURED for t in range(last - 2, last + 1))
    assert all(sub[t].status is MEASURED for t in range(last - 2, last + 1))
    assert home.running()
    assert "Traceback" not in home.log_text()


def test_a_killed_daemon_loses_no_reading_bill_or_queued_report(home: Home) -> None:
    home.grid.set_profile([(0, 2_000)])
    home.pv.set_profile([(0, 0)])
    home.configure()
    monitor = Monitor(home.broker, "emon/home1")
    try:
        home.start()  # the DSO is not serving yet: bills queue up
        first = home.interval_now() + 1
        home.wait_closed("grid", first + 3)
        home.broker.stop()  # readings to publish queue up too
        down_at = time.time()
        with home.store() as store:

            def taken_while_down() -> int:
                found = store.source_readings("grid", limit=1_000_000)
                return sum(r.at > down_at for r in found)

            wait_until(lambda: taken_while_down() >= 1 / POLL_S, WAIT_S, "a second of readings")
            wait_until(lambda: store.pending("bill") >= 3, WAIT_S, "bills queued")
        home.kill()
        home.broker.start()
        assert monitor.subscribed.wait(10), "the monitor did not subscribe again"

        with home.store() as store:
            before = store.readings(after=0, limit=1_000_000)
            queued = {m.key for m in store.due("bill", 1_000)}
            pending = store.pending("bill")
        assert [r.seq for r in before] == list(range(1, len(before) + 1))
        assert pending >= 3

        home.start()
        last = home.interval_now() + 3
        home.wait_closed("grid", last)
        with serving(home.dso, home.dso_port):

            def all_billed() -> bool:
                answer = home.dso.ok("GET", "/bills", params={"meter": METER})["bills"]
                return {b["interval"] for b in answer} >= set(range(first, last + 1))

            wait_until(all_billed, WAIT_S, "every interval's bill at the DSO")
            with home.store() as store:
                wait_until(lambda: store.pending("bill") == 0, WAIT_S, "the queue to empty")
        answer = home.dso.ok("GET", "/bills", params={"meter": METER})["bills"]
        assert {f"bill/{METER}/{b['interval']}" for b in answer} >= queued

        with home.store() as store:
            after = store.readings(after=0, limit=1_000_000)
            grid = {t.interval: t for t in store.intervals(first, last, ["grid"])}
        assert after[: len(before)] == before  # every reading of the first run, unchanged
        for t in range(first, last + 1):
            # The kill is a gap shorter than max_gap_s: its energy is apportioned, exactly.
            assert grid[t].status is MEASURED, grid[t]
            assert abs(grid[t].import_j - 2_000 * home.interval_s) <= tolerance(2_000)
        published = {r.at for r in after if r.source == "grid" and r.problem is None}
        wait_until(
            lambda: published <= monitor.times("grid_import_kwh"), WAIT_S, "every reading published"
        )
    finally:
        monitor.close()


def test_broken_frames_and_payloads_mark_intervals_suspect_and_the_daemon_runs_on(
    home: Home,
) -> None:
    home.grid.set_profile([(0, 1_000)])
    home.pv.set_profile([(0, 0)])
    home.configure(submeter=True)
    feed = Feed(home.broker, power_w=1_800)
    try:
        home.start()
        start = home.interval_now() + 1
        home.wait_interval(start)
        home.grid.override_registers(SDM630_IMPORT_KWH, [0x7FC0, 0x0000])  # float32 NaN
        with home.store() as store:

            def nan_refused() -> bool:
                found = store.source_readings("grid", limit=1_000_000)
                return any(r.problem and "refused frame" in r.problem for r in found)

            wait_until(nan_refused, WAIT_S, "the daemon to refuse the NaN frame")
        home.grid.clear_faults()
        feed.publish_raw(b'{"total": {"in_kwh": "lots"}, "ts": 1}')
        feed.publish_raw(b"\xff not json")
        broken_until = home.interval_now()
        last = broken_until + 4
        for source in ("grid", "sub"):
            home.wait_closed(source, last)
    finally:
        feed.close()
    grid = home.closed("grid", start, last)
    sub = home.closed("sub", start, last)
    assert any(grid[t].status is IntervalStatus.SUSPECT for t in range(start, broken_until + 1))
    assert any(sub[t].status is IntervalStatus.SUSPECT for t in range(start, broken_until + 1))
    assert all(grid[t].status is MEASURED for t in range(last - 1, last + 1))
    assert all(sub[t].status is MEASURED for t in range(last - 1, last + 1))
    log = home.log_text()
    assert "grid: refused a frame" in log
    assert "sub: refused a payload on home/submeter/state" in log
    with home.store() as store:
        problems = [r.problem for r in store.readings(after=0, limit=1_000_000) if r.problem]
    assert any("refused frame" in p for p in problems)
    assert any("refused payload" in p for p in problems)
    assert home.running()
    assert "Traceback" not in log


def test_without_the_ledger_it_measures_on_and_says_so(home: Home) -> None:
    home.grid.set_profile([(0, 1_000)])
    home.pv.set_profile([(0, 0)])
    config = home.configure()
    nowhere = f"http://127.0.0.1:{free_port()}"
    config.write_text(config.read_text().replace(home.dso.ledger_url, nowhere))
    home.start()
    first = home.interval_now() + 1
    home.wait_closed("grid", first + 1)
    assert home.closed("grid", first, first + 1)[first].status is MEASURED
    with home.owner_client() as owner:
        status = wait_until(
            lambda: (found := owner.status())["ledger_error"] and found, WAIT_S, "error"
        )
    assert status["height"] == 0
    with pytest.raises(OwnerApiError) as refused, home.owner_client() as owner:
        owner.deposit_address()
    assert (refused.value.status, refused.value.code) == (503, "ledger_unavailable")
    assert "starting anyway" in home.log_text()


def test_a_ledger_of_another_chain_is_refused_at_start(home: Home) -> None:
    config = home.configure()
    (home.tmp / "other-genesis.json").write_bytes(Scenario().genesis_raw)
    config.write_text(config.read_text().replace('"genesis.json"', '"other-genesis.json"'))
    log = home.tmp / "refused.log"
    process = start_petra("meter", "run", "--config", str(config), log=log)
    assert process.wait(60) == 2
    assert "serves another chain" in log.read_text()
    assert "Traceback" not in log.read_text()
