"""`petra bench ledger --cluster` as a user runs it, on a real three-server NATS cluster: one
JSON object whose figures are of the transfers the run committed through each chain's stream,
never a speed threshold (the figures depend on the machine)."""

from __future__ import annotations

import subprocess

import pytest
from bench_run import PETRA, assert_positive, bench_json

TRANSACTIONS = 1_500
CHAINS = 2


@pytest.mark.slow
def test_bench_ledger_cluster_measures_every_transfer_it_commits() -> None:
    run = bench_json("ledger", "--cluster", "--count", str(TRANSACTIONS), "--chains", str(CHAINS))
    figures = run.figures

    assert_positive(figures, ("cluster_tps", "aggregate_tps", "inprocess_tps", "ratio"))
    assert figures["chains"] == CHAINS and figures["transactions"] == TRANSACTIONS
    assert figures["ratio"] == round(figures["cluster_tps"] / figures["inprocess_tps"], 3)
    # in-process, one chain, then CHAINS chains at once: each phase fits in the run
    phases_s = (
        TRANSACTIONS / figures["inprocess_tps"]
        + TRANSACTIONS / figures["cluster_tps"]
        + CHAINS * TRANSACTIONS / figures["aggregate_tps"]
    )
    assert phases_s <= run.wall_s
    # the cutter's lease expires after 2 s: the next block cannot come sooner than its expiry
    assert 0.5 < figures["failover_s"] < run.wall_s


def test_bench_ledger_cluster_refuses_http_and_a_store() -> None:
    for extra in (["--http"], ["--store", "sqlite:///x.sqlite"]):
        done = subprocess.run(
            [*PETRA, "bench", "ledger", "--cluster", *extra],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2
        assert b"--cluster runs on temporary SQLite files" in done.stderr
