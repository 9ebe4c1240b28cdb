"""`petra bench meter --json` as a user runs it: a ledger, a DSO, a broker, two Modbus devices
and the meter daemon as processes on loopback, measured for a few seconds; the figures are in
sane ranges (no goal is asserted) and the meter did its work: readings of both devices reached
the broker and its bills reached the DSO."""

from __future__ import annotations

import json
import subprocess

import pytest

from simulation.broker import mosquitto_executable
from simulation.processes import PETRA


@pytest.mark.slow
def test_the_bench_measures_a_working_meter_against_its_baseline_and_goals() -> None:
    if mosquitto_executable() is None:
        pytest.skip("mosquitto not installed: run `make system-deps` (Debian's mosquitto)")
    run = subprocess.run(
        [*PETRA, "bench", "meter", "--json", "--seconds", "5"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    figures = json.loads(run.stdout)
    assert 10 < figures["rss_mb"] < 1_000
    assert figures["rss_mean_mb"] <= figures["rss_mb"]
    assert 0 <= figures["cpu_share"] < 1
    baseline = figures["baseline"]
    assert 5 < baseline["rss_mb"] < figures["rss_mb"]
    assert 0 <= baseline["cpu_share"] < figures["cpu_share"] + 0.01
    assert figures["goals"] == {"rss_mb": 80.0, "cpu_share": 0.05}
    assert figures["rss_vs_goal"] == pytest.approx(figures["rss_mb"] / 80, abs=0.001)
    assert figures["rss_vs_baseline"] == pytest.approx(
        figures["rss_mb"] / baseline["rss_mb"], abs=0.01
    )
    assert figures["seconds"] >= 5 and figures["samples"] >= 10
    # Both devices were polled and their readings published; an interval was billed.
    assert figures["published_by_source"]["grid"] > 0
    assert figures["published_by_source"]["pv"] > 0
    assert figures["readings_published"] == sum(figures["published_by_source"].values())
    assert figures["bills_received"] > 0
    assert figures["simulated_minutes"] > 1
