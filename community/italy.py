"""Italy's renewable energy communities (CER, DM 414/2023, DESIGN.md section 11): hourly shared
energy, the premium tariff by plant size, zonal price and region, ARERA's valorisation, and the
share of the premium reserved for non-business members or social uses.

    shared_h   = min(sum_p injected_ph, withdrawn_h)                       kWh
    shared_ph  = shared_h * injected_ph / sum_q injected_qh                kWh (pro rata)
    TIP_ph     = min(cap_p, base_p + max(0, 180 - Pz_h)) + correction_p    EUR/MWh
    premium_p  = sum_h shared_ph * TIP_ph / 1000                           EUR
    reserved_p = premium_p * max(0, shared_p - pct_p * injected_p) / shared_p
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

NORTH, CENTRE, SOUTH = "north", "centre", "south"
REGIONS = (NORTH, CENTRE, SOUTH)

KWH_PER_MWH = 1_000
ZONAL_REFERENCE_EUR_PER_MWH = 180.0  # the zonal term is what Pz falls short of 180 EUR/MWh
# Size classes by peak power: a plant of exactly 200 kW is small, one of exactly 600 kW middle
# (the decree's "<= 200 kW", "> 200 and <= 600 kW", "> 600 kW").
SMALL_MAX_KW, MIDDLE_MAX_KW = 200.0, 600.0
SMALL_BASE_CAP = (80.0, 120.0)  # EUR/MWh
MIDDLE_BASE_CAP = (70.0, 110.0)
LARGE_BASE_CAP = (60.0, 100.0)
# Photovoltaic plants in the north and centre earn a little more (less sun); added after the cap.
PV_CORRECTION_EUR_PER_MWH = {NORTH: 10.0, CENTRE: 4.0, SOUTH: 0.0}
# Our reading of DM 414/2023: the premium on the shared energy above this share of a plant's
# injected energy goes to non-business members or social uses; the rest is free.
FREE_SHARE = 0.55
FREE_SHARE_WITH_GRANT = 0.45


@dataclass(frozen=True, slots=True)
class Plant:
    """A plant of the configuration: id, peak power kW, region (NORTH/CENTRE/SOUTH), whether
    it is photovoltaic (the regional correction applies only to PV) and whether it received a
    capital grant (which lowers the free share of the premium to 45 %)."""

    id: str
    kw: float
    region: str = SOUTH
    photovoltaic: bool = True
    capital_grant: bool = False


def _check_plant(plant: Plant) -> None:
    if not math.isfinite(plant.kw) or plant.kw < 0:
        raise ValueError(
            f"plant {plant.id!r} has a peak power of {plant.kw} kW; give a power of 0 kW or more"
        )
    if plant.region not in REGIONS:
        raise ValueError(
            f"plant {plant.id!r} is in region {plant.region!r}; use one of {', '.join(REGIONS)}"
        )


def _hourly(values: FloatArray, name: str) -> FloatArray:
    """`values` as a finite (hours,) float array, else ValueError naming it."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(
            f"{name} must hold one value per hour, not an array of shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds a value that is not a finite number")
    return array


def _base_cap(kw: float) -> tuple[float, float]:
    if kw <= SMALL_MAX_KW:
        return SMALL_BASE_CAP
    if kw <= MIDDLE_MAX_KW:
        return MIDDLE_BASE_CAP
    return LARGE_BASE_CAP


def _correction(plant: Plant) -> float:
    return PV_CORRECTION_EUR_PER_MWH[plant.region] if plant.photovoltaic else 0.0


def shared_energy(injected: FloatArray, withdrawn: FloatArray) -> FloatArray:
    """Per hour, min(energy injected by the configuration's plants, energy withdrawn by its
    members), kWh; both (hours,), negatives count as none."""
    into_grid = _hourly(injected, "the injected energy")
    from_grid = _hourly(withdrawn, "the withdrawn energy")
    if into_grid.shape != from_grid.shape:
        raise ValueError(
            f"the injected energy covers {into_grid.size} hours and the withdrawn energy "
            f"{from_grid.size}; give both for the same hours"
        )
    return np.minimum(np.clip(into_grid, 0.0, None), np.clip(from_grid, 0.0, None))


