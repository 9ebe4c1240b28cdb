"""What a member's allocation is worth: money saved against their tariff and earned for their
surplus, CO2 the grid did not emit, and the trees that would absorb it. Money is counted in
micro-units of the currency (an int), computed exactly and rounded once, never a float."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from numpy.typing import NDArray

# A mature tree absorbs about 48 lb (21.77 kg) of CO2 a year: the Arbor Day Foundation's
# figure, the one most savings calculators cite. "Trees" below are tree-years of absorption.
TREE_KG_CO2_PER_YEAR = 21.77
MICRO = 1_000_000


@dataclass(frozen=True, slots=True)
class Tariff:
    """A member's prices, micro-units of the currency per kWh: what they pay for energy they
    buy, and what their surplus earns (Spain's simplified compensation, a sale elsewhere)."""

    price_micro_per_kwh: int
    export_micro_per_kwh: int = 0


def savings_micro(allocated_kwh: float, price_micro_per_kwh: int) -> int:
    """What `allocated_kwh` saves at `price_micro_per_kwh`, in micro-units of the currency:
    exact with Fraction, rounded once, half-to-even (money is never a float)."""
    return round(Fraction(allocated_kwh) * price_micro_per_kwh)


def member_money_micro(allocated_kwh: float, surplus_kwh: float, tariff: Tariff) -> int:
    """What a member's share is worth (micro-units): the energy they did not buy plus what
    their unused share earned, rounded once."""
    return round(
        Fraction(allocated_kwh) * tariff.price_micro_per_kwh
        + Fraction(surplus_kwh) * tariff.export_micro_per_kwh
    )


def money_weights(tariffs: Sequence[Tariff]) -> NDArray[np.float64]:
    """Each member's value of one kWh allocated rather than exported, in currency units per
    kWh: price - export. With sum_i X_ih = G_h fixed, the community's money over an allocation
    is sum_h export * G_h + sum_ih w_i A_ih, so these are the optimiser's weights."""
    return np.array(
        [(t.price_micro_per_kwh - t.export_micro_per_kwh) / MICRO for t in tariffs],
        dtype=np.float64,
    )


def co2_avoided_kg(allocated_kwh: float, co2_g_per_kwh: float) -> float:
    """The CO2 (kg) the grid would have emitted for `allocated_kwh` at `co2_g_per_kwh`."""
    return allocated_kwh * co2_g_per_kwh / 1_000


def trees(co2_kg: float) -> float:
    """How many trees absorb `co2_kg` in a year (TREE_KG_CO2_PER_YEAR each)."""
    return co2_kg / TREE_KG_CO2_PER_YEAR
