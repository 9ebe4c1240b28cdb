"""`petra bench ledger --http` as a user runs it: one JSON object with positive rates, never a
speed threshold (the figures depend on the machine)."""

from __future__ import annotations

import subprocess

import pytest
from bench_run import PETRA, assert_positive, bench_json


@pytest.mark.slow
def test_bench_ledger_http_prints_one_json_object() -> None:
    result = bench_json("ledger", "--http", "--count", "3000")
    assert_positive(result, ("http_tps", "inprocess_tps", "ratio", "p50_ms", "p99_ms"))
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
