"""Italy's incentives (`community.italy`, DM 414/2023): the premium for each plant size and
region worked by hand, shared energy and its attribution to plants, the reserved part of the
premium, and the inputs it refuses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from community.italy import (
    CENTRE,
    NORTH,
    REGIONS,
    SOUTH,
    Plant,
    incentive,
    premium_eur_per_mwh,
    shared_energy,
)

ZONAL = np.array([100.0, 150.0, 200.0])  # EUR/MWh: the zonal term is 80, 30 and 0


# Small (<= 200 kW: base 80, cap 120), middle (70/110), large (60/100), before the correction:
#   Pz = 100: 80 + 80 = 160 -> 120 | 70 + 80 = 150 -> 110 | 60 + 80 = 140 -> 100  (capped)
#   Pz = 150: 80 + 30 = 110        | 70 + 30 = 100        | 60 + 30 = 90
#   Pz = 200: 80 + 0  = 80         | 70 + 0  = 70         | 60 + 0  = 60         (no zonal term)
# then + 10 in the north, + 4 in the centre, + 0 in the south, after the cap.
@pytest.mark.parametrize(
    ("kw", "region", "expected"),
    [
        (50.0, NORTH, [130.0, 120.0, 90.0]),
        (50.0, CENTRE, [124.0, 114.0, 84.0]),
        (50.0, SOUTH, [120.0, 110.0, 80.0]),
        (400.0, NORTH, [120.0, 110.0, 80.0]),
        (400.0, CENTRE, [114.0, 104.0, 74.0]),
        (400.0, SOUTH, [110.0, 100.0, 70.0]),
        (1_000.0, NORTH, [110.0, 100.0, 70.0]),
        (1_000.0, CENTRE, [104.0, 94.0, 64.0]),
        (1_000.0, SOUTH, [100.0, 90.0, 60.0]),
    ],
)
def test_premium_by_size_and_region(kw: float, region: str, expected: list[float]) -> None:
    tip = premium_eur_per_mwh(Plant("p", kw, region), ZONAL)
    assert tip.tolist() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kw", "base"),
    [(200.0, 80.0), (200.5, 70.0), (600.0, 70.0), (600.5, 60.0), (0.0, 80.0)],
)
def test_boundaries_fall_in_the_smaller_class(kw: float, base: float) -> None:
    # Pz = 180: no zonal term, so the premium is the base (south: no correction).
    assert premium_eur_per_mwh(Plant("p", kw), np.array([180.0])).tolist() == [base]


def test_a_plant_that_is_not_photovoltaic_gets_no_regional_correction() -> None:
    plant = Plant("wind", 50.0, NORTH, photovoltaic=False)
    assert premium_eur_per_mwh(plant, ZONAL).tolist() == pytest.approx([120.0, 110.0, 80.0])


def test_a_negative_zonal_price_is_capped() -> None:
    # 80 + (180 + 20) = 280 -> 120, then + 4 in the centre.
    assert premium_eur_per_mwh(Plant("p", 10.0, CENTRE), np.array([-20.0])).tolist() == [124.0]


def test_incentive_of_two_plants_worked_by_hand() -> None:
    small = Plant("roof", 150.0, NORTH)
    middle = Plant("field", 400.0, CENTRE, capital_grant=True)
    injected = np.array([[30.0, 10.0], [0.0, 50.0], [10.0, 0.0]])
    withdrawn = np.array([20.0, 60.0, 0.0])
    # hour 0: shared min(40, 20) = 20, roof 30/40 -> 15, field 10/40 -> 5; Pz 100:
    #         TIP roof 120 + 10 = 130, field 110 + 4 = 114
    # hour 1: shared min(50, 60) = 50, all the field's; Pz 150: TIP field 100 + 4 = 104
    # hour 2: nobody withdraws: shared 0
    # premium roof = 15 * 130 / 1000 = 1.95; field = (5 * 114 + 50 * 104) / 1000 = 5.77
    # valorisation = 70 kWh * 8 EUR/MWh / 1000 = 0.56
    # reserved: roof shared 15 <= 0.55 * 40 = 22 -> 0; field (grant) 55 > 0.45 * 60 = 27,
    #           so 5.77 * (55 - 27) / 55 = 161.56 / 55 = 2.937454...
    result = incentive((small, middle), injected, withdrawn, ZONAL)
    assert result.shared_kwh == pytest.approx(70.0)
    assert result.premium_eur == pytest.approx(7.72)
    assert result.valorisation_eur == pytest.approx(0.56)
    assert result.reserved_premium_eur == pytest.approx(161.56 / 55)
    assert result.free_premium_eur == pytest.approx(7.72 - 161.56 / 55)
    assert [plant_id for plant_id, _, _ in result.per_plant] == ["roof", "field"]
    assert [kwh for _, kwh, _ in result.per_plant] == pytest.approx([15.0, 55.0])
    assert [eur for _, _, eur in result.per_plant] == pytest.approx([1.95, 5.77])


def test_without_a_grant_the_threshold_is_55_percent() -> None:
    plant = Plant("roof", 100.0, SOUTH)
    # 100 kWh injected, 80 shared at Pz 200 (TIP 80): premium 6.4; 80 - 55 = 25 above,
    # reserved 6.4 * 25 / 80 = 2.0; valorisation at 10 EUR/MWh: 0.8.
    result = incentive((plant,), np.array([[100.0]]), np.array([80.0]), np.array([200.0]), 10.0)
    assert result.premium_eur == pytest.approx(6.4)
    assert result.reserved_premium_eur == pytest.approx(2.0)
    assert result.free_premium_eur == pytest.approx(4.4)
    assert result.valorisation_eur == pytest.approx(0.8)


def test_negative_energy_counts_as_none() -> None:
    assert shared_energy(np.array([-5.0, 3.0]), np.array([4.0, -1.0])).tolist() == [0.0, 0.0]
    result = incentive((Plant("p", 10.0),), np.array([[-5.0]]), np.array([4.0]), ZONAL[:1])
    assert result.shared_kwh == 0.0
    assert result.premium_eur == 0.0
    assert result.reserved_premium_eur == 0.0


def bounds(plant: Plant) -> tuple[float, float]:
    """A plant's lowest and highest premium, EUR/MWh: base and cap of its class, corrected."""
    kw = plant.kw
    base, cap = (80.0, 120.0) if kw <= 200 else (70.0, 110.0) if kw <= 600 else (60.0, 100.0)
    correction = {NORTH: 10.0, CENTRE: 4.0, SOUTH: 0.0}[plant.region]
    return (base + correction, cap + correction) if plant.photovoltaic else (base, cap)


