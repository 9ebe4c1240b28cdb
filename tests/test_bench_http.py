"""`petra bench ledger --http` as a user runs it: one JSON object with positive rates, never a
speed threshold (the figures depend on the machine)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PETRA = (sys.executable, "-c", "from petra.cli import main; main()")
BENCH_TIMEOUT_S = 300


@pytest.mark.slow
def test_bench_ledger_http_prints_one_json_object() -> None:
    done = subprocess.run(
        [*PETRA, "bench", "ledger", "--http", "--json", "--count", "3000"],
        capture_output=True,
        timeout=BENCH_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1, lines
    result = json.loads(lines[0])
    assert isinstance(result, dict)
    for measure in ("http_tps", "inprocess_tps", "ratio", "p50_ms", "p99_ms"):
        value = result[measure]
        assert isinstance(value, int | float) and not isinstance(value, bool), measure
        assert value > 0, measure
    assert result["ratio"] == round(result["http_tps"] / result["inprocess_tps"], 3)
    assert result["p50_ms"] <= result["p99_ms"]
    assert result["transactions"] == 3000


def test_bench_ledger_http_refuses_a_store() -> None:
    done = subprocess.run(
        [*PETRA, "bench", "ledger", "--http", "--store", "sqlite:///x.sqlite"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert b"--store does not apply to --http" in done.stderr
