"""`petra sim run` as people run it (issue 16): a community of real processes on loopback, its
record read back from the nodes, conservation checked from the ledger and the bills alone;
Ctrl-C stops every process and keeps the partial report; a bad configuration stops the start
with one sentence.

The run is short (three homes, a few intervals at noon) but whole: ledger, replica, DSO,
mixer, bid store, a `petra meter run` daemon per home reading its simulated Modbus devices,
and each home's wallet driven by its agent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_until

from simulation import load_config, simulate
from simulation.processes import PETRA
from simulation.record import RunRecord

pytestmark = pytest.mark.clocked  # the agents act per interval of a clock 120 times the wall's

JOULES_PER_KWH = 3_600_000
SMALL = {"homes": 3, "intervals": 4, "start": "2026-06-21T12:00", "mix_pool": 3}


def petra_processes_in(folder: Path) -> list[int]:
    """Pids of processes whose command line names `folder` (the run's nodes and meters)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(folder) in command:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module", name="run")
def run_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunRecord, dict[str, Any], Path]]:
    folder = tmp_path_factory.mktemp("sim-run") / "run"
    config = load_config(None, {**SMALL, "monitor": True})  # and its monitoring (issue 18)
    outcome = simulate(config, folder=folder)
    yield outcome.record, outcome.metrics, folder


@pytest.mark.slow
def test_a_small_community_conserves_money_and_energy(
    run: tuple[RunRecord, dict[str, Any], Path],
) -> None:
    record, metrics, folder = run
    assert record.complete and record.mode == "processes"
    assert petra_processes_in(folder) == []  # every process the harness started is gone

    # Every home billed every interval of the run, and the DSO reconciled every bill.
    meters = {h.meter_id for h in record.homes}
    for t in record.intervals:
        assert {b["meter"] for b in record.bills if b["interval"] == t} == meters, t
    assert len(record.reconciled) == len(record.bills)
    assert set(record.reconciled.values()) == {"reconciled"}

    # Money: every FA micro-unit issued is deposited, held or spent; here all deposited, as
    # no cycle was left open at the end of the run.
    conservation = metrics["conservation"]
    assert conservation["problems"] == [] and conservation["ok"]
    assert conservation["fa_issued"] == conservation["fa_unspent"] > 0
    assert conservation["fa_issued"] == conservation["fa_deposited"] + conservation["fa_held"]
    assert conservation["fa_held"] == 0

    # Energy: each bill's E_t is its measured energy less what was sold (EPA issued and not
    # deposited back) plus what was bought, and across homes the traded EPA cancels out.
    interval_s = record.interval_s
    for bill in record.bills:
        sold_w = bill["issued_epa_w"] - bill["deposited_epa_w"]
        assert bill["energy_j"] == bill["measured_j"] + sold_w * interval_s
    assert conservation["energy_identity_ok"]

    # What the meters measured is what the devices were driven by (the meter apportions
    # energy across interval boundaries between its reads, so per home over the whole run).
    for home in record.homes:
        measured = sum(b["measured_j"] for b in record.bills if b["meter"] == home.meter_id)
        driven = sum(home.net_w(k) * interval_s for k in range(len(record.intervals)))
        assert measured == pytest.approx(driven, rel=0.05, abs=0.05 * JOULES_PER_KWH)


@pytest.mark.slow
def test_the_report_is_written_and_redrawn(run: tuple[RunRecord, dict[str, Any], Path]) -> None:
    _, metrics, folder = run
    assert json.loads((folder / "metrics.json").read_text()) == metrics
    assert RunRecord.load(folder / "record.json").complete
    html = (folder / "report.html").read_text()
    assert "Crevillent solar community" in html and html.count("Plotly.newPlot") >= 5
    for home in json.loads((folder / "record.json").read_text())["homes"]:
        assert (folder / "homes" / home["name"] / "agent.jsonl").exists()


@pytest.mark.slow
def test_the_monitoring_service_kept_every_homes_readings_for_its_member(
    run: tuple[RunRecord, dict[str, Any], Path],
) -> None:
    """`--monitor`: the meters published their readings over MQTT, `petra monitor serve`
    stored them under the homes' supply points, and each member's login shows their own."""
    from fastapi.testclient import TestClient

    from monitoring.api import create_app
    from monitoring.service import MonitorService
    from monitoring.store import MonitoringStore

    record, _, folder = run
    store = MonitoringStore(f"sqlite:///{folder / 'monitor' / 'monitor.sqlite'}")
    try:
        start, end = 0, 2**31
        for home in record.homes:
            roles = {f.role: f for f in store.feeds(supply_points=[home.meter_id])}
            assert set(roles) == {"consumption", "export"}
            consumption = roles["consumption"]
            assert (consumption.node, consumption.name) == (home.name, "grid_import_kwh")
            samples = store.samples(consumption.id, start, end)
            assert len(samples) >= len(record.intervals)
        assert store.refusals() == []
        logins = dict(
            line.split()[:2]
            for line in (folder / "monitor" / "logins.txt").read_text().splitlines()
        )
        home = record.homes[0]
        other = record.homes[1]
        with TestClient(create_app(MonitorService(store))) as http:
            form = http.get("/login")
            token = form.text.split('name="csrf" value="')[1].split('"')[0]
            signed_in = http.post(
                "/login",
                data={"username": home.name, "password": logins[home.name], "csrf": token},
                follow_redirects=False,
            )
            assert signed_in.status_code == 303
            day = http.get(
                f"/member/supply/{home.meter_id}", params={"view": "day", "date": "2026-06-21"}
            )
            assert day.status_code == 200 and home.meter_id in day.text
            consumed = day.text.split('id="total-consumption">')[1].split(" kWh")[0]
            assert float(consumed.replace(",", "")) > 0
            assert http.get(f"/member/supply/{other.meter_id}").status_code == 404
    finally:
        store.close()


