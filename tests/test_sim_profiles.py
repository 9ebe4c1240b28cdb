"""The homes' profiles: BDEW load, pvlib PV and the self-consumption battery, seeded."""

from __future__ import annotations

import dataclasses
import re
import warnings
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulation.config import HomeSpec, SimConfig, load_config
from simulation.devices import PowerProfile
from simulation.profiles import (
    HomePlan,
    apportion,
    meter_id,
    plan_community,
    self_consumption,
    surface,
)

CUPS = re.compile(r"ES[0-9]{16}[A-Z]{2}")
METER_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


DAY = {"start": "2026-06-21T00:00", "intervals": 96}  # a whole day, from midnight


def day_config(overrides: dict[str, Any] | None = None) -> SimConfig:
    """The default configuration over the whole of its day (the default covers its daylight)."""
    return load_config(None, {**DAY, **(overrides or {})})


def one_kwp(**overrides: Any) -> SimConfig:
    """One home with 1 kWp of PV and no battery, its load without noise, over a whole day."""
    return load_config(
        None,
        {
            **DAY,
            "homes": 1,
            "weather": "clear",
            "home_defaults.pv_share": 1.0,
            "home_defaults.pv_kwp": 1.0,
            "home_defaults.pv_kwp_spread": 0.0,
            "home_defaults.annual_kwh_spread": 0.0,
            "home_defaults.battery_share": 0.0,
            "home_defaults.noise": 0.0,
            **overrides,
        },
    )


def kwh(power_w: np.ndarray[Any, Any], interval_s: int) -> float:
    return float(np.sum(power_w) * interval_s / 3.6e6)


def h0_w(year: int) -> Any:
    """demandlib's H0 for a year, W for 1 kWh a year, indexed by local time."""
    from demandlib import bdew  # type: ignore[import-untyped]

    with warnings.catch_warnings():  # demandlib makes every warning an error while it builds
        return bdew.ElecSlp(year).get_scaled_power_profiles({"h0": 1.0})["h0"] * 1000


def test_a_community_of_the_default_configuration() -> None:
    config = day_config()
    plans = plan_community(config)
    assert [plan.name for plan in plans] == [f"home-{n:02d}" for n in range(1, 11)]
    assert sorted(plan.strategy for plan in plans) == sorted(
        ["forecast"] * 4 + ["zero_intelligence"] * 3 + ["passive"] * 3
    )
    assert sum(plan.pv_kwp > 0 for plan in plans) == 6
    assert sum(plan.battery_kwh > 0 for plan in plans) == 2
    ids = [plan.meter_id for plan in plans]
    assert len(set(ids)) == len(ids)
    assert all(CUPS.fullmatch(i) and METER_ID.fullmatch(i) for i in ids)
    for plan in plans:
        for series in (plan.load_w, plan.pv_w, plan.battery_w, plan.net_w):
            assert series.shape == (96,) and series.dtype == np.float64
        assert np.all(plan.load_w >= 0) and np.all(plan.pv_w >= 0)
        assert np.array_equal(plan.net_w, plan.load_w - plan.pv_w + plan.battery_w)
        if plan.pv_kwp == 0:
            assert not plan.pv_w.any()
        if plan.battery_kwh == 0:
            assert not plan.battery_w.any()
        else:
            # It charges from surplus only, and discharges for the home's own load only.
            own = plan.load_w - plan.pv_w
            assert np.all(plan.battery_w <= np.maximum(-own, 0) + 1e-9)
            assert np.all(-plan.battery_w <= np.maximum(own, 0) + 1e-9)
            assert plan.battery_w.max() > 0


def test_the_same_seed_plans_the_same_homes() -> None:
    config = day_config({"homes": 12})

    def arrays(plans: list[HomePlan]) -> list[tuple[Any, ...]]:
        return [(p.meter_id, p.strategy, p.load_w, p.pv_w, p.battery_w) for p in plans]

    first, again = arrays(plan_community(config)), arrays(plan_community(config))
    for a, b in zip(first, again, strict=True):
        assert a[:2] == b[:2] and all(
            np.array_equal(x, y) for x, y in zip(a[2:], b[2:], strict=True)
        )
    other = plan_community(dataclasses.replace(config, seed=2))
    assert not np.array_equal(other[0].load_w, plan_community(config)[0].load_w)
    assert other[0].meter_id != first[0][0]


