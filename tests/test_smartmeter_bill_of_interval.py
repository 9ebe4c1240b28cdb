"""The meter's bill of an interval from its measurement and the ledger (DESIGN.md section 7),
against an independent implementation of the formulas written here, and the two trades the
paper bills: a seller who delivers what it sold, a buyer who consumes what it bought."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from assets import (
    DepositFact,
    Eca,
    Epa,
    Fa,
    IssuedFact,
    Keypair,
    Outpoint,
    Output,
    bill_of_interval,
)
from dso.reconcile import reconcile

CHAIN = bytes(32)
T = 40  # the billed interval
S = 900  # interval_s
OWNER = Keypair(bytes([5]) * 32).public_key
_ids = itertools.count(1)


def _txid() -> bytes:
    return next(_ids).to_bytes(32, "big")


def issue(interval: int, *assets: Epa | Eca | Fa, height: int = 3) -> IssuedFact:
    return IssuedFact(_txid(), height, interval, tuple(Output(a, OWNER) for a in assets))


def deposit(interval: int, asset: Epa | Eca | Fa, height: int = 4) -> DepositFact:
    return DepositFact(Outpoint(_txid(), 0), asset, height, interval)


def bill(
    measured_j: int,
    issues: Sequence[IssuedFact],
    deposits: Sequence[DepositFact],
    prices: tuple[int | None, int | None] = (250_000, 60_000),
    closed_height: int = 10,
) -> tuple[int, int]:
    """(E_t, B_t) of the bill the meter closes; the DSO finds nothing to object to."""
    made = bill_of_interval(
        chain=CHAIN,
        meter="m1",
        interval=T,
        interval_s=S,
        closed_height=closed_height,
        measured_j=measured_j,
        issues=issues,
        deposits=deposits,
        price_consumption=prices[0],
        price_production=prices[1],
    )
    facts: dict[Outpoint, DepositFact | None] = {d.outpoint: d for d in deposits}
    assert (
        reconcile(
            made,
            interval_s=S,
            issues=[f for f in issues if f.height <= closed_height],
            deposits={o: facts[o] for o in made.deposits},
            claimed_elsewhere={},
            price_consumption=prices[0],
            price_production=prices[1],
        )
        == []
    )
    return made.energy_j, made.amount


def test_a_seller_who_delivers_what_it_sold_pays_nothing_for_energy_and_is_credited() -> None:
    sold_w, paid = 2_000, 450_000
    # The meter issued 2 kW of EPA for t; the buyer paid 0.45 EUR, which the seller deposited.
    energy, amount = bill(
        measured_j=-sold_w * S,  # it exported exactly what it sold
        issues=[issue(T - 3, Epa(sold_w, T, T))],
        deposits=[deposit(T, Fa(paid))],
    )
    assert (energy, amount) == (0, -paid)


def test_a_buyer_who_consumes_what_it_bought_pays_the_fa_it_withdrew() -> None:
    bought_w, paid = 1_500, 337_500
    energy, amount = bill(
        measured_j=bought_w * S,
        issues=[issue(T, Fa(paid), Eca(bought_w, T, T))],  # withdrawn during t to pay
        deposits=[deposit(T - 1, Epa(bought_w, T, T + 3))],  # the EPA it bought
    )
    assert (energy, amount) == (0, paid)


def test_what_counts_and_what_does_not() -> None:
    energy, amount = bill(
        measured_j=-100 * S,
        issues=[
            issue(T - 5, Epa(100, T + 1, T + 2)),  # not covering t
            issue(T - 1, Fa(7)),  # FA issued before t
            issue(T - 1, Epa(100, T, T), Fa(8)),  # its EPA counts, its FA (before t) does not
            issue(T, Epa(300, T - 2, T), height=11),  # after the closing height
        ],
        deposits=[
            deposit(T, Eca(500, T, T)),  # ECA is never billed
            deposit(T + 1, Fa(9)),  # FA deposited after t
            deposit(T - 1, Epa(200, T, T), height=12),  # after the closing height
        ],
    )
    assert (energy, amount) == (0, 0)


def reference(
    measured_j: int, w: int, d: int, fa_in: int, fa_out: int, pc: int | None, pp: int | None
) -> tuple[int, int]:
    """DESIGN.md section 7, written again without the product's code: E_t, then B_t with the
    energy line priced per kWh and rounded once, half to even."""
    energy = measured_j - d * S + w * S
    price = (pc if energy >= 0 else pp) or 0
    numerator = energy * price  # micro-units times 3.6e6
    quotient, remainder = divmod(abs(numerator), 3_600_000)
    if 2 * remainder > 3_600_000 or (2 * remainder == 3_600_000 and quotient % 2 == 1):
        quotient += 1
    line = quotient if numerator >= 0 else -quotient
    return energy, fa_in - fa_out + line


@given(
    measured_j=st.integers(-(10**10), 10**10),
    issued=st.lists(st.integers(1, 20_000), max_size=3),
    deposited=st.lists(st.integers(1, 20_000), max_size=3),
    fa_in=st.lists(st.integers(1, 10**7), max_size=3),
    fa_out=st.lists(st.integers(1, 10**7), max_size=3),
    pc=st.none() | st.integers(0, 2_000_000),
    pp=st.none() | st.integers(0, 2_000_000),
)
def test_any_mix_of_over_and_under_delivery_bills_exactly_as_defined(
    measured_j: int,
    issued: list[int],
    deposited: list[int],
    fa_in: list[int],
    fa_out: list[int],
    pc: int | None,
    pp: int | None,
) -> None:
    issues = [issue(T - 1, Epa(w, T - 1, T + 1)) for w in issued]
    issues += [issue(T, Fa(a)) for a in fa_in]
    deposits = [deposit(T - 2, Epa(w, T, T)) for w in deposited]
    deposits += [deposit(T, Fa(a)) for a in fa_out]
    assert bill(measured_j, issues, deposits, (pc, pp)) == reference(
        measured_j, sum(issued), sum(deposited), sum(fa_in), sum(fa_out), pc, pp
    )


def test_rounding_happens_once_per_line() -> None:
    # 0.5 kWh at 1 micro-unit per kWh is exactly half a micro-unit: rounded once, half to even.
    assert bill(1_800_000, [], [], (1, 1)) == (1_800_000, 0)
    assert bill(5_400_000, [], [], (1, 1)) == (5_400_000, 2)  # 1.5 -> 2
    assert bill(-5_400_000, [], [], (1, 1)) == (-5_400_000, -2)
    # The FA lines are whole already: only the energy line is rounded, and only once.
    assert bill(5_400_000, [issue(T, Fa(3))], [deposit(T, Fa(1))], (1, 1)) == (5_400_000, 4)