@pytest.mark.slow
def test_ctrl_c_stops_every_process_and_keeps_the_partial_report(tmp_path: Path) -> None:
    config = tmp_path / "sim.toml"
    config.write_text('homes = 2\nintervals = 40\nstart = "2026-06-21T12:00"\nmix_pool = 2\n')
    reports = tmp_path / "reports"
    process = subprocess.Popen(
        [*PETRA, "sim", "run", "--config", str(config), "--dir", str(reports)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(
            lambda: any(reports.glob("*/homes/*/meter.log")) or process.poll() is not None,
            120,
            "the homes to start",
        )
        assert process.poll() is None, process.communicate()
        time.sleep(10)  # a few intervals run
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err.decode()
    assert "Traceback" not in err.decode()
    (folder,) = reports.iterdir()
    assert "stopped early" in err.decode() and str(folder.name) in err.decode()
    record = RunRecord.load(folder / "record.json")
    assert not record.complete
    assert (folder / "report.html").exists() and (folder / "metrics.json").exists()
    assert petra_processes_in(folder) == []


def sim_run_refuses(tmp_path: Path, toml: str, *words: str) -> str:
    config = tmp_path / "sim.toml"
    config.write_text(toml)
    done = subprocess.run(
        [*PETRA, "sim", "run", "--config", str(config), "--dir", str(tmp_path / "r")],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 2, done
    message = done.stderr.decode().strip()
    assert message.startswith("error:") and "Traceback" not in message
    assert len(message.splitlines()) <= 2  # one sentence (a long one may wrap once)
    for word in words:
        assert word in message, message
    return message


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ("homes = 3\nhoems = 4\n", ("hoems",)),
        ("[home_defaults]\npv_kwp = -1.0\n", ("home_defaults.pv_kwp",)),
        ("[location]\nlatitude = 91.0\n", ("location.latitude",)),
    ],
)
def test_a_bad_configuration_stops_the_start_with_one_sentence(
    tmp_path: Path, toml: str, words: tuple[str, ...]
) -> None:
    sim_run_refuses(tmp_path, toml, *words)


def test_a_port_in_use_stops_the_start_with_one_sentence(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = sim_run_refuses(tmp_path, f"homes = 2\nbase_port = {port}\n", str(port))
    assert "in use" in message
    assert not any((tmp_path / "r").glob("*/nodes/*.log"))  # nothing was started


@pytest.mark.postgres
@pytest.mark.slow
def test_a_community_on_postgresql_keeps_each_node_in_a_database_of_its_own(
    postgres_server: Any, tmp_path: Path
) -> None:
    import psycopg

    config = load_config(
        None, {**SMALL, "homes": 2, "intervals": 2, "store": f"{postgres_server.base_url}/postgres"}
    )
    outcome = simulate(config, folder=tmp_path / "pg-run")
    assert outcome.record.complete and outcome.metrics["conservation"]["ok"]
    assert set(outcome.record.reconciled.values()) == {"reconciled"}
    with psycopg.connect(
        host=postgres_server.host, port=postgres_server.port, user="petra", dbname="postgres"
    ) as connection:
        names = {row[0] for row in connection.execute("SELECT datname FROM pg_database")}
    made = {n for n in names if n.startswith("petra_pg_run_")}
    assert made == {
        "petra_pg_run_ledger",
        "petra_pg_run_replica",
        "petra_pg_run_dso",
        *(f"petra_pg_run_meter_{h.name.replace('-', '_')}" for h in outcome.record.homes),
    }


@pytest.mark.tor
@pytest.mark.slow
def test_with_tor_the_agents_reach_the_bid_store_only_through_its_onion_service(
    tmp_path: Path,
) -> None:
    from simulation.tornet import tor_executables

    if tor_executables() is None:
        pytest.skip("tor and tor-gencert are not installed: no private Tor network to run on")
    config = load_config(None, {**SMALL, "intervals": 6, "tor": True})
    outcome = simulate(config, folder=tmp_path / "tor-run")
    assert outcome.record.complete and outcome.record.tor
    assert outcome.metrics["conservation"]["ok"]
    log = (tmp_path / "tor-run" / "nodes" / "bidstore.log").read_text()
    assert ".onion" in log
    placed = [
        json.loads(line)
        for home in outcome.record.homes
        for line in (tmp_path / "tor-run" / "homes" / home.name / "agent.jsonl").open()
    ]
    orders = [s for s in placed if s["name"] == "order" and "(order " in s["text"]]
    steps = "\n".join(f"{s['interval']} {s['name']} {s['outcome']}: {s['text']}" for s in placed)
    assert orders, f"no agent placed an order through the onion service:\n{steps}"
    assert not [s for s in placed if s["name"] == "order" and s["outcome"] == "failed"]
