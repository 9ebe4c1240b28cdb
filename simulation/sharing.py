"""PETra's peer-to-peer trading against sharing agreements, on the same homes and profiles.

A run's homes, as their device profiles say, under each sharing agreement of DESIGN.md
section 14 (`community`), one step per interval of the run, beside what the run's
peer-to-peer trading did. Pure: no I/O. Energy in kWh, money in micro-units (an int: what a
home paid over the run, negative when it was paid), fractions in [0, 1], None where there is
nothing to measure.

The model, where the brief was open (docs/simulation.md says the same):

- Behind the meter first. A home's net in a step is load + battery - PV (the meter's M_t);
  it imports max(0, net) and exports max(0, -net). What its PV covered itself (PV - export)
  is its own self-consumption, the same in every regime.
- The pool. A sharing agreement shares the homes' exports (G_h = sum of exports) among their
  imports (C_ih = each home's import): `community.allocate` with each agreement's
  coefficients; the ENERGY objective for the optimised ones (one tariff for every home, so
  MONEY would pick the same coefficients).
- Money. Every kWh of the pool one home uses is bought from its producers at the transfer
  price, the mean of the import and the export price (a whole price, half to even): the
  receiver saves the import price less that, the producers earn it instead of the export
  price, and the pool's rest is exported at the export price to its producers, pro rata to
  their exports in that step. A home's bill is
      imports x import price - exports x export price
      - received x (import price - transfer) - sold x (transfer - export price),
  exact and rounded once. The community's total depends only on the energy shared; the
  transfer price only splits it, as a trade's price does in PETra, where the strategies'
  prices lie between the same two.
- P2P. The run's bills (`simulation.metrics`): what each home really paid, trades included.
  Its shared energy is what the ledger's trades delivered in each interval, at most what the
  homes exported and imported in it (a trade beyond the surplus is energy from the grid).
- The community's self-consumption = (own + shared) / PV production, its self-sufficiency =
  (own + shared) / consumption (load + battery). The dynamic allocation's equal the metrics'
  physical `energy` figures: physics shares pro rata.
- What a regime reveals, and the per-home values per interval it discloses: to the DSO (a
  meter's readings, PETra's bills, a sharing agreement's consumption and coefficients) and to
  the community (the manager of an agreement sees what the DSO sees; in PETra nobody in the
  community sees a home's figures, and its trades hide in their anonymity sets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
from numpy.typing import NDArray

from community import (
    Problem,
    Tariff,
    allocate,
    dynamic_coefficients,
    equal_coefficients,
    optimise_static,
    optimise_variable,
)
from simulation.record import RunRecord

FloatArray = NDArray[np.float64]

J_PER_KWH = 3_600_000

GRID = "grid"
P2P = "p2p"
EQUAL = "equal"
BY_CONSUMPTION = "by_consumption"
BEST_STATIC = "best_static"
VARIABLE = "variable"
DYNAMIC = "dynamic"
AGREEMENTS = (EQUAL, BY_CONSUMPTION, BEST_STATIC, VARIABLE, DYNAMIC)
REGIMES = (GRID, P2P, *AGREEMENTS)  # the order of the report's rows
LABELS = {
    GRID: "grid only",
    P2P: "p2p (PETra)",
    EQUAL: "equal static",
    BY_CONSUMPTION: "static by consumption",
    BEST_STATIC: "best static",
    VARIABLE: "variable (optimised in-sample)",
    DYNAMIC: "dynamic (pro rata)",
}
REVEALED = {
    GRID: "The DSO reads each home's net energy per interval from its meter; nobody else.",
    P2P: (
        "The DSO receives each home's bill per interval (its metered net energy); the ledger "
        "shows trades only within anonymity sets, the bid store only anonymous orders."
    ),
    EQUAL: (
        "The DSO and the manager see each home's consumption per interval and its coefficient, "
        "by CUPS: an anonymity set of one, by design."
    ),
    VARIABLE: (
        "The DSO and the manager see each home's consumption and its coefficient per interval, "
        "by CUPS: an anonymity set of one, by design."
    ),
    DYNAMIC: (
        "The DSO and the manager see each home's consumption per interval, by CUPS, the shares "
        "following from it: an anonymity set of one, by design."
    ),
}
REVEALED[BY_CONSUMPTION] = REVEALED[BEST_STATIC] = REVEALED[EQUAL]


@dataclass(frozen=True, slots=True, eq=False)
class HomesEnergy:
    """The homes' energy in each step, kWh, (steps, homes) each: `production` their PV,
    `consumption` load + battery, `imports` and `exports` their net's positive and negative
    parts at the meter, `own` their PV used behind the meter (PV - export, never below 0)."""

    names: tuple[str, ...]
    meters: tuple[str, ...]
    production: FloatArray
    consumption: FloatArray
    imports: FloatArray
    exports: FloatArray

    @property
    def own(self) -> FloatArray:
        return np.asarray(np.clip(self.production - self.exports, 0.0, None))

    @property
    def pool(self) -> FloatArray:
        """The generation an agreement shares in each step: the homes' exports (steps,)."""
        return np.asarray(self.exports.sum(axis=1))


