"""`/readyz` of the smart-meter daemon and of the monitoring service against real processes:
it turns unready when their MQTT broker (a mosquitto process of the test's own) is killed or
the ledger node process stops, and ready again when they return on the same port.

The meter is `petra meter run` as its own process, over a ledger node process; its one source
is an MQTT submeter with a wide `max_gap_s`, so only the links move its readiness. The
monitoring service is `petra monitor serve --config`, reading MQTT from the same kind of
broker. Both services' metrics are scraped from their own ports and parsed by
prometheus-client's text parser."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.publish
import pytest
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until

from assets import Keypair
from assets.keyfile import dump_keys
from simulation.broker import Mosquitto, mosquitto_executable
from simulation.processes import free_port, start_petra, stop, wait_serving
from simulation.scenario import Scenario

pytestmark = pytest.mark.slow

PASSPHRASE = "health test passphrase"
METER = "ES0021000000000001AB"
WAIT_S = 30


@pytest.fixture(name="broker")
def broker_fixture(tmp_path: Path) -> Iterator[Mosquitto]:
    """A mosquitto process of this test's own, which it may kill and start again."""
    executable = mosquitto_executable()
    if executable is None:
        pytest.skip("mosquitto not installed: run `make system-deps`")
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    broker = Mosquitto(executable, workdir, free_port())
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(workdir, ignore_errors=True)


Sample = tuple[str, frozenset[tuple[str, str]]]  # a metric's name and labels


def sample(name: str, **labels: str) -> Sample:
    return name, frozenset(labels.items())


def scrape(url: str) -> dict[Sample, float]:
    """Every sample of the metrics at `url`, by name and labels, parsed as Prometheus does."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        (one.name, frozenset(one.labels.items())): one.value
        for family in text_string_to_metric_families(text)
        for one in family.samples
    }


def readiness(url: str) -> tuple[int, dict[str, str]]:
    """`/readyz`'s status and its checks (each `ok` or what is wrong)."""
    try:
        answer = httpx.get(f"{url}/readyz", timeout=5)
    except httpx.TransportError as exc:
        return 0, {"http": str(exc)}
    body: dict[str, Any] = answer.json()
    checks = body["checks"] if answer.status_code == 200 else body["error"]["checks"]
    return answer.status_code, checks


def wait_ready(url: str, what: str) -> None:
    wait_until(lambda: readiness(url)[0] == 200, WAIT_S, f"{what} ready: {readiness(url)}")


def wait_unready(url: str, check: str, words: str, what: str) -> dict[str, str]:
    """The checks once `/readyz` is 503 with `check` saying `words`."""

    def unready() -> dict[str, str] | None:
        status, checks = readiness(url)
        return checks if status == 503 and words in checks.get(check, "") else None

    return wait_until(unready, WAIT_S, f"{what} unready for {check}: {readiness(url)}")


class Ledger:
    """`petra ledger serve` of a scenario on a fixed port, which the test stops and restarts."""

    def __init__(self, folder: Path, scenario: Scenario) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.genesis = folder / "genesis.json"
        self.genesis.write_bytes(scenario.genesis_raw)
        self.keys = folder / "ledger-keys.json"
        self.keys.write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
        self.runs = 0
        self.start()

    def start(self) -> None:
        self.runs += 1
        log = self.folder / f"ledger-{self.runs}.log"
        self.process = start_petra(
            *("ledger", "serve", "--genesis", str(self.genesis), "--keys", str(self.keys)),
            *("--store", f"sqlite:///{self.folder / 'ledger.sqlite'}", "--port", str(self.port)),
            log=log,
            unset=("PETRA_PASSPHRASE",),
        )
        wait_serving(self.url, self.process, log, probe="/v1/genesis", what="ledger node")

    def stop(self) -> None:
        stop(self.process)