def test_the_load_follows_the_h0_profile_in_local_time_across_the_new_year() -> None:
    config = one_kwp(start="2026-12-31T12:00", intervals=96, **{"home_defaults.pv_share": 0.0})
    load = plan_community(config)[0].load_w
    h0_2026, h0_2027 = h0_w(2026), h0_w(2027)
    expected = np.concatenate(
        [
            h0_2026.loc[slice("2026-12-31 12:00", None)].to_numpy(),
            h0_2027.loc[slice(None, "2027-01-01 11:45")].to_numpy(),
        ]
    )
    assert np.allclose(load, 3500 * expected)
    summer = plan_community(one_kwp(intervals=4, **{"home_defaults.pv_share": 0.0}))[0].load_w
    assert np.allclose(
        summer, 3500 * h0_2026.loc[slice("2026-06-21 00:00", "2026-06-21 00:45")].to_numpy()
    )


def test_a_year_of_load_is_the_annual_consumption() -> None:
    config = load_config(
        None,
        {
            "homes": 3,
            "start": "2026-01-01T00:00",
            "intervals": 365 * 96,
            "weather": "clear",
            "home_defaults.annual_kwh_spread": 0.0,
        },
    )
    for plan in plan_community(config):
        assert kwh(plan.load_w, 900) == pytest.approx(3500, rel=0.02)


def test_pv_is_dark_at_night_and_peaks_near_solar_noon() -> None:
    pv = plan_community(one_kwp())[0].pv_w  # 21 June in Crevillent, local time (UTC+2)
    hours = np.arange(96) / 4
    assert not pv[(hours < 6) | (hours >= 22)].any()
    # Solar noon at 0.8 degrees west is about 14:05 in summer time.
    assert 13.5 <= hours[np.argmax(pv)] <= 14.5
    assert 650 <= pv.max() <= 950
    assert 5.0 <= kwh(pv, 900) <= 8.0


def test_clouds_only_take_away() -> None:
    clear = plan_community(one_kwp(homes=5))
    cloudy = plan_community(one_kwp(homes=5, weather="cloudy"))
    for a, b in zip(clear, cloudy, strict=True):
        assert np.all(b.pv_w <= a.pv_w + 1e-9)
        assert np.array_equal(a.load_w, b.load_w)
    assert sum(kwh(p.pv_w, 900) for p in cloudy) < sum(kwh(p.pv_w, 900) for p in clear)
    # Shared clouds: the homes' days differ a little, not wholly.
    days = np.array([kwh(p.pv_w, 900) for p in cloudy])
    assert days.std() / days.mean() < 0.05


