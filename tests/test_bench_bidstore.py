"""`petra bench bidstore --no-tor` as a user runs it: one JSON object, every order accepted,
positive rates, never a speed threshold (the figures depend on the machine)."""

from __future__ import annotations

import pytest
from bench_run import assert_positive, bench_json

ORDERS = 40
CLIENTS = 4


@pytest.mark.slow
def test_bench_bidstore_accepts_every_order_and_prints_one_json_object() -> None:
    result = bench_json("bidstore", "--no-tor", "--orders", str(ORDERS), "--clients", str(CLIENTS))
    assert_positive(result, ("bids_per_s", "baseline_reads_per_s", "ratio", "p50_ms", "p99_ms"))
    assert result["tor_p50_ms"] is None and result["tor_orders"] == 0
    assert result["accepted"] == result["orders"] == ORDERS
    assert result["asks"] + result["bids"] == ORDERS
    assert (result["clients"], result["reads_per_order"]) == (CLIENTS, 1.5)
    assert result["ratio"] == round(result["bids_per_s"] / result["baseline_reads_per_s"], 3)
    assert result["p50_ms"] <= result["p99_ms"]
