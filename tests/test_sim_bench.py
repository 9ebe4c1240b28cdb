"""`petra bench sim` (issue 16): its JSON shape, and the figure a run of processes reports."""

from __future__ import annotations

import json

import pytest
from test_cli import petra, refused

from simulation.bench.sim import busy_percentile


def test_bench_sim_prints_one_json_object_of_results() -> None:
    run = petra(
        "bench", "sim", "--json", "--in-process", "2,3", "--processes", "", "--intervals", "2"
    )
    assert run.code == 0, run.err
    document = json.loads(run.out)
    assert list(document) == ["results"]
    rows = document["results"]
    assert [(r["prosumers"], r["mode"]) for r in rows] == [(2, "in-process"), (3, "in-process")]
    for row in rows:
        assert set(row) == {"prosumers", "mode", "seconds_per_interval"}
        assert row["seconds_per_interval"] > 0


def test_bench_sim_refuses_a_size_that_is_no_number() -> None:
    assert "--in-process" in refused(petra("bench", "sim", "--in-process", "ten"))


@pytest.mark.parametrize(
    ("busy", "share", "expected"),
    [([], 0.95, 0.0), ([3.0], 0.95, 3.0), ([float(n) for n in range(1, 21)], 0.95, 19.0)],
)
def test_the_processes_figure_is_a_nearest_rank_percentile_of_busy_seconds(
    busy: list[float], share: float, expected: float
) -> None:
    assert busy_percentile(busy, share) == expected
    assert busy_percentile(list(reversed(busy)), share) == expected