def homes_energy(record: RunRecord) -> HomesEnergy:
    """Each home's energy per interval of the run from its device profiles (kWh); a profile
    shorter than the run counts 0 W past its end, as the metrics do."""
    steps, count = len(record.intervals), len(record.homes)
    watts = np.zeros((3, steps, count))  # load, PV, battery
    for n, home in enumerate(record.homes):
        for series, values in enumerate((home.load_w, home.pv_w, home.battery_w)):
            held = np.asarray(values[:steps], dtype=np.float64)
            watts[series, : len(held), n] = held
    load, pv, battery = watts * record.interval_s / J_PER_KWH
    consumption = load + battery
    net = consumption - pv
    return HomesEnergy(
        names=tuple(home.name for home in record.homes),
        meters=tuple(home.meter_id for home in record.homes),
        production=pv,
        consumption=consumption,
        imports=np.clip(net, 0.0, None),
        exports=np.clip(-net, 0.0, None),
    )


@dataclass(frozen=True, slots=True)
class PeerToPeer:
    """What the run's peer-to-peer trading came to, from its metrics: each home's bills summed
    (micro-units, None for a home with no bill, in the record's order of homes), the energy
    the ledger's trades delivered in each interval of the run (kWh), the bills the DSO
    received, and the trades' anonymity (None: no trade)."""

    bills: tuple[int | None, ...]
    traded_kwh: tuple[float, ...]
    bills_to_dso: int
    trades: int
    smallest_anonymity: int | None


@dataclass(frozen=True, slots=True)
class RegimeFigures:
    """One regime over the run: what each home paid (micro-units, negative: it was paid; None:
    unknown) and its mean (rounded once), minimum, maximum and total over the homes known;
    the energy shared between homes and the community's rates (kWh, fractions); what it
    reveals about a home, the per-home values per interval it discloses to the DSO and to the
    community, and the smallest anonymity set of what the community (the manager, the members,
    a reader of the ledger) learns about a home (1: by name; None: it learns nothing)."""

    regime: str
    bills: tuple[int | None, ...]
    bill_mean: int | None
    bill_min: int | None
    bill_max: int | None
    bill_total: int | None
    shared_kwh: float
    self_consumed_kwh: float
    self_consumption: float | None
    self_sufficiency: float | None
    revealed: str
    values_to_dso: int
    values_to_community: int
    smallest_anonymity: int | None


@dataclass(frozen=True, slots=True)
class SharingFigures:
    """The comparison of a run: its homes (names, in the order of every regime's bills), the
    tariff (micro-units per kWh) and the transfer price of shared energy, the pool (the homes'
    exports) and the homes' imports (kWh), a row per regime of REGIMES, and a sentence for
    each figure that could not be measured and why."""

    homes: tuple[str, ...]
    intervals: int
    price_consumption: int
    price_production: int
    transfer_price: int
    pooled_kwh: float
    imported_kwh: float
    regimes: tuple[RegimeFigures, ...]
    notes: tuple[str, ...]

    def regime(self, name: str) -> RegimeFigures:
        return next(r for r in self.regimes if r.regime == name)