def premium_eur_per_mwh(plant: Plant, zonal_price_eur_per_mwh: FloatArray) -> FloatArray:
    """TIP_h = min(cap, base + max(0, 180 - Pz_h)) + regional PV correction, EUR/MWh, per hour."""
    _check_plant(plant)
    zonal = _hourly(zonal_price_eur_per_mwh, "the zonal price")
    base, cap = _base_cap(plant.kw)
    zonal_term = np.clip(ZONAL_REFERENCE_EUR_PER_MWH - zonal, 0.0, None)
    return np.minimum(cap, base + zonal_term) + _correction(plant)


@dataclass(frozen=True, slots=True)
class Incentive:
    """A configuration's incentives over a period, EUR (floats, rounded to cents for display):
    shared energy kWh, premium and valorisation, and the premium split into the part the
    community may distribute freely and the part reserved for non-business members or social
    uses; per plant, its shared energy (kWh) and premium (EUR)."""

    shared_kwh: float
    premium_eur: float
    valorisation_eur: float
    free_premium_eur: float
    reserved_premium_eur: float
    per_plant: tuple[tuple[str, float, float], ...]


def incentive(
    plants: tuple[Plant, ...],
    injected: FloatArray,
    withdrawn: FloatArray,
    zonal_price_eur_per_mwh: FloatArray,
    valorisation_eur_per_mwh: float = 8.0,
) -> Incentive:
    """The incentives of a configuration: `injected` (hours, plants) kWh per plant, `withdrawn`
    (hours,) kWh by all members, `zonal_price_eur_per_mwh` (hours,)."""
    if not plants:
        raise ValueError("a configuration needs at least one plant to earn an incentive")
    for plant in plants:
        _check_plant(plant)
    if len({plant.id for plant in plants}) != len(plants):
        raise ValueError("two plants share an id; give each plant its own")
    if not math.isfinite(valorisation_eur_per_mwh) or valorisation_eur_per_mwh < 0:
        raise ValueError(
            f"the valorisation of {valorisation_eur_per_mwh} EUR/MWh must be 0 or more"
        )
    per_plant_injected = np.asarray(injected, dtype=np.float64)
    from_grid = np.clip(_hourly(withdrawn, "the withdrawn energy"), 0.0, None)
    zonal = _hourly(zonal_price_eur_per_mwh, "the zonal price")
    hours = from_grid.size
    if per_plant_injected.shape != (hours, len(plants)) or zonal.size != hours:
        raise ValueError(
            f"the injected energy {per_plant_injected.shape}, withdrawn energy ({hours},) and "
            f"zonal price {zonal.shape} must be (hours, {len(plants)} plants), (hours,), (hours,)"
        )
    if not np.all(np.isfinite(per_plant_injected)):
        raise ValueError("the injected energy holds a value that is not a finite number")
    into_grid = np.clip(per_plant_injected, 0.0, None)

    total_injected = into_grid.sum(axis=1)
    shared = np.minimum(total_injected, from_grid)
    # Each hour's shared energy goes to the plants pro rata to what each injected that hour.
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total_injected[:, None] > 0, into_grid / total_injected[:, None], 0.0)
    shared_by_plant = shared[:, None] * share
    tip = np.column_stack([premium_eur_per_mwh(plant, zonal) for plant in plants])
    premium_by_plant = (shared_by_plant * tip).sum(axis=0) / KWH_PER_MWH

    plant_shared = shared_by_plant.sum(axis=0)
    free_share = np.array(
        [FREE_SHARE_WITH_GRANT if plant.capital_grant else FREE_SHARE for plant in plants]
    )
    above = np.clip(plant_shared - free_share * into_grid.sum(axis=0), 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        reserved_fraction = np.where(plant_shared > 0, above / plant_shared, 0.0)
    reserved = float((premium_by_plant * reserved_fraction).sum())
    premium = float(premium_by_plant.sum())
    shared_kwh = float(shared.sum())
    return Incentive(
        shared_kwh=shared_kwh,
        premium_eur=premium,
        valorisation_eur=shared_kwh * valorisation_eur_per_mwh / KWH_PER_MWH,
        free_premium_eur=premium - reserved,
        reserved_premium_eur=reserved,
        per_plant=tuple(
            (plant.id, float(kwh), float(eur))
            for plant, kwh, eur in zip(plants, plant_shared, premium_by_plant, strict=True)
        ),
    )
