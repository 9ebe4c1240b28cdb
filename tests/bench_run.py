"""Running `petra bench ...` as a user does, for the bench tests: one JSON object on standard
output, its figures held against what the run did (never a speed threshold: the figures depend
on the machine)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PETRA = (sys.executable, "-c", "from petra.cli import main; main()")
BENCH_TIMEOUT_S = 300
# Rates and latencies are printed rounded, and a client thread may send its first request a
# hair before the bench starts its clock.
SLACK = 1.05


@dataclass(frozen=True)
class BenchRun:
    """What one `petra bench ... --json` printed, and how long the command ran."""

    figures: dict[str, Any]
    wall_s: float  # seconds, as this test timed the whole command


def bench_json(*args: str) -> BenchRun:
    """Run `petra bench ARGS --json`: the one JSON object it prints; fails the test otherwise."""
    started = time.monotonic()
    done = subprocess.run(
        [*PETRA, "bench", *args, "--json"],
        capture_output=True,
        timeout=BENCH_TIMEOUT_S,
        check=False,
    )
    wall_s = time.monotonic() - started
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 1, lines
    figures = json.loads(lines[0])
    assert isinstance(figures, dict)
    return BenchRun(figures, wall_s)


def assert_positive(figures: dict[str, Any], measures: Iterable[str]) -> None:
    """Each of `measures` is present and a number above 0."""
    for measure in measures:
        value = figures[measure]
        assert isinstance(value, int | float) and not isinstance(value, bool), measure
        assert value > 0, measure


def assert_rates_fit_the_run(run: BenchRun, count: int, rates: Iterable[str]) -> None:
    """Each rate (per second) is of `count` items handled within this run: handling them at
    those rates, one phase after another, takes no longer than the command ran."""
    phases_s = sum(count / run.figures[rate] for rate in rates)
    assert phases_s <= run.wall_s, (phases_s, run.wall_s, run.figures)


def assert_latencies_fit_the_rate(figures: dict[str, Any], count: int, rate: str) -> None:
    """`p50_ms` and `p99_ms` are round trips of the `count` items timed for `rate`, sent by
    `figures["clients"]` clients with one in flight each: no round trip outlasts the timed
    sending, and the round trips' sum, at least `count / 2 * p50`, fits in the clients' time."""
    sending_s = count / figures[rate]
    p50_s, p99_s = figures["p50_ms"] / 1000, figures["p99_ms"] / 1000
    assert p50_s <= p99_s <= sending_s * SLACK, figures
    assert count / 2 * p50_s <= figures["clients"] * sending_s * SLACK, figures
