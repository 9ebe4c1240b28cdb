"""`petra bench bidstore --no-tor` as a user runs it: one JSON object, every order in the
store's book, figures of the orders the run posted, never a speed threshold (the figures depend
on the machine)."""

from __future__ import annotations

import pytest
from bench_run import (
    assert_latencies_fit_the_rate,
    assert_positive,
    assert_rates_fit_the_run,
    bench_json,
)

ORDERS = 40
CLIENTS = 4


@pytest.mark.slow
def test_bench_bidstore_measures_orders_that_land_in_the_book() -> None:
    run = bench_json("bidstore", "--no-tor", "--orders", str(ORDERS), "--clients", str(CLIENTS))
    figures = run.figures
    assert_positive(figures, ("bids_per_s", "baseline_reads_per_s", "ratio", "p50_ms", "p99_ms"))
    assert figures["tor_p50_ms"] is None and figures["tor_orders"] == 0  # --no-tor
    # `accepted` is counted in the store's book after the run: every order posted landed.
    assert figures["accepted"] == figures["orders"] == ORDERS
    assert figures["asks"] + figures["bids"] == ORDERS
    assert figures["clients"] == CLIENTS
    assert_rates_fit_the_run(run, ORDERS, ("bids_per_s", "baseline_reads_per_s"))
    assert_latencies_fit_the_rate(figures, ORDERS, "bids_per_s")
