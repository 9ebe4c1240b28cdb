"""`petra bench monitor` on a small run: a real mosquitto and `petra monitor serve`, every
figure measured and printed against its baseline (no timing is asserted)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from simulation.bench.monitor import run_monitor_bench
from simulation.broker import mosquitto_executable


def test_the_bench_measures_every_path_and_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    if mosquitto_executable() is None:
        pytest.skip("mosquitto not installed: run `make system-deps` (Debian's mosquitto)")
    result = run_monitor_bench(
        True, Console(stderr=True), http_samples=2_000, mqtt_samples=2_000, pages=2
    )
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) >= {"http_samples_per_s", "mqtt_samples_per_s", "year_page_s"}
    assert printed["http_samples"] == 2_000 and printed["mqtt_samples"] == 2_000
    for figure in ("http_samples_per_s", "mqtt_samples_per_s", "year_page_s"):
        assert printed[figure] == getattr(result, figure) > 0
