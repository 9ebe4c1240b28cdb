"""`petra bench dso` as a user runs it: one JSON object, every bill reconciled, positive rates,
never a speed threshold (the figures depend on the machine)."""

from __future__ import annotations

import subprocess

import pytest
from bench_run import PETRA, assert_positive, bench_json

BILLS = 20
METERS = 4
CLIENTS = 4


@pytest.mark.slow
def test_bench_dso_reconciles_every_bill_and_prints_one_json_object() -> None:
    result = bench_json(
        *("dso", "--bills", str(BILLS), "--meters", str(METERS)),
        *("--clients", str(CLIENTS)),
    )
    assert_positive(result, ("bills_per_s", "baseline_reads_per_s", "ratio", "p50_ms", "p99_ms"))
    assert result["reconciled"] == result["bills"] == BILLS
    assert (result["meters"], result["clients"], result["reads_per_bill"]) == (METERS, CLIENTS, 2)
    assert result["ratio"] == round(result["bills_per_s"] / result["baseline_reads_per_s"], 3)
    assert result["meters_per_dso"] == int(result["bills_per_s"] * 900)
    assert result["p50_ms"] <= result["p99_ms"]


def test_bench_dso_refuses_more_meters_than_bills() -> None:
    done = subprocess.run(
        [*PETRA, "bench", "dso", "--bills", "3", "--meters", "4"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert b"--meters (4) must not exceed --bills (3)" in done.stderr
