"""What a smart meter may issue to its owner (the paper's withdrawal): the checks the meter makes
before it signs an `issue`, so that the ledger never has to reject one. Pure: the caller gives
the regulation schedule (the ledger's own `RegulationSchedule`, fed from the ledger), what the
meter issued so far and its owner's FA account.

- EPA and ECA: for every interval t an asset covers, the power this meter has issued covering t
  plus the new power must stay strictly below MAXEPA (MAXECA) in force at t, the meter must be
  authorized and not banned there, and also at `now` (DESIGN.md section 5, `issue`).
- FA: the owner's credit is FA issued minus FA deposited (what it took and has not brought
  back); a withdrawal may not take it above the configured credit line. Energy is billed
  separately (section 7); the DSO collects it, so it does not count here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from assets import AssetKind, Eca, Epa, Fa, Output
from ledger.issued import StepFunction
from ledger.schedule import MeterStatus, RegulationSchedule

ENERGY_KINDS = (AssetKind.EPA, AssetKind.ECA)


class WithdrawalRefused(Exception):
    """The meter will not issue this: `code` is stable, the message says why in figures."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class IssuedSoFar:
    """What this meter has issued (EPA and ECA power per interval) and its owner's FA account
    (micro-units): the meter's own record, which the ledger confirms."""

    power: dict[AssetKind, StepFunction] = field(
        default_factory=lambda: {kind: StepFunction() for kind in ENERGY_KINDS}
    )
    fa_issued: int = 0
    fa_deposited: int = 0

    @property
    def credit_used(self) -> int:
        return self.fa_issued - self.fa_deposited

    def record(self, outputs: Iterable[Output]) -> None:
        """Count an issue the ledger accepted."""
        for output in outputs:
            asset = output.asset
            if isinstance(asset, Fa):
                self.fa_issued += asset.amount
            else:
                self.power[asset.kind].add(asset.start, asset.end, asset.power)


def check_withdrawal(
    outputs: Sequence[Output],
    *,
    now: int,
    meter: str,
    schedule: RegulationSchedule,
    issued: IssuedSoFar,
    credit_line: int,
) -> None:
    """Refuse (WithdrawalRefused) an issue of `outputs` that the ledger would reject, or that
    would take the owner's credit beyond `credit_line`; return if the meter may sign it."""
    if not outputs:
        raise WithdrawalRefused("bad_request", "a withdrawal names at least one asset")
    _check_in_force(schedule.meter_at(meter, now), f"now (interval {now})")
    wanted = {kind: StepFunction() for kind in ENERGY_KINDS}
    fa = 0
    for output in outputs:
        asset = output.asset
        if isinstance(asset, Fa):
            fa += asset.amount
        elif isinstance(asset, Epa | Eca):
            wanted[asset.kind].add(asset.start, asset.end, asset.power)
    for kind in ENERGY_KINDS:
        for first, last, power in wanted[kind].nonzero_pieces():
            for a, b, before in issued.power[kind].pieces(first, last):
                for t, _, status in schedule.meter_pieces(meter, a, b):
                    _check_in_force(status, f"interval {t}")
                    assert status is not None
                    limit = status.limit(kind)
                    if before + power >= limit:
                        raise WithdrawalRefused(
                            "limit_exceeded",
                            f"{kind} at interval {t}: {before} W issued and {power} W asked "
                            f"would reach {before + power} W; it must stay below MAX{kind} "
                            f"{limit} W, so at most {max(limit - 1 - before, 0)} W more",
                        )
    if fa and issued.credit_used + fa > credit_line:
        room = max(credit_line - issued.credit_used, 0)
        raise WithdrawalRefused(
            "credit_exceeded",
            f"{fa} micro-units of FA would bring the owner's credit to "
            f"{issued.credit_used + fa}, over its line of {credit_line}: at most {room} more",
        )


def _check_in_force(status: MeterStatus | None, where: str) -> None:
    if status is None or status.public_key is None:
        raise WithdrawalRefused("not_authorized", f"the meter is not authorized at {where}")
    if status.banned:
        raise WithdrawalRefused("banned", f"the meter is banned at {where}")