def test_the_meters_readiness_follows_its_broker_and_its_ledger(
    tmp_path: Path, broker: Mosquitto
) -> None:
    scenario = Scenario(epoch=int(time.time()) - 100, interval_s=10)
    ledger = Ledger(tmp_path, scenario)
    (tmp_path / "meter-keys.json").write_bytes(
        dump_keys({"meter": Keypair.generate()}, PASSPHRASE.encode())
    )
    api_port = free_port()
    (tmp_path / "meter.toml").write_text(
        f'[meter]\nid = "{METER}"\nkeys = "meter-keys.json"\ngenesis = "genesis.json"\n'
        f'owner = "{Keypair.generate().public_key.hex()}"\nledger = "{ledger.url}"\n'
        f'dso = "http://127.0.0.1:{free_port()}"\nstore = "sqlite:///meter.sqlite"\n'
        f"closing_delay_s = 1\ncredit_line = 0\napi_port = {api_port}\n\n"
        f'[publish]\nport = {broker.port}\nnode = "home1"\n\n'
        f'[[source]]\nname = "sub"\nkind = "mqtt"\nport = {broker.port}\nformat = "json"\n'
        f'topic = "home/submeter/state"\npoll_s = 1\nmax_gap_s = 600\n'
        '[source.paths]\n"$.total.in_kwh" = { quantity = "import_wh", factor = 1000 }\n'
    )
    log, metrics_port = tmp_path / "meter.log", free_port()
    meter = start_petra(
        *("meter", "run", "--config", str(tmp_path / "meter.toml")),
        *("--metrics-port", str(metrics_port)),
        log=log,
        env={"PETRA_PASSPHRASE": PASSPHRASE},
    )
    url, metrics = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{metrics_port}"
    sub, caught_up = (
        sample("petra_meter_source_connected", source="sub"),
        sample("petra_meter_ledger_caught_up"),
    )
    try:
        wait_serving(url, meter, log, probe="/healthz", what="meter daemon")
        wait_ready(url, "the meter")
        figures = scrape(metrics)
        assert figures[sub] == figures[caught_up] == 1
        assert figures[sample("petra_meter_publisher_connected")] == 1

        # A submeter's reading is stored, counted, and published to the monitoring layer.
        payload = b'{"total": {"in_kwh": 12.5}}'
        paho.mqtt.publish.single(
            "home/submeter/state", payload, 1, hostname=broker.host, port=broker.port
        )
        readings = sample("petra_meter_readings_total", source="sub")
        published = sample("petra_meter_published_total")
        wait_until(lambda: scrape(metrics)[readings] == 1, WAIT_S, "the reading counted")
        wait_until(lambda: scrape(metrics)[published] == 1, WAIT_S, "the reading published")

        broker.stop(kill=True)
        checks = wait_unready(url, "broker", "not connected to the MQTT broker", "the meter")
        assert "source sub" in checks["broker"] and "the publisher" in checks["broker"]
        assert checks["ledger"] == "ok"
        assert scrape(metrics)[sub] == 0
        broker.start()
        wait_ready(url, "the meter with its broker back")
        assert scrape(metrics)[sub] == 1

        ledger.stop()
        checks = wait_unready(url, "ledger", ledger.url, "the meter")
        assert checks["broker"] == "ok"
        assert scrape(metrics)[caught_up] == 0
        ledger.start()
        wait_ready(url, "the meter with its ledger back")
        assert scrape(metrics)[caught_up] == 1
        assert httpx.get(f"{url}/healthz", timeout=5).json() == {"status": "alive"}
    finally:
        stop(meter)
        ledger.stop()
    assert "Traceback" not in log.read_text()


def test_the_monitors_readiness_and_metrics_follow_its_broker(
    tmp_path: Path, broker: Mosquitto
) -> None:
    port, metrics_port = free_port(), free_port()
    config = tmp_path / "monitor.toml"
    config.write_text(
        f'[service]\nstore = "sqlite:///monitor.sqlite"\nport = {port}\n'
        f"metrics_port = {metrics_port}\n\n"
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        'client_id = "petra-monitor-health"\n'
    )
    log = tmp_path / "monitor.log"
    process = start_petra("monitor", "serve", "--config", str(config), log=log)
    url = f"http://127.0.0.1:{port}"

    def broker_connected() -> float:
        return scrape(f"http://127.0.0.1:{metrics_port}")[sample("petra_monitor_broker_connected")]

    try:
        wait_serving(url, process, log, probe="/healthz", what="the monitoring service")
        wait_ready(url, "the monitoring service")
        assert broker_connected() == 1
        broker.stop(kill=True)
        wait_unready(url, "broker", f"{broker.host}:{broker.port}", "the monitoring service")
        assert broker_connected() == 0
        broker.start()
        wait_ready(url, "the monitoring service with its broker back")
        assert broker_connected() == 1
        paho.mqtt.publish.single(
            "emon/house/import_kwh", "1.5", hostname=broker.host, port=broker.port
        )
        wait_until(
            lambda: (
                scrape(f"http://127.0.0.1:{metrics_port}").get(
                    sample("petra_monitor_samples_total", via="mqtt"), 0
                )
                >= 1
            ),
            WAIT_S,
            "the MQTT sample counted",
        )
    finally:
        stop(process)
