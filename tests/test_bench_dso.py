"""`petra bench dso` as a user runs it: one JSON object, every bill reconciled, figures of the
bills the run posted, never a speed threshold (the figures depend on the machine)."""

from __future__ import annotations

import subprocess

import pytest
from bench_run import (
    PETRA,
    assert_latencies_fit_the_rate,
    assert_positive,
    assert_rates_fit_the_run,
    bench_json,
)

BILLS = 20
METERS = 4
CLIENTS = 4


@pytest.mark.slow
def test_bench_dso_measures_bills_that_are_all_reconciled() -> None:
    run = bench_json(
        *("dso", "--bills", str(BILLS), "--meters", str(METERS)),
        *("--clients", str(CLIENTS)),
    )
    figures = run.figures
    measures = ("bills_per_s", "baseline_reads_per_s", "ratio", "p50_ms", "p99_ms")
    assert_positive(figures, (*measures, "meters_per_dso"))
    # The bench fails unless the DSO node answered every bill `reconciled`.
    assert figures["reconciled"] == figures["bills"] == BILLS
    assert (figures["meters"], figures["clients"]) == (METERS, CLIENTS)
    assert_rates_fit_the_run(run, BILLS, ("bills_per_s", "baseline_reads_per_s"))
    assert_latencies_fit_the_rate(figures, BILLS, "bills_per_s")


def test_bench_dso_refuses_more_meters_than_bills() -> None:
    done = subprocess.run(
        [*PETRA, "bench", "dso", "--bills", "3", "--meters", "4"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert b"--meters (4) must not exceed --bills (3)" in done.stderr