def transfer_price(tariff: Tariff) -> int:
    """What a kWh of the pool costs its receiver and earns its producer, micro-units per kWh:
    the mean of the import and the export price, a whole price rounded half to even."""
    return round(Fraction(tariff.price_micro_per_kwh + tariff.export_micro_per_kwh, 2))


def agreement_coefficients(energy: HomesEnergy) -> dict[str, FloatArray]:
    """Each agreement's coefficients for the pool: equal shares, shares by each home's imports
    over the run (equal if nobody imported), the best static and the best variable ones
    (`community.optimise_static`, `optimise_variable`, ENERGY, no rules: with nothing pooled
    any coefficients share nothing, so equal shares stand in for them), pro rata."""
    homes = len(energy.names)
    equal = equal_coefficients(homes)
    imported = energy.imports.sum(axis=0)
    by_consumption = imported / imported.sum() if imported.sum() > 0 else equal
    pool = energy.pool
    if pool.sum() > 0:
        problem = Problem(energy.meters, pool, energy.imports)
        best_static, variable = optimise_static(problem), optimise_variable(problem)
    else:
        best_static, variable = equal, equal
    return {
        EQUAL: equal,
        BY_CONSUMPTION: by_consumption,
        BEST_STATIC: best_static,
        VARIABLE: variable,
        DYNAMIC: dynamic_coefficients(energy.imports),
    }


def bills_micro(
    energy: HomesEnergy, received: FloatArray, sold: FloatArray, tariff: Tariff
) -> tuple[int, ...]:
    """What each home pays over the run (micro-units, negative: it was paid) having received
    `received` and sold `sold` kWh of the pool (homes,), the rest at the grid's prices: the
    module's money model, exact with Fraction, rounded once, half to even."""
    price, export = tariff.price_micro_per_kwh, tariff.export_micro_per_kwh
    transfer = transfer_price(tariff)
    imports, exports = energy.imports.sum(axis=0), energy.exports.sum(axis=0)
    return tuple(
        round(
            Fraction(float(bought)) * price
            - Fraction(float(fed)) * export
            - Fraction(float(got)) * (price - transfer)
            - Fraction(float(gave)) * (transfer - export)
        )
        for bought, fed, got, gave in zip(imports, exports, received, sold, strict=True)
    )


def sold_kwh(energy: HomesEnergy, self_consumed: FloatArray) -> FloatArray:
    """Each producer's part of the pool the homes used, pro rata to its export in each step
    (homes,), kWh: `self_consumed` (steps,) of the pool's `energy.pool`."""
    pool = energy.pool
    used = np.divide(self_consumed, pool, out=np.zeros_like(pool), where=pool > 0)
    return np.asarray((energy.exports * used[:, None]).sum(axis=0))


def _spread(bills: Sequence[int | None]) -> tuple[int | None, int | None, int | None, int | None]:
    """Mean (rounded once, half to even), minimum, maximum and total of the bills known."""
    known = [bill for bill in bills if bill is not None]
    if not known:
        return None, None, None, None
    return round(Fraction(sum(known), len(known))), min(known), max(known), sum(known)


def _regime(
    regime: str,
    energy: HomesEnergy,
    bills: Sequence[int | None],
    shared_kwh: float,
    disclosed: tuple[int, int],
    smallest_anonymity: int | None,
) -> RegimeFigures:
    production, consumption = float(energy.production.sum()), float(energy.consumption.sum())
    self_consumed = float(energy.own.sum()) + shared_kwh
    mean, low, high, total = _spread(bills)
    return RegimeFigures(
        regime=regime,
        bills=tuple(bills),
        bill_mean=mean,
        bill_min=low,
        bill_max=high,
        bill_total=total,
        shared_kwh=shared_kwh,
        self_consumed_kwh=self_consumed,
        self_consumption=self_consumed / production if production > 0 else None,
        self_sufficiency=self_consumed / consumption if consumption > 0 else None,
        revealed=REVEALED[regime],
        values_to_dso=disclosed[0],
        values_to_community=disclosed[1],
        smallest_anonymity=smallest_anonymity,
    )


