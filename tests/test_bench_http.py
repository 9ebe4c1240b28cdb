"""`petra bench ledger --http` as a user runs it: one JSON object whose figures are of the
transfers the run committed, never a speed threshold (the figures depend on the machine)."""

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

TRANSACTIONS = 3000
CLIENTS = 8


@pytest.mark.slow
def test_bench_ledger_http_measures_every_transfer_it_commits() -> None:
    run = bench_json("ledger", "--http", "--count", str(TRANSACTIONS), "--clients", str(CLIENTS))
    figures = run.figures
    assert figures["clients"] == CLIENTS
    # The documented figures: every transfer was acknowledged by the node.
    assert_positive(figures, ("http_tps", "inprocess_tps", "ratio", "p50_ms", "p99_ms"))
    assert figures["transactions"] == TRANSACTIONS
    assert_rates_fit_the_run(run, TRANSACTIONS, ("http_tps", "inprocess_tps"))
    assert_latencies_fit_the_rate(figures, TRANSACTIONS, "http_tps")


def test_bench_ledger_http_refuses_a_store() -> None:
    done = subprocess.run(
        [*PETRA, "bench", "ledger", "--http", "--store", "sqlite:///x.sqlite"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert b"--store does not apply to --http" in done.stderr
