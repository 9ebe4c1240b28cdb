"""`petra bench bidstore --no-tor` as a user runs it: one JSON object, every order accepted,
positive rates, never a speed threshold (the figures depend on the machine)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PETRA = (sys.executable, "-c", "from petra.cli import main; main()")
BENCH_TIMEOUT_S = 300
ORDERS = 40
CLIENTS = 4


@pytest.mark.slow
def test_bench_bidstore_accepts_every_order_and_prints_one_json_object() -> None:
    done = subprocess.run(
        [
            *(*PETRA, "bench", "bidstore", "--json", "--no-tor"),
            *("--orders", str(ORDERS), "--clients", str(CLIENTS)),
        ],
        capture_output=True,
        timeout=BENCH_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1, lines
    result = json.loads(lines[0])
    assert isinstance(result, dict)
    for measure in ("bids_per_s", "baseline_reads_per_s", "ratio", "p50_ms", "p99_ms"):
        value = result[measure]
        assert isinstance(value, int | float) and not isinstance(value, bool), measure
        assert value > 0, measure
    assert result["tor_p50_ms"] is None and result["tor_orders"] == 0
    assert result["accepted"] == result["orders"] == ORDERS
    assert result["asks"] + result["bids"] == ORDERS
    assert (result["clients"], result["reads_per_order"]) == (CLIENTS, 1.5)
    assert result["ratio"] == round(result["bids_per_s"] / result["baseline_reads_per_s"], 3)
    assert result["p50_ms"] <= result["p99_ms"]