@pytest.mark.parametrize("interval_s", [60, 300, 3600])
def test_the_interval_length_does_not_change_a_day(interval_s: int) -> None:
    day = {"homes": 8, "home_defaults.noise": 0.0, "home_defaults.battery_share": 0.0}
    reference = plan_community(day_config(day))
    config = day_config({**day, "interval_s": interval_s, "intervals": 86_400 // interval_s})
    plans = plan_community(config)
    for a, b in zip(reference, plans, strict=True):
        assert kwh(b.load_w, interval_s) == pytest.approx(kwh(a.load_w, 900), rel=0.01)
        assert kwh(b.pv_w, interval_s) == pytest.approx(kwh(a.pv_w, 900), rel=0.01, abs=1e-9)


def test_load_noise_has_mean_one() -> None:
    quiet = plan_community(day_config({"homes": 200, "home_defaults.noise": 0.0}))
    noisy = plan_community(day_config({"homes": 200}))
    total = sum(kwh(p.load_w, 900) for p in noisy)
    assert total == pytest.approx(sum(kwh(p.load_w, 900) for p in quiet), rel=0.01)
    ratio = np.concatenate([n.load_w / q.load_w for n, q in zip(noisy, quiet, strict=True)])
    assert ratio.min() >= 0 and ratio.std() == pytest.approx(0.15, rel=0.1)


def test_listed_homes_are_planned_as_given() -> None:
    homes = (
        HomeSpec("alice", 4200.0, 5.0, 10.0, 5.0, "forecast"),
        HomeSpec("bob", 2500.0),
    )
    config = dataclasses.replace(day_config({"weather": "clear"}), home_specs=homes, homes=2)
    alice, bob = plan_community(config)
    assert (alice.name, alice.strategy, alice.pv_kwp, alice.battery_kwh) == (
        "alice",
        "forecast",
        5.0,
        10.0,
    )
    assert (bob.name, bob.strategy, bob.annual_kwh) == ("bob", "passive", 2500.0)
    assert not bob.pv_w.any() and not bob.battery_w.any()
    assert alice.pv_w.max() > 3000 and alice.battery_w.max() > 0


def test_strategies_are_apportioned_to_their_weights() -> None:
    weights = {"forecast": 0.4, "zero_intelligence": 0.3, "passive": 0.3}
    assert apportion(weights, 10).count("forecast") == 4
    assert len(apportion(weights, 7)) == 7
    assert apportion({"passive": 1.0, "forecast": 0.0}, 3) == ["passive"] * 3


def test_meter_ids_are_cups_like() -> None:
    ids = {meter_id(1, n) for n in range(1000)}
    assert len(ids) == 1000 and all(CUPS.fullmatch(i) for i in ids)
    assert meter_id(1, 5) == meter_id(1, 5) != meter_id(2, 5)


def test_the_pv_plane_faces_the_equator() -> None:
    config = day_config()
    assert surface(config.location) == (38.249, 180.0)
    south = dataclasses.replace(config.location, latitude=-70.0)
    assert surface(south) == (60.0, 0.0)


def test_a_dst_day_has_its_hours() -> None:
    start = datetime(2026, 10, 25, tzinfo=ZoneInfo("Europe/Madrid"))  # 25 hours long
    config = dataclasses.replace(one_kwp(), start=start, intervals=100)
    load = plan_community(config)[0].load_w
    assert np.all(load > 0) and np.isfinite(load).all()


powers = st.floats(-5000, 5000, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    net=st.lists(powers, min_size=1, max_size=60),
    interval_s=st.sampled_from([4, 60, 300, 900, 3600]),
    capacity=st.floats(0, 20_000),
    power=st.floats(0, 6000),
    efficiency=st.floats(0.5, 1.0),
    start=st.floats(0, 1),
)
def test_the_battery_controller_keeps_its_bounds(
    net: list[float],
    interval_s: int,
    capacity: float,
    power: float,
    efficiency: float,
    start: float,
) -> None:
    load = np.array(net)
    soc0 = start * capacity
    battery, soc = self_consumption(load, interval_s, capacity, power, efficiency, soc0)
    tolerance = 1e-6 * (1 + capacity + power)
    assert battery.shape == soc.shape == load.shape
    assert np.all(soc >= 0) and np.all(soc <= capacity)
    assert np.all(np.abs(battery) <= power + tolerance)
    assert np.all(battery <= np.maximum(-load, 0) + tolerance)  # charges from surplus only
    assert np.all(-battery <= np.maximum(load, 0) + tolerance)  # never exports
    hours = interval_s / 3600
    charged = np.maximum(battery, 0).sum() * hours
    discharged = np.maximum(-battery, 0).sum() * hours
    assert soc[-1] - soc0 == pytest.approx(charged * efficiency - discharged, abs=tolerance)


def test_the_battery_controller_on_a_day() -> None:
    # Surplus fills it (90 % stored), the evening empties it, the night finds it empty.
    net = np.array([-3000.0, -3000.0, -3000.0, 1000.0, 2000.0, 4000.0, 500.0])
    battery, soc = self_consumption(net, 3600, 5000.0, 2500.0, 0.9, 1000.0)
    assert battery.tolist() == pytest.approx([2500, 1750 / 0.9, 0, -1000, -2000, -2000, 0])
    assert soc.tolist() == pytest.approx([3250, 5000, 5000, 4000, 2000, 0, 0])
    with pytest.raises(ValueError, match="soc0"):
        self_consumption(net, 900, 100.0, 10.0, 0.9, 200.0)
    with pytest.raises(ValueError, match="efficiency"):
        self_consumption(net, 900, 100.0, 10.0, 0.0, 0.0)


def test_homes_are_planned_side_by_side() -> None:
    net = np.array([[-3000.0, 500.0, 2000.0], [1000.0, -4000.0, 800.0]])
    both, soc = self_consumption(net, 900, np.array([5000.0, 2000.0]), 2500.0, 0.9, 500.0)
    for row in range(2):
        alone, alone_soc = self_consumption(
            net[row], 900, [5000.0, 2000.0][row], 2500.0, 0.9, 500.0
        )
        assert np.array_equal(both[row], alone) and np.array_equal(soc[row], alone_soc)


def test_a_grid_meter_counts_the_net() -> None:
    # Driven by the net as steps, a simulated SDM630 counts each interval's mean times its length.
    plan = next(p for p in plan_community(day_config()) if p.battery_kwh > 0)
    start = 1_000_000.0
    steps = [(start + 900 * k, float(net)) for k, net in enumerate(plan.net_w)]
    meter = PowerProfile(steps)
    for k, net in enumerate(plan.net_w):
        imported, exported = meter.energy_wh(start + 900 * k, start + 900 * (k + 1))
        assert imported == pytest.approx(max(net, 0) / 4) and exported == pytest.approx(
            max(-net, 0) / 4
        )
