"""`petra sim device` (issue 16): its profiles (tests/integration/test_sim_device.py serves one)."""

from __future__ import annotations

import pytest

from simulation.trydevice import day_origin, device_profile

MIDNIGHT = day_origin()  # the replayed day starts at the last local midnight


def test_a_constant_profile() -> None:
    assert device_profile("1500")(MIDNIGHT + 123.0) == 1500.0
    assert device_profile("-700.5")(0.0) == -700.5


def test_a_pv_day_is_dark_at_night_and_bright_at_noon() -> None:
    pv = device_profile("pv:4")
    assert pv(MIDNIGHT + 2 * 3600) == 0.0
    assert 2_000 < pv(MIDNIGHT + 13 * 3600) <= 4_000
    faster = device_profile("pv:4", speed=24.0)  # a day an hour
    assert faster(MIDNIGHT + 13 * 3600 / 24) == pv(MIDNIGHT + 13 * 3600)


def test_a_household_always_draws_power() -> None:
    home = device_profile("home:3500")
    assert all(home(MIDNIGHT + h * 3600) > 0 for h in range(24))


@pytest.mark.parametrize(
    ("spec", "speed", "words"),
    [
        ("lots", 1.0, "not a power in W"),
        ("pv:x", 1.0, "'x' is not a number"),
        ("pv:-1", 1.0, "(> 0)"),
        ("wind:5", 1.0, "pv:KWP or home:KWH"),
        ("1000", 0.0, "--speed must be above 0"),
    ],
)
def test_a_bad_profile_is_one_sentence(spec: str, speed: float, words: str) -> None:
    with pytest.raises(ValueError, match=None) as refused:
        device_profile(spec, speed)
    assert words in str(refused.value) and "\n" not in str(refused.value)