kwh = st.floats(-10.0, 1_000.0, allow_nan=False)
prices = st.floats(-50.0, 500.0, allow_nan=False)
plant_kw = st.floats(0.0, 2_000.0, allow_nan=False)


@given(
    st.integers(1, 24).flatmap(
        lambda n: st.tuples(arrays(float, n, elements=kwh), arrays(float, n, elements=kwh))
    )
)
def test_shared_energy_never_exceeds_either_side(sides: tuple[np.ndarray, np.ndarray]) -> None:
    injected, withdrawn = sides
    shared = shared_energy(injected, withdrawn)
    assert np.all(shared >= 0)
    assert np.all(shared <= np.clip(injected, 0, None))
    assert np.all(shared <= np.clip(withdrawn, 0, None))
    assert np.all((shared == np.clip(injected, 0, None)) | (shared == np.clip(withdrawn, 0, None)))


@given(
    kw=plant_kw,
    region=st.sampled_from(REGIONS),
    photovoltaic=st.booleans(),
    zonal=arrays(float, st.integers(1, 24), elements=prices),
)
def test_premium_lies_between_base_and_cap_plus_correction(
    kw: float, region: str, photovoltaic: bool, zonal: np.ndarray
) -> None:
    low, high = bounds(Plant("p", kw, region, photovoltaic))
    tip = premium_eur_per_mwh(Plant("p", kw, region, photovoltaic), zonal)
    assert np.all(tip >= low)
    assert np.all(tip <= high)
    # No zonal term at or above 180 EUR/MWh; every class's cap reached at or below 140.
    assert np.all(tip[zonal >= 180] == low)
    assert np.all(tip[zonal <= 140] == high)


@st.composite
def plant_sets(draw: st.DrawFn) -> tuple[Plant, ...]:
    count = draw(st.integers(1, 4))
    return tuple(
        Plant(
            f"p{i}",
            draw(plant_kw),
            draw(st.sampled_from(REGIONS)),
            draw(st.booleans()),
            draw(st.booleans()),
        )
        for i in range(count)
    )


@st.composite
def configurations(
    draw: st.DrawFn,
) -> tuple[tuple[Plant, ...], np.ndarray, np.ndarray, np.ndarray]:
    plants = draw(plant_sets())
    hours = draw(st.integers(1, 24))
    injected = draw(arrays(float, (hours, len(plants)), elements=kwh))
    withdrawn = draw(arrays(float, hours, elements=kwh))
    zonal = draw(arrays(float, hours, elements=prices))
    return plants, injected, withdrawn, zonal


@given(configurations())
def test_the_premium_splits_into_free_and_reserved(
    configuration: tuple[tuple[Plant, ...], np.ndarray, np.ndarray, np.ndarray],
) -> None:
    result = incentive(*configuration)
    assert result.free_premium_eur + result.reserved_premium_eur == pytest.approx(
        result.premium_eur
    )
    assert 0 <= result.reserved_premium_eur <= result.premium_eur * (1 + 1e-12)
    assert result.free_premium_eur >= -1e-9


