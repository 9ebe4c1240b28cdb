"""Does a meter's bill agree with the ledger? (DESIGN.md section 7, checked by the DSO.)

The DSO node gathers the ledger facts a bill depends on and hands them to `reconcile`, which
recomputes every figure the ledger determines and reports each disagreement with a stable code,
all of them, in this order: `issued_epa_mismatch`, `issues_mismatch`, `fa_issued_mismatch`,
`deposit_unknown`, `deposit_not_counted`, `deposited_epa_mismatch`, `fa_deposited_mismatch`,
`deposit_claimed_twice`, `price_mismatch`, `energy_mismatch`, `amount_mismatch`.

What cannot be checked here:
- M_t, the measurement, exists only in the meter; the ledger knows nothing of it. E_t is
  therefore recomputed from the bill's own M_t and the ledger's W_EPA(t) and D_EPA(t), so a bill
  whose W or D is wrong gets that figure's mismatch and, whenever the wrong figures change the
  total, `energy_mismatch` too (a W and a D wrong by the same watts leave E_t right). B_t is
  recomputed from the ledger's FA figures and prices and that recomputed E_t, so
  `amount_mismatch` means the bill asks for a sum the ledger does not support.
- Deposit addresses are anonymous, so a deposit the bill leaves out cannot be found; only the
  deposits it lists are checked, and listing another meter's deposit is caught only when that
  meter's bill lists it too (`deposit_claimed_twice`).
- The signature and the chain are checked where the bill is received, with the meter's key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from assets import (
    Bill,
    DepositFact,
    Eca,
    Epa,
    Fa,
    IssuedFact,
    Outpoint,
    bill_amount,
    deposit_counts,
    epa_power,
    interval_energy_j,
    issue_counts,
)

__all__ = ["DepositFact", "Discrepancy", "IssuedFact", "reconcile"]


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One way a bill disagrees with the ledger: a stable `code` and one sentence giving the
    figure the ledger supports and the figure the bill reports."""

    code: str
    message: str