def compare_regimes(energy: HomesEnergy, tariff: Tariff, p2p: PeerToPeer) -> SharingFigures:
    """Every regime of REGIMES on the homes of `energy`: the grid alone, the run's
    peer-to-peer trading (`p2p`) and each sharing agreement of its pool (module docstring)."""
    steps, homes = energy.imports.shape
    figures = SharingFigures(
        homes=energy.names,
        intervals=steps,
        price_consumption=tariff.price_micro_per_kwh,
        price_production=tariff.export_micro_per_kwh,
        transfer_price=transfer_price(tariff),
        pooled_kwh=float(energy.exports.sum()),
        imported_kwh=float(energy.imports.sum()),
        regimes=(),
        notes=(),
    )
    if homes == 0:
        return replace(figures, notes=("The run has no homes: there is nothing to compare.",))
    readings = steps * homes
    nothing = np.zeros(homes)
    grid = bills_micro(energy, nothing, nothing, tariff)
    rows = [_regime(GRID, energy, grid, 0.0, (readings, 0), None)]
    pool = energy.pool
    # a trade beyond the surplus, or beyond what the homes imported, is energy from the grid
    delivered = np.minimum(np.minimum(pool, energy.imports.sum(axis=1)), p2p.traded_kwh)
    disclosed = (p2p.bills_to_dso, 0)
    rows.append(
        _regime(P2P, energy, p2p.bills, float(delivered.sum()), disclosed, p2p.smallest_anonymity)
    )
    for name, coefficients in agreement_coefficients(energy).items():
        allocation = allocate(pool, energy.imports, coefficients)
        received = allocation.allocated.sum(axis=0)
        sold = sold_kwh(energy, allocation.self_consumed)
        # a static row is filed once per home, a variable one per step; the DSO computes dynamic
        filed = {VARIABLE: readings, DYNAMIC: 0}.get(name, homes)
        rows.append(
            _regime(
                name,
                energy,
                bills_micro(energy, received, sold, tariff),
                float(allocation.self_consumed.sum()),
                (readings + filed, readings + filed),
                1,
            )
        )
    return replace(figures, regimes=tuple(rows), notes=tuple(_notes(energy, p2p)))


def _notes(energy: HomesEnergy, p2p: PeerToPeer) -> list[str]:
    """Why a figure of the comparison is missing or moot, one sentence each."""
    steps, homes = energy.imports.shape
    notes = []
    if steps == 0:
        notes.append("The run simulated no interval: every regime's figures are zero.")
    if homes == 1:
        notes.append("With one home there is nobody to share with or trade with.")
    if energy.pool.sum() <= 0:
        notes.append(
            "No home exported in any interval: the agreements share nothing, so their "
            "coefficients are moot (equal shares stand in for the optimised ones)."
        )
    elif energy.imports.sum() <= 0:
        notes.append("No home imported in any interval: the pool has nobody to go to.")
    if energy.production.sum() <= 0:
        notes.append("No home produced: self-consumption is not defined (n/a).")
    if energy.consumption.sum() <= 0:
        notes.append("No home consumed: self-sufficiency is not defined (n/a).")
    unbilled = sum(1 for bill in p2p.bills if bill is None)
    if unbilled == homes:
        notes.append("No home has a bill from the run: the p2p money is n/a.")
    elif unbilled:
        notes.append(
            f"{unbilled} of {homes} homes have no bill from the run: the p2p money covers "
            "the others (n/a for them)."
        )
    if p2p.trades == 0:
        notes.append("Nothing was traded on the ledger: p2p has no anonymity set to show.")
    return notes


def sharing_figures(record: RunRecord, p2p: PeerToPeer) -> SharingFigures:
    """The comparison of a run: its homes' profiles at the run's tariff (the consumption price
    to import, the production price to export) beside its peer-to-peer trading."""
    tariff = Tariff(record.price_consumption, record.price_production)
    return compare_regimes(homes_energy(record), tariff, p2p)