@given(configurations())
def test_attribution_to_plants_sums_to_the_total(
    configuration: tuple[tuple[Plant, ...], np.ndarray, np.ndarray, np.ndarray],
) -> None:
    plants, injected, withdrawn, zonal = configuration
    result = incentive(plants, injected, withdrawn, zonal)
    total = shared_energy(np.clip(injected, 0, None).sum(axis=1), withdrawn)
    assert result.shared_kwh == pytest.approx(total.sum())
    assert sum(kwh for _, kwh, _ in result.per_plant) == pytest.approx(result.shared_kwh)
    assert sum(eur for _, _, eur in result.per_plant) == pytest.approx(result.premium_eur)
    for j, (plant, (_, plant_kwh, plant_eur)) in enumerate(
        zip(plants, result.per_plant, strict=True)
    ):
        # A plant is attributed no more than it injected, at a premium within its bounds.
        assert plant_kwh <= np.clip(injected[:, j], 0, None).sum() * (1 + 1e-12)
        low, high = bounds(plant)
        assert plant_kwh * low / 1000 * (1 - 1e-9) <= plant_eur
        assert plant_eur <= plant_kwh * high / 1000 * (1 + 1e-9)


@given(configurations(), st.floats(0.0, 1.0))
def test_nothing_is_reserved_while_shared_stays_within_the_free_share(
    configuration: tuple[tuple[Plant, ...], np.ndarray, np.ndarray, np.ndarray],
    fraction: float,
) -> None:
    plants, injected, _, zonal = configuration
    # Members withdraw at most the free share (45 % with a grant, 55 % otherwise) of each
    # hour's injection, so every plant's shared energy stays within its threshold.
    free_share = 0.45 if any(p.capital_grant for p in plants) else 0.55
    withdrawn = fraction * free_share * np.clip(injected, 0, None).sum(axis=1)
    result = incentive(plants, injected, withdrawn, zonal)
    assert result.reserved_premium_eur == pytest.approx(0.0, abs=1e-9)
    assert result.free_premium_eur == pytest.approx(result.premium_eur)


@given(configurations())
def test_when_members_take_everything_the_share_above_the_threshold_is_reserved(
    configuration: tuple[tuple[Plant, ...], np.ndarray, np.ndarray, np.ndarray],
) -> None:
    plants, injected, _, zonal = configuration
    # Withdrawals cover every hour's injection: each plant's shared energy is all it injected,
    # so 45 % (55 % with a grant) of its premium is reserved.
    withdrawn = np.clip(injected, 0, None).sum(axis=1) + 1.0
    result = incentive(plants, injected, withdrawn, zonal)
    reserved = sum(
        eur * (0.55 if plant.capital_grant else 0.45)
        for plant, (_, _, eur) in zip(plants, result.per_plant, strict=True)
    )
    assert result.reserved_premium_eur == pytest.approx(reserved)


@pytest.mark.parametrize(
    ("plant", "message"),
    [
        (Plant("p", -1.0), "0 kW or more"),
        (Plant("p", float("nan")), "0 kW or more"),
        (Plant("p", 10.0, "west"), "north, centre, south"),
    ],
)
def test_a_bad_plant_is_refused(plant: Plant, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        premium_eur_per_mwh(plant, ZONAL)
    with pytest.raises(ValueError, match=message):
        incentive((plant,), np.ones((3, 1)), np.ones(3), ZONAL)


def test_bad_shapes_and_values_are_refused() -> None:
    plant = Plant("p", 10.0)
    with pytest.raises(ValueError, match="at least one plant"):
        incentive((), np.ones((3, 0)), np.ones(3), ZONAL)
    with pytest.raises(ValueError, match="its own"):
        incentive((plant, plant), np.ones((3, 2)), np.ones(3), ZONAL)
    with pytest.raises(ValueError, match="must be"):
        incentive((plant,), np.ones((3, 2)), np.ones(3), ZONAL)
    with pytest.raises(ValueError, match="must be"):
        incentive((plant,), np.ones((3, 1)), np.ones(3), ZONAL[:2])
    with pytest.raises(ValueError, match="one value per hour"):
        incentive((plant,), np.ones((3, 1)), np.ones((3, 1)), ZONAL)
    with pytest.raises(ValueError, match="finite"):
        incentive((plant,), np.full((3, 1), np.inf), np.ones(3), ZONAL)
    with pytest.raises(ValueError, match="finite"):
        premium_eur_per_mwh(plant, np.array([np.nan]))
    with pytest.raises(ValueError, match="0 or more"):
        incentive((plant,), np.ones((3, 1)), np.ones(3), ZONAL, -1.0)
    with pytest.raises(ValueError, match="same hours"):
        shared_energy(np.ones(3), np.ones(2))
