"""`petra bench community` (issue 19): its JSON shape and the synthetic communities it draws."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from petra.cli import app
from simulation import pv_year_kwh_per_kwp
from simulation.bench.community import PV_SHARE, synthetic_community


def test_bench_community_prints_one_json_object_of_results() -> None:
    run = CliRunner().invoke(app, ["bench", "community", "--json", "--sizes", "10", "--seed", "3"])
    assert run.exit_code == 0, run.output
    document = json.loads(run.stdout)
    assert list(document) == ["results"]
    (row,) = document["results"]
    assert {"members", "seconds", "objective", "best_static_objective"} <= set(row)
    assert row["members"] == 10
    assert row["hours"] == 8_760
    assert row["seconds"] > 0
    # in-sample the hourly optimiser beats the best static agreement, dynamic beats both
    assert row["dynamic_objective"] >= row["objective"] >= row["best_static_objective"]
    assert row["best_static_objective"] >= row["equal_objective"]
    assert row["dynamic_out_of_sample_objective"] >= row["out_of_sample_objective"]


def test_bench_community_refuses_a_size_that_is_no_number() -> None:
    run = CliRunner().invoke(app, ["bench", "community", "--sizes", "ten"])
    assert run.exit_code == 2
    assert "--sizes" in run.output
    assert "Traceback" not in run.output


def test_a_synthetic_community_is_drawn_from_its_seed() -> None:
    community = synthetic_community(20, seed=5)
    again = synthetic_community(20, seed=5)
    np.testing.assert_array_equal(community.train.consumption, again.train.consumption)
    np.testing.assert_array_equal(community.test.generation, again.test.generation)
    assert community.profiles == again.profiles
    train, test = community.train, community.test
    assert train.consumption.shape == test.consumption.shape == (8_760, 20)
    assert train.members == test.members
    # PV sized to 40-60 % of the train year's consumption (before moving it onto next year)
    share = train.generation.sum() / train.consumption.sum()
    assert PV_SHARE[0] - 0.05 < share < PV_SHARE[1] + 0.05
    # the test year is another draw: its own noise and clouds
    assert not np.allclose(train.consumption, test.consumption)
    assert test.generation.sum() != pytest.approx(train.generation.sum(), rel=1e-6)
    # every rule holds for equal shares, so "equal" needs no adjustment
    assert community.rules.check(train.members, np.full(20, 1 / 20)) == []
    assert community.rules.poverty


def test_a_year_of_pv_per_kwp_is_hourly_and_follows_the_sun() -> None:
    # On the equator at Greenwich, UTC: the sun is up from about 06:00 to 18:00 every day
    hourly = pv_year_kwh_per_kwp(2024, 0.0, 0.0, "UTC")
    assert hourly.shape == (8_784,)
    days = hourly.reshape(366, 24)
    assert np.all(days[:, :5] == 0) and np.all(days[:, 19:] == 0)
    assert np.all((days.argmax(axis=1) >= 11) & (days.argmax(axis=1) <= 12))  # noon
    # a clear sky on a plane of 0 tilt: 1,700-2,400 kWh per kWp a year, never above 1 kWh/h
    assert 1_700 < hourly.sum() < 2_400
    assert hourly.max() <= 1.0
