"""`petra ledger serve --config` as a real process: the file's table sets its options (relative
paths from the file's folder; the environment and flags win over it), `--log-format json` makes
every line of its log a JSON object, the passphrase `$PETRA_PASSPHRASE` holds appears in none,
and its metrics port answers in the Prometheus text format."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from assets.keyfile import dump_keys
from simulation.processes import HOST, PetraProcess, free_port
from simulation.scenario import Scenario

PASSPHRASE = "correct horse battery staple"


def test_a_ledger_configured_by_file_logs_json_without_its_passphrase(tmp_path: Path) -> None:
    scenario = Scenario()
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "genesis.json").write_bytes(scenario.genesis_raw)
    sealed = dump_keys({"sequencer-0": scenario.sequencer}, PASSPHRASE.encode())
    (folder / "ledger-keys.json").write_bytes(sealed)
    port, metrics_port = free_port(), free_port()
    config = folder / "ledger.toml"
    config.write_text(
        "[ledger]\n"
        'genesis = "genesis.json"\nkeys = "ledger-keys.json"\n'
        'store = "sqlite:///ledger.sqlite"\n'
        f"port = {port}\nmetrics_port = {metrics_port}\n"
        'log_level = "warning"\nlog_format = "text"\n'  # the environment and the flag win
    )
    log = tmp_path / "ledger.log"
    node = PetraProcess(
        ["ledger", "serve", "--config", str(config), "--log-format", "json"],
        log,
        f"http://{HOST}:{port}",
        probe="/v1/genesis",
        what="ledger node",
        env={"PETRA_PASSPHRASE": PASSPHRASE, "PETRA_LOG_LEVEL": "info"},
        unset=(),
    )
    try:
        node.wait_until_serving()
        served = httpx.get(f"{node.url}/v1/genesis", timeout=5).json()
        scraped = httpx.get(f"http://{HOST}:{metrics_port}/metrics", timeout=5)
        names = {family.name for family in text_string_to_metric_families(scraped.text)}
    finally:
        node.stop()

    assert served["name"] == scenario.genesis.name
    assert scraped.status_code == 200
    assert any(name.startswith("petra_ledger") for name in names), sorted(names)
    assert (folder / "ledger.sqlite").exists()  # the file's folder, not the test's
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert {line["role"] for line in lines} == {"ledger"}
    messages = [line["message"] for line in lines]
    assert any(f"metrics on http://{HOST}:{metrics_port}/metrics" in m for m in messages)
    assert any(line["logger"] == "petra.requests" for line in lines)  # info, not warning
    assert PASSPHRASE not in text
