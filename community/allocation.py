"""Allocation of a community's generation to its members, step by step (an hour in Spain and
Italy, a quarter-hour in Austria), DESIGN.md section 14:

    assigned  X_ih = b_ih * G_h
    allocated A_ih = min(X_ih, C_ih)
    self-consumed_h = sum_i A_ih,   surplus_h = G_h - self-consumed_h

Static coefficients are one row b_i for every step; variable ones a row per step, fixed in
advance (Spain's hourly coefficients); dynamic ones are b_ih = C_ih / sum_j C_jh, known only
after the fact (Austria's pro rata allocation). Every row of coefficients sums to 1.

Arrays: generation (steps,), consumption (steps, members), kWh per step; coefficients
(members,) or (steps, members). A negative energy (a meter wired backwards) counts as none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

STATIC = "static"
VARIABLE = "variable"
DYNAMIC = "dynamic"
KINDS = (STATIC, VARIABLE, DYNAMIC)
SUM_TOLERANCE = 1e-6  # how far a row of coefficients may stray from 1 (float rounding)


def equal_coefficients(members: int) -> FloatArray:
    """Equal static shares, 1/n each."""
    if members < 1:
        raise ValueError("a sharing agreement needs at least one member")
    return np.full(members, 1.0 / members)


def dynamic_coefficients(consumption: FloatArray) -> FloatArray:
    """Coefficients pro rata to each step's consumption, (steps, members); a step in which
    nobody consumes shares equally (its generation is surplus whatever the coefficients)."""
    used = _energy(consumption, "consumption", 2)
    members = used.shape[1]
    if members < 1:
        raise ValueError("a sharing agreement needs at least one member")
    total = used.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(total > 0, used / np.where(total > 0, total, 1.0), 1.0 / members)
    return np.asarray(shares, dtype=np.float64)


@dataclass(frozen=True, slots=True, eq=False)
class Allocation:
    """One allocation over `steps` steps and `members` members, kWh per step."""

    generation: FloatArray  # (steps,)
    consumption: FloatArray  # (steps, members)
    assigned: FloatArray  # (steps, members): b_ih * G_h
    allocated: FloatArray  # (steps, members): min(b_ih * G_h, C_ih)

    @property
    def self_consumed(self) -> FloatArray:
        """The community's self-consumed energy per step, sum_i A_ih (kWh)."""
        return np.asarray(self.allocated.sum(axis=1))

    @property
    def surplus(self) -> FloatArray:
        """Generation nobody used per step, exported (kWh)."""
        return np.asarray(self.generation - self.self_consumed)

    @property
    def from_grid(self) -> FloatArray:
        """What each member consumed beyond their allocation per step (kWh)."""
        return np.asarray(self.consumption - self.allocated)


def _energy(values: FloatArray, what: str, dimensions: int) -> FloatArray:
    """Energies as floats, negatives as none; ValueError on a wrong shape or a NaN or
    infinity (which would silently poison every total)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != dimensions:
        raise ValueError(f"{what} must be an array of {dimensions} dimensions, not {array.ndim}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} holds a value that is not a finite number")
    return np.clip(array, 0.0, None)


def _checked_rows(coefficients: FloatArray, steps: int, members: int) -> FloatArray:
    rows = np.asarray(coefficients, dtype=np.float64)
    if rows.ndim == 1:
        rows = rows[None, :]
    if rows.shape[-1] != members or rows.shape[0] not in (1, steps):
        raise ValueError(
            f"coefficients of shape {rows.shape} do not fit {steps} steps of {members} members"
        )
    if not np.all(np.isfinite(rows)) or np.any(rows < 0):
        raise ValueError("coefficients must be finite and never negative")
    sums = rows.sum(axis=1)
    off = np.abs(sums - 1.0)
    if np.any(off > SUM_TOLERANCE):
        step = int(np.argmax(off))
        where = (
            "the static coefficients" if rows.shape[0] == 1 else f"the coefficients of step {step}"
        )
        raise ValueError(f"{where} add up to {sums[step]}, not 1")
    # Rows within the tolerance are scaled to sum to 1, so no step allocates more than G_h.
    return np.asarray(rows / sums[:, None])


def allocate(
    generation: FloatArray, consumption: FloatArray, coefficients: FloatArray
) -> Allocation:
    """Allocate each step's generation by `coefficients` (static (members,) or per step
    (steps, members), rows summing to 1 within SUM_TOLERANCE, then scaled to exactly 1),
    each member's allocation capped by their consumption. ValueError when the shapes
    disagree, an energy is not finite or a row does not sum to 1."""
    g = _energy(generation, "generation", 1)
    c = _energy(consumption, "consumption", 2)
    if c.shape[0] != g.shape[0]:
        raise ValueError(
            f"generation {g.shape} and consumption {c.shape} must be (steps,) and (steps, members)"
        )
    rows = _checked_rows(coefficients, g.shape[0], c.shape[1])
    assigned = rows * g[:, None]
    return Allocation(g, c, assigned, np.minimum(assigned, c))


@dataclass(frozen=True, slots=True)
class MemberTotals:
    """One member's energy over an allocation (kWh) and its two rates (None when undefined)."""

    consumption_kwh: float
    assigned_kwh: float
    allocated_kwh: float

    @property
    def surplus_kwh(self) -> float:
        """Their share they did not use, exported."""
        return self.assigned_kwh - self.allocated_kwh

    @property
    def from_grid_kwh(self) -> float:
        """What they bought from the grid."""
        return self.consumption_kwh - self.allocated_kwh

    @property
    def self_consumption_rate(self) -> float | None:
        """Allocated / assigned: how much of their share they used."""
        return self.allocated_kwh / self.assigned_kwh if self.assigned_kwh > 0 else None

    @property
    def self_sufficiency_rate(self) -> float | None:
        """Allocated / consumption: how much of their consumption their share covered."""
        return self.allocated_kwh / self.consumption_kwh if self.consumption_kwh > 0 else None


@dataclass(frozen=True, slots=True)
class Totals:
    """A community's energy over an allocation (kWh), its rates and each member's totals."""

    generation_kwh: float
    consumption_kwh: float
    self_consumed_kwh: float
    members: tuple[MemberTotals, ...]

    @property
    def surplus_kwh(self) -> float:
        return self.generation_kwh - self.self_consumed_kwh

    @property
    def self_consumption_rate(self) -> float | None:
        """Self-consumed / generation."""
        return self.self_consumed_kwh / self.generation_kwh if self.generation_kwh > 0 else None

    @property
    def self_sufficiency_rate(self) -> float | None:
        """Self-consumed / consumption."""
        return self.self_consumed_kwh / self.consumption_kwh if self.consumption_kwh > 0 else None


def summarise(allocation: Allocation) -> Totals:
    """The totals of an allocation, for the community and for each member."""
    consumption = allocation.consumption.sum(axis=0)
    assigned = allocation.assigned.sum(axis=0)
    allocated = allocation.allocated.sum(axis=0)
    return Totals(
        float(allocation.generation.sum()),
        float(consumption.sum()),
        float(allocated.sum()),
        tuple(
            MemberTotals(float(c), float(x), float(a))
            for c, x, a in zip(consumption, assigned, allocated, strict=True)
        ),
    )
