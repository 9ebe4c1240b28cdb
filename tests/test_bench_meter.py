"""`petra bench meter`'s measures of a process, read from /proc, and its refusal to run without
what the meter needs. The whole bench, as processes: tests/integration/test_bench_meter.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from petra.cli import app
from simulation.bench import meter as meter_bench


def test_cpu_seconds_count_what_a_process_spends() -> None:
    before = meter_bench.cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # spend 0.2 s of CPU
        pass
    spent = meter_bench.cpu_seconds(os.getpid()) - before
    assert 0.15 <= spent <= 0.5


def test_cpu_seconds_of_a_sleeping_process_stay_near_zero() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        time.sleep(0.5)  # past the interpreter's start
        before = meter_bench.cpu_seconds(sleeper.pid)
        time.sleep(0.5)
        assert meter_bench.cpu_seconds(sleeper.pid) - before <= 0.02
    finally:
        sleeper.kill()
        sleeper.wait()


def test_resident_memory_follows_what_a_process_holds() -> None:
    before = meter_bench.rss_bytes(os.getpid())
    held = bytearray(64 * 1024 * 1024)
    for at in range(0, len(held), 4096):  # touch every page: resident, not only reserved
        held[at] = 1
    grown = meter_bench.rss_bytes(os.getpid()) - before
    assert 60 * 1024 * 1024 <= grown <= 80 * 1024 * 1024
    del held


def test_without_mosquitto_the_bench_says_so_and_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(meter_bench, "mosquitto_executable", lambda: None)
    result = CliRunner().invoke(app, ["bench", "meter", "--json", "--seconds", "1"])
    assert result.exit_code == 2
    assert "needs mosquitto" in result.output
    assert "Traceback" not in result.output
