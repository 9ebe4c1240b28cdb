"""The metrics and the health of the smart-meter daemon and of the monitoring service, scraped
and parsed by prometheus-client's own text parser: the figures move as readings, outages,
posts, MQTT messages and refusals arrive, and `/readyz` names what is wrong.

The meter reads the session's simulated SDM630 (in this process) on its manual clock, polled
by the test; the ledger, the DSO and the brokers are addresses nothing listens on."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from services.modbus import ModbusDevices
from waiting import wait_until

from assets import Keypair
from monitoring.api import create_app
from monitoring.config import MqttSettings
from monitoring.keys import create_key
from monitoring.mqtt_ingest import MqttIngest
from monitoring.service import MonitorService
from monitoring.store import MonitoringStore
from simulation.processes import free_port
from simulation.scenario import Scenario
from smartmeter.config import MeterConfig, PublishConfig, SourceConfig
from smartmeter.node import MeterNode

METER = "ES0021000000000001AB"
INTERVAL_S = 10
POLL_S = 2
MAX_GAP_S = 6
NOW = 1_750_000_000  # the monitoring service's clock

Figures = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(registry: CollectorRegistry) -> Figures:
    """Every sample of a scrape, by name and labels, as a Prometheus server parses it."""
    text = generate_latest(registry).decode()
    return {
        (one.name, frozenset(one.labels.items())): one.value
        for family in text_string_to_metric_families(text)
        for one in family.samples
    }


def figure(figures: Figures, name: str, **labels: str) -> float:
    return figures[(name, frozenset(labels.items()))]


# ---------------------------------------------------------------- the meter


@pytest.fixture(name="node")
def node_fixture(tmp_path: Path, modbus_devices: ModbusDevices) -> Iterator[MeterNode]:
    """A meter over the simulated SDM630 as source `grid` and a publisher to a broker that is
    not there, not started: the test polls its source."""
    clock = modbus_devices.clock
    epoch = math.ceil(clock() / INTERVAL_S) * INTERVAL_S + INTERVAL_S
    clock.advance(epoch - clock())
    scenario = Scenario(interval_s=INTERVAL_S, epoch=epoch)
    device = modbus_devices.meter
    grid = SourceConfig(
        "sdm630", device.host, device.port, POLL_S, device.device_id, {}, "grid", MAX_GAP_S
    )
    nowhere = f"http://127.0.0.1:{free_port()}"
    config = MeterConfig(
        meter=METER,
        keys=tmp_path / "meter-keys.json",
        genesis=tmp_path / "genesis.json",
        owner=Keypair.generate().public_key,
        ledger=nowhere,
        dso=nowhere,
        store=f"sqlite:///{tmp_path / 'meter.sqlite'}",
        closing_delay_s=1,
        credit_line=0,
        api_port=free_port(),
        sources=(grid,),
        publish=PublishConfig("127.0.0.1", free_port(), "home1", "emon"),
    )
    node = MeterNode(config, scenario.genesis, Keypair.generate(), clock=clock)
    yield node
    node.stop()


def test_the_meters_figures_move_as_its_source_reads_and_fails(
    node: MeterNode, modbus_devices: ModbusDevices
) -> None:
    clock = modbus_devices.clock
    modbus_devices.meter.set_profile([(0.0, 3_600.0)])
    runner = node.runners[0]
    before = scrape(node.registry)
    assert figure(before, "petra_meter_readings_total", source="grid") == 0
    assert figure(before, "petra_meter_intervals_total", source="grid", state="measured") == 0
    assert figure(before, "petra_meter_bills_queued") == 0
    assert figure(before, "petra_meter_ledger_height") == 0
    assert figure(before, "petra_meter_publisher_connected") == 0
    assert figure(before, "petra_meter_published_total") == 0
    assert "process_resident_memory_bytes" in {name for name, _ in before}

    polls = 3 * INTERVAL_S // POLL_S + 1
    for _ in range(polls):
        runner.poll_once()
        clock.advance(POLL_S)
    read = scrape(node.registry)
    assert figure(read, "petra_meter_readings_total", source="grid") == polls
    assert figure(read, "petra_meter_source_errors_total", source="grid") == 0
    assert figure(read, "petra_meter_source_connected", source="grid") == 1
    assert figure(read, "petra_meter_reading_age_seconds", source="grid") == POLL_S
    assert figure(read, "petra_meter_intervals_total", source="grid", state="measured") >= 2
    assert figure(read, "petra_meter_intervals_total", source="grid", state="missing") == 0

    modbus_devices.meter.stop()  # the meter's Modbus gateway goes away
    for _ in range(4):
        clock.advance(POLL_S)
        runner.poll_once()
    cut = scrape(node.registry)
    assert figure(cut, "petra_meter_readings_total", source="grid") == polls
    assert figure(cut, "petra_meter_source_errors_total", source="grid") == 4
    assert figure(cut, "petra_meter_source_connected", source="grid") == 0
    assert figure(cut, "petra_meter_reading_age_seconds", source="grid") == 5 * POLL_S


def test_the_meters_readiness_names_the_silent_source_the_ledger_and_the_broker(
    node: MeterNode, modbus_devices: ModbusDevices
) -> None:
    clock = modbus_devices.clock
    with TestClient(node.app()) as http:
        assert http.get("/healthz").json() == {"status": "alive"}
        node.runners[0].poll_once()
        answer = http.get("/readyz")
        assert answer.status_code == 503
        checks = answer.json()["error"]["checks"]
        assert checks["store"] == "ok"
        assert checks["sources"] == "ok"
        assert "has not answered yet" in checks["ledger"]
        assert node.config.publish is not None
        publisher = f"the publisher to 127.0.0.1:{node.config.publish.port}"
        assert checks["broker"] == f"not connected to the MQTT broker: {publisher}"
        clock.advance(MAX_GAP_S + 1)
        checks = http.get("/readyz").json()["error"]["checks"]
        assert checks["sources"] == f"no reading from grid for {MAX_GAP_S + 1} s (max_gap_s 6)"
        node.runners[0].poll_once()
        assert http.get("/readyz").json()["error"]["checks"]["sources"] == "ok"


def test_the_meters_store_failing_leaves_the_other_figures_in_the_scrape(node: MeterNode) -> None:
    database = Path(node.config.store.removeprefix("sqlite:///"))
    node.store.close()  # its pool is emptied: the next query opens the file again
    database.unlink()
    database.mkdir()  # where the file was, a folder: SQLite cannot open it
    figures = scrape(node.registry)
    assert ("petra_meter_bills_queued", frozenset()) not in figures
    assert figure(figures, "petra_meter_readings_total", source="grid") == 0


# ---------------------------------------------------------------- the monitoring service


@pytest.fixture(name="monitor")
def monitor_fixture(tmp_path: Path) -> Iterator[MonitorService]:
    """A monitoring service ingesting MQTT from a broker that is not there (started)."""
    store = MonitoringStore(f"sqlite:///{tmp_path / 'monitor.sqlite'}")
    ingest = MqttIngest(store, MqttSettings(port=free_port(), client_id="test-metrics"))
    ingest.start()
    yield MonitorService(store, clock=lambda: NOW, mqtt=ingest)
    ingest.close()
    store.close()


def test_the_monitors_figures_move_as_samples_and_refusals_arrive(
    monitor: MonitorService,
) -> None:
    assert monitor.mqtt is not None
    key = create_key(monitor.store, "emonhub", "write", None, NOW)
    http = TestClient(create_app(monitor))
    before = scrape(monitor.registry)
    assert figure(before, "petra_monitor_samples_total", via="emoncms") == 0
    assert figure(before, "petra_monitor_samples_total", via="mqtt") == 0
    assert figure(before, "petra_monitor_feeds") == 0
    assert figure(before, "petra_monitor_broker_connected") == 0
    assert ("petra_monitor_last_sample_age_seconds", frozenset()) not in before

    posted = http.get(
        "/input/post",
        params={"node": "house", "fulljson": '{"power": 1200, "e_kwh": 3}', "apikey": key},
    )
    assert posted.status_code == 200, posted.text
    refused = http.get(
        "/input/post", params={"node": "house", "fulljson": '{"power": "x"}', "apikey": key}
    )
    assert refused.status_code == 400
    monitor.mqtt.receive("emon/flat2", b'{"power_w": 800, "time": %d}' % (NOW - 30))
    monitor.mqtt.receive("emon/flat2", b"not json")
    monitor.mqtt.receive("emon/flat2", b"[]")

    def written() -> Figures:
        figures = scrape(monitor.registry)
        moved = figure(figures, "petra_monitor_samples_total", via="mqtt") == 1
        counted = (
            "petra_monitor_refusals_total",
            frozenset({("via", "mqtt"), ("code", "bad_payload")}),
        )
        return figures if moved and counted in figures else {}

    after = wait_until(written, 10, "the MQTT samples and refusals counted")
    assert figure(after, "petra_monitor_samples_total", via="emoncms") == 2
    assert figure(after, "petra_monitor_refusals_total", via="mqtt", code="bad_payload") == 2
    assert figure(after, "petra_monitor_refusals_total", via="input/post", code="bad_value") == 1
    assert figure(after, "petra_monitor_feeds") == 3
    assert figure(after, "petra_monitor_last_sample_age_seconds") == 0


def test_the_monitors_health_answers_without_a_session_and_names_the_broker(
    monitor: MonitorService,
) -> None:
    http = TestClient(create_app(monitor))
    assert http.get("/healthz").json() == {"status": "alive"}
    answer = http.get("/readyz")
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "not_ready"
    assert error["checks"]["store"] == "ok"
    assert error["checks"]["broker"].startswith("not subscribed at the MQTT broker at 127.0.0.1:")
    without = TestClient(create_app(MonitorService(monitor.store, clock=lambda: NOW)))
    assert without.get("/readyz").json() == {"status": "ready", "checks": {"store": "ok"}}