def reconcile(
    bill: Bill,
    *,
    interval_s: int,
    issues: Sequence[IssuedFact],
    deposits: Mapping[Outpoint, DepositFact | None],
    claimed_elsewhere: Mapping[Outpoint, Sequence[tuple[str, int]]],
    price_consumption: int | None,
    price_production: int | None,
) -> list[Discrepancy]:
    """Every disagreement between `bill` and the ledger, in the order of the module docstring.

    `issues`: every issue by the bill's meter (facts above `bill.closed_height` are ignored).
    `deposits`: for each outpoint the bill lists, the ledger's output, or None if it is not on
    the ledger; one above the closed height counts as not on the ledger by then.
    `claimed_elsewhere`: for an outpoint, the (meter, interval) of other stored bills listing it.
    Prices: micro-units per kWh in force at `bill.interval`; `interval_s`: seconds.
    An empty list means the bill agrees with the ledger.
    """
    t = bill.interval
    found: list[Discrepancy] = []
    known_issues = [fact for fact in issues if fact.height <= bill.closed_height]

    issued_epa_w = sum(epa_power(o.asset, t) for f in known_issues for o in f.outputs)
    if issued_epa_w != bill.issued_epa_w:
        found.append(
            Discrepancy(
                "issued_epa_mismatch",
                f"the ledger has {issued_epa_w} W of EPA issued by meter {bill.meter} covering"
                f" interval {t}, the bill reports {bill.issued_epa_w} W",
            )
        )

    counted = {f.txid for f in known_issues if issue_counts(f, t)}
    listed = set(bill.issues)
    if counted != listed:
        missing = ", ".join(sorted(x.hex() for x in counted - listed)) or "none"
        extra = ", ".join(sorted(x.hex() for x in listed - counted)) or "none"
        found.append(
            Discrepancy(
                "issues_mismatch",
                f"the ledger has {len(counted)} issues counting in interval {t}, the bill lists"
                f" {len(listed)}: left out {missing}; listed but not counting {extra}",
            )
        )

    fa_issued = sum(
        o.asset.amount
        for f in known_issues
        if f.interval == t
        for o in f.outputs
        if isinstance(o.asset, Fa)
    )
    if fa_issued != bill.fa_issued:
        found.append(
            Discrepancy(
                "fa_issued_mismatch",
                f"the ledger has {fa_issued} micro-units of FA issued by meter {bill.meter}"
                f" during interval {t}, the bill reports {bill.fa_issued}",
            )
        )

    on_ledger: list[DepositFact] = []
    for outpoint in bill.deposits:
        fact = deposits.get(outpoint)
        if fact is None or fact.height > bill.closed_height:
            found.append(
                Discrepancy(
                    "deposit_unknown",
                    f"deposit {_name(outpoint)} is not on the ledger at or below height"
                    f" {bill.closed_height}, where the bill says it closed",
                )
            )
        else:
            on_ledger.append(fact)

    for fact in on_ledger:
        if not deposit_counts(fact, t):
            found.append(
                Discrepancy(
                    "deposit_not_counted",
                    f"deposit {_name(fact.outpoint)} ({_describe(fact)}) counts for nothing in"
                    f" interval {t}, yet the bill lists it",
                )
            )

    deposited_epa_w = sum(epa_power(f.asset, t) for f in on_ledger)
    if deposited_epa_w != bill.deposited_epa_w:
        found.append(
            Discrepancy(
                "deposited_epa_mismatch",
                f"the deposits the bill lists hold {deposited_epa_w} W of EPA covering interval"
                f" {t}, the bill reports {bill.deposited_epa_w} W",
            )
        )

    fa_deposited = sum(
        f.asset.amount for f in on_ledger if isinstance(f.asset, Fa) and f.interval == t
    )
    if fa_deposited != bill.fa_deposited:
        found.append(
            Discrepancy(
                "fa_deposited_mismatch",
                f"the deposits the bill lists hold {fa_deposited} micro-units of FA deposited"
                f" during interval {t}, the bill reports {bill.fa_deposited}",
            )
        )

    for fact in on_ledger:
        rivals = _rival_claims(bill, fact, claimed_elsewhere.get(fact.outpoint, ()))
        if rivals:
            found.append(
                Discrepancy(
                    "deposit_claimed_twice",
                    f"deposit {_name(fact.outpoint)} ({_describe(fact)}) may count for one bill"
                    f" only, and is also listed by {_claims(rivals)}",
                )
            )

    for name, ledger_price, bill_price in (
        ("consumption", price_consumption, bill.price_consumption),
        ("production", price_production, bill.price_production),
    ):
        if ledger_price != bill_price:
            found.append(
                Discrepancy(
                    "price_mismatch",
                    f"the {name} price in force at interval {t} is {_price(ledger_price)},"
                    f" the bill reports {_price(bill_price)}",
                )
            )

    energy_j = interval_energy_j(bill.measured_j, issued_epa_w, deposited_epa_w, interval_s)
    if energy_j != bill.energy_j:
        found.append(
            Discrepancy(
                "energy_mismatch",
                f"the bill's {bill.measured_j} J measured, with the ledger's {issued_epa_w} W"
                f" issued and {deposited_epa_w} W deposited, give E = {energy_j} J, the bill"
                f" reports {bill.energy_j} J",
            )
        )

    amount = bill_amount(fa_issued, fa_deposited, energy_j, price_consumption, price_production)
    if amount != bill.amount:
        found.append(
            Discrepancy(
                "amount_mismatch",
                f"the ledger's figures give B = {amount} micro-units for interval {t}, the bill"
                f" reports {bill.amount}",
            )
        )
    return found


def _rival_claims(
    bill: Bill, fact: DepositFact, claims: Sequence[tuple[str, int]]
) -> list[tuple[str, int]]:
    """Other bills' claims on the same deposit that cannot all be right.

    An EPA covering several intervals is rightly listed by its meter's bill for each of them;
    FA is money deposited once, so it counts in one bill only. A claim naming this bill's own
    (meter, interval) is this bill sent again, not a rival.
    """
    if isinstance(fact.asset, Eca):
        return []
    others = [c for c in claims if c != (bill.meter, bill.interval)]
    if isinstance(fact.asset, Epa):
        return [c for c in others if c[0] != bill.meter]
    return others


def _name(outpoint: Outpoint) -> str:
    return f"{outpoint.txid.hex()}:{outpoint.index}"


def _describe(fact: DepositFact) -> str:
    asset = fact.asset
    if isinstance(asset, Fa):
        return f"FA {asset.amount} micro-units deposited in interval {fact.interval}"
    return f"{asset.kind} {asset.power} W for intervals {asset.start}-{asset.end}"


def _claims(claims: Sequence[tuple[str, int]]) -> str:
    return ", ".join(f"meter {meter}'s bill for interval {t}" for meter, t in sorted(claims))


def _price(price: int | None) -> str:
    return "none" if price is None else f"{price} micro-units per kWh"
