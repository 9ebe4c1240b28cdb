"""The DSO's check of a bill against the ledger (DESIGN.md section 7): one code per disagreement."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assets import Asset, Bill, DepositFact, Eca, Epa, Fa, IssuedFact, Outpoint, Output, close_bill
from dso.reconcile import Discrepancy, reconcile

CHAIN = bytes(range(32))
METER = "ES0021000000000001JN0F"
NEIGHBOUR = "ES0021000000000002JN0F"
OWNER = b"\x0a" * 32
T = 10
INTERVAL_S = 900
CLOSED = 20
CONSUMPTION = 250_000
PRODUCTION = 80_000


def _tx(byte: int) -> bytes:
    return bytes([byte]) * 32


ISSUE_EPA = IssuedFact(  # counts: 1 kW of EPA covering t (its ECA is never billed)
    _tx(0xA1), 3, 8, (Output(Epa(1_000, 9, 12), OWNER), Output(Eca(500, 10, 10), OWNER))
)
ISSUE_FA = IssuedFact(_tx(0xB2), 5, T, (Output(Fa(250_000), OWNER),))  # counts: FA issued in t
ISSUE_OLD_EPA = IssuedFact(_tx(0xC3), 2, 5, (Output(Epa(300, 5, 6), OWNER),))  # before t
ISSUE_ECA = IssuedFact(_tx(0xD4), 6, T, (Output(Eca(700, 10, 11), OWNER),))  # ECA only
ISSUE_OLD_FA = IssuedFact(_tx(0xE5), 4, 9, (Output(Fa(40_000), OWNER),))  # FA issued in t-1
ISSUE_LATE = IssuedFact(_tx(0xF6), 25, 11, (Output(Epa(2_000, 10, 10), OWNER),))  # above closed
ISSUES = (ISSUE_EPA, ISSUE_FA, ISSUE_OLD_EPA, ISSUE_ECA, ISSUE_OLD_FA, ISSUE_LATE)

EPA_DEPOSIT = DepositFact(Outpoint(_tx(0x11), 0), Epa(400, 10, 10), 4, 9)
FA_DEPOSIT = DepositFact(Outpoint(_tx(0x22), 1), Fa(100_000), 7, T)
LONG_EPA_DEPOSIT = DepositFact(Outpoint(_tx(0x33), 0), Epa(200, 8, 12), 2, 7)
DEPOSITS = (EPA_DEPOSIT, FA_DEPOSIT, LONG_EPA_DEPOSIT)
LEGIT_CLAIMS = {LONG_EPA_DEPOSIT.outpoint: [(METER, 8), (METER, 9)]}  # this meter's other bills


def clean_bill() -> Bill:
    """What the meter bills for t with the ledger above.

    W = 1_000 W; D = 400 + 200 = 600 W; FA issued 250_000, deposited 100_000.
    E = 1_800_000 - 600 * 900 + 1_000 * 900 = 2_160_000 J = 0.6 kWh -> 150_000 micro-units.
    B = 250_000 - 100_000 + 150_000 = 300_000.
    """
    bill = close_bill(
        chain=CHAIN,
        meter=METER,
        interval=T,
        closed_height=CLOSED,
        interval_s=INTERVAL_S,
        measured_j=1_800_000,
        issued_epa_w=1_000,
        deposited_epa_w=600,
        fa_issued=250_000,
        fa_deposited=100_000,
        price_consumption=CONSUMPTION,
        price_production=PRODUCTION,
        issues=[ISSUE_EPA.txid, ISSUE_FA.txid],
        deposits=[d.outpoint for d in DEPOSITS],
    )
    assert (bill.energy_j, bill.amount) == (2_160_000, 300_000)
    return bill


def check(
    bill: Bill,
    *,
    issues: Sequence[IssuedFact] = ISSUES,
    deposits: Sequence[DepositFact] = DEPOSITS,
    unknown: Sequence[Outpoint] = (),
    claimed_elsewhere: Mapping[Outpoint, Sequence[tuple[str, int]]] | None = None,
    price_consumption: int | None = CONSUMPTION,
    price_production: int | None = PRODUCTION,
) -> list[Discrepancy]:
    known: dict[Outpoint, DepositFact | None] = {d.outpoint: d for d in deposits}
    known.update(dict.fromkeys(unknown))
    return reconcile(
        bill,
        interval_s=INTERVAL_S,
        issues=issues,
        deposits=known,
        claimed_elsewhere=LEGIT_CLAIMS if claimed_elsewhere is None else claimed_elsewhere,
        price_consumption=price_consumption,
        price_production=price_production,
    )


def codes(found: list[Discrepancy]) -> list[str]:
    return [d.code for d in found]


def listing(bill: Bill, *extra: Outpoint) -> Bill:
    """`bill` also listing `extra` deposits, its figures unchanged."""
    deposits = tuple(sorted((*bill.deposits, *extra), key=lambda o: (o.txid, o.index)))
    return dataclasses.replace(bill, deposits=deposits)


def test_a_bill_that_agrees_with_the_ledger_reconciles_clean() -> None:
    # the late issue, above the closed height, is not counted although it covers t
    assert check(clean_bill()) == []


# ---------------------------------------------------------------- issues


def test_a_wrong_issued_power_is_reported_with_both_figures() -> None:
    found = check(dataclasses.replace(clean_bill(), issued_epa_w=1_100))
    assert codes(found) == ["issued_epa_mismatch"]
    assert "1000 W" in found[0].message
    assert "1100 W" in found[0].message


def test_a_bill_closed_with_a_wrong_issued_power_has_a_wrong_energy_and_amount_too() -> None:
    bill = clean_bill()
    wrong = close_bill(
        **{**_close_arguments(bill), "issued_epa_w": 3_000, "interval_s": INTERVAL_S}
    )
    assert codes(check(wrong)) == ["issued_epa_mismatch", "energy_mismatch", "amount_mismatch"]


def test_issued_and_deposited_power_wrong_by_the_same_watts_leave_the_energy_right() -> None:
    bill = clean_bill()
    wrong = close_bill(
        **{
            **_close_arguments(bill),
            "issued_epa_w": 1_500,
            "deposited_epa_w": 1_100,
            "interval_s": INTERVAL_S,
        }
    )
    assert wrong.energy_j == bill.energy_j
    assert codes(check(wrong)) == ["issued_epa_mismatch", "deposited_epa_mismatch"]


def _close_arguments(bill: Bill) -> dict[str, Any]:
    arguments = {f.name: getattr(bill, f.name) for f in dataclasses.fields(bill)}
    for computed in ("energy_j", "amount", "signature"):
        del arguments[computed]
    return arguments


@pytest.mark.parametrize(
    ("issues", "why"),
    [
        ((ISSUE_EPA.txid,), "leaves out the issue of FA during t"),
        ((ISSUE_FA.txid,), "leaves out the issue of EPA covering t"),
        ((ISSUE_EPA.txid, ISSUE_FA.txid, ISSUE_OLD_EPA.txid), "lists EPA not covering t"),
        ((ISSUE_EPA.txid, ISSUE_FA.txid, ISSUE_ECA.txid), "lists an issue of ECA only"),
        ((ISSUE_EPA.txid, ISSUE_FA.txid, ISSUE_OLD_FA.txid), "lists FA issued in t-1"),
        ((ISSUE_EPA.txid, ISSUE_FA.txid, ISSUE_LATE.txid), "lists an issue above closed"),
        ((ISSUE_EPA.txid, ISSUE_FA.txid, _tx(0x99)), "lists an issue not on the ledger"),
        ((), "lists none"),
    ],
)
def test_the_listed_issues_must_be_those_that_count(issues: tuple[bytes, ...], why: str) -> None:
    found = check(dataclasses.replace(clean_bill(), issues=tuple(sorted(issues))))
    assert codes(found) == ["issues_mismatch"], why
    wrong = set(issues) ^ {ISSUE_EPA.txid, ISSUE_FA.txid}
    assert all(txid.hex() in found[0].message for txid in wrong)


def test_a_wrong_fa_issued_is_reported() -> None:
    found = check(dataclasses.replace(clean_bill(), fa_issued=290_000))
    assert codes(found) == ["fa_issued_mismatch"]
    assert "250000" in found[0].message
    assert "290000" in found[0].message


# ---------------------------------------------------------------- deposits


def test_a_deposit_not_on_the_ledger_is_unknown() -> None:
    missing = Outpoint(_tx(0x44), 0)
    found = check(listing(clean_bill(), missing), unknown=[missing])
    assert codes(found) == ["deposit_unknown"]
    assert missing.txid.hex() in found[0].message


def test_a_deposit_the_dso_was_not_told_about_is_unknown() -> None:
    assert codes(check(listing(clean_bill(), Outpoint(_tx(0x44), 0)))) == ["deposit_unknown"]


def test_a_deposit_above_the_closed_height_is_unknown() -> None:
    late = DepositFact(Outpoint(_tx(0x55), 0), Epa(900, 10, 10), CLOSED + 1, 12)
    assert codes(check(listing(clean_bill(), late.outpoint), deposits=(*DEPOSITS, late))) == [
        "deposit_unknown"
    ]


@pytest.mark.parametrize(
    ("asset", "interval"),
    [
        (Eca(900, 10, 10), 9),  # ECA is never billed
        (Epa(900, 11, 12), 9),  # EPA after t
        (Epa(900, 4, 9), 3),  # EPA before t
        (Fa(70_000), 9),  # FA deposited in t-1
        (Fa(70_000), 11),  # FA deposited in t+1
    ],
)
def test_a_deposit_that_counts_for_nothing_in_t_is_reported(asset: Asset, interval: int) -> None:
    idle = DepositFact(Outpoint(_tx(0x66), 2), asset, 3, interval)
    found = check(listing(clean_bill(), idle.outpoint), deposits=(*DEPOSITS, idle))
    assert codes(found) == ["deposit_not_counted"]
    assert idle.outpoint.txid.hex() in found[0].message


def test_a_wrong_deposited_power_is_reported() -> None:
    found = check(dataclasses.replace(clean_bill(), deposited_epa_w=400))
    assert codes(found) == ["deposited_epa_mismatch"]
    assert "600 W" in found[0].message
    assert "400 W" in found[0].message


def test_a_wrong_fa_deposited_is_reported() -> None:
    found = check(dataclasses.replace(clean_bill(), fa_deposited=0))
    assert codes(found) == ["fa_deposited_mismatch"]
    assert "100000" in found[0].message


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({EPA_DEPOSIT.outpoint: [(NEIGHBOUR, T)]}, ["deposit_claimed_twice"]),
        ({EPA_DEPOSIT.outpoint: [(NEIGHBOUR, 3)]}, ["deposit_claimed_twice"]),
        ({LONG_EPA_DEPOSIT.outpoint: [(METER, 8), (NEIGHBOUR, 9)]}, ["deposit_claimed_twice"]),
        ({FA_DEPOSIT.outpoint: [(METER, T + 1)]}, ["deposit_claimed_twice"]),
        ({FA_DEPOSIT.outpoint: [(NEIGHBOUR, T)]}, ["deposit_claimed_twice"]),
        (
            {FA_DEPOSIT.outpoint: [(NEIGHBOUR, T)], EPA_DEPOSIT.outpoint: [(NEIGHBOUR, T)]},
            ["deposit_claimed_twice", "deposit_claimed_twice"],
        ),
        # an EPA covering 8..12 is rightly listed by this meter's bill for each of them
        ({LONG_EPA_DEPOSIT.outpoint: [(METER, 8), (METER, 9), (METER, 11)]}, []),
        # this very bill, sent again
        ({FA_DEPOSIT.outpoint: [(METER, T)], EPA_DEPOSIT.outpoint: [(METER, T)]}, []),
    ],
)
def test_a_deposit_may_count_in_one_bill_only(
    claims: dict[Outpoint, list[tuple[str, int]]], expected: list[str]
) -> None:
    found = check(clean_bill(), claimed_elsewhere=claims)
    assert codes(found) == expected
    if expected:
        assert NEIGHBOUR in found[0].message or f"interval {T + 1}" in found[0].message


# ---------------------------------------------------------------- prices, energy, amount


@pytest.mark.parametrize(
    ("consumption", "production", "expected"),
    [
        (CONSUMPTION + 1, PRODUCTION, 1),
        (CONSUMPTION, None, 1),
        (None, PRODUCTION, 1),
        (PRODUCTION, CONSUMPTION, 2),
    ],
)
def test_prices_other_than_those_in_force_are_reported(
    consumption: int | None, production: int | None, expected: int
) -> None:
    bill = dataclasses.replace(
        clean_bill(), price_consumption=consumption, price_production=production
    )
    found = check(bill)
    assert codes(found) == ["price_mismatch"] * expected
    assert f"{CONSUMPTION} micro-units per kWh" in found[0].message or "none" in found[0].message


def test_no_price_in_force_is_not_the_same_report_as_a_zero_price() -> None:
    free = dataclasses.replace(clean_bill(), price_consumption=0, amount=150_000)
    assert codes(check(free, price_consumption=None)) == ["price_mismatch"]
    assert check(dataclasses.replace(free, price_consumption=None), price_consumption=None) == []


def test_a_wrong_energy_is_reported() -> None:
    found = check(dataclasses.replace(clean_bill(), energy_j=2_160_001))
    assert codes(found) == ["energy_mismatch"]
    assert "2160000 J" in found[0].message
    assert "2160001 J" in found[0].message


def test_a_wrong_amount_is_reported() -> None:
    found = check(dataclasses.replace(clean_bill(), amount=299_999))
    assert codes(found) == ["amount_mismatch"]
    assert "300000" in found[0].message
    assert "299999" in found[0].message


def test_every_disagreement_is_reported_in_order() -> None:
    missing = Outpoint(_tx(0x44), 0)
    idle = DepositFact(Outpoint(_tx(0x66), 2), Eca(900, 10, 10), 3, 9)
    bill = dataclasses.replace(
        listing(clean_bill(), missing, idle.outpoint),
        issued_epa_w=0,
        issues=(),
        fa_issued=0,
        deposited_epa_w=0,
        fa_deposited=0,
        price_consumption=1,
        energy_j=0,
        amount=0,
    )
    found = check(
        bill,
        deposits=(*DEPOSITS, idle),
        unknown=[missing],
        claimed_elsewhere={FA_DEPOSIT.outpoint: [(NEIGHBOUR, T)]},
    )
    assert codes(found) == [
        "issued_epa_mismatch",
        "issues_mismatch",
        "fa_issued_mismatch",
        "deposit_unknown",
        "deposit_not_counted",
        "deposited_epa_mismatch",
        "fa_deposited_mismatch",
        "deposit_claimed_twice",
        "price_mismatch",
        "energy_mismatch",
        "amount_mismatch",
    ]


# ---------------------------------------------------------------- properties


@dataclass
class Ledger:
    """What the ledger holds about one meter, for the bill of `interval`."""

    interval: int
    interval_s: int
    closed_height: int
    issues: list[IssuedFact]
    deposits: list[DepositFact]
    price_consumption: int | None
    price_production: int | None


@st.composite
def assets_(draw: st.DrawFn, near: int) -> Asset:
    """An asset; an EPA or ECA starting within 5 intervals of `near`, so many cover it."""
    kind = draw(st.sampled_from(["EPA", "ECA", "FA"]))
    if kind == "FA":
        return Fa(draw(st.integers(1, 10**9)))
    start = draw(st.integers(max(0, near - 5), near + 5))
    end = draw(st.integers(start, start + 5))
    power = draw(st.integers(1, 10**6))
    return Epa(power, start, end) if kind == "EPA" else Eca(power, start, end)


@st.composite
def ledgers(draw: st.DrawFn) -> Ledger:
    t = draw(st.integers(0, 25))
    closed_height = draw(st.integers(0, 50))
    intervals = st.one_of(st.just(t), st.integers(max(0, t - 2), t + 2))
    txids = draw(st.lists(st.binary(min_size=32, max_size=32), max_size=12, unique=True))
    split = draw(st.integers(0, len(txids)))
    issues = [
        IssuedFact(
            txid,
            draw(st.integers(0, closed_height + 10)),
            draw(intervals),
            tuple(Output(a, OWNER) for a in draw(st.lists(assets_(t), min_size=1, max_size=3))),
        )
        for txid in txids[:split]
    ]
    deposits = [
        DepositFact(
            Outpoint(txid, draw(st.integers(0, 3))),
            draw(assets_(t)),
            draw(st.integers(0, closed_height)),
            draw(intervals),
        )
        for txid in txids[split:]
    ]
    prices = st.one_of(st.none(), st.integers(0, 10**9))
    return Ledger(
        interval=t,
        interval_s=draw(st.sampled_from([4, 60, 900, 3600])),
        closed_height=closed_height,
        issues=issues,
        deposits=deposits,
        price_consumption=draw(prices),
        price_production=draw(prices),
    )


def _covers(asset: Asset, t: int) -> bool:
    return isinstance(asset, Epa) and asset.start <= t <= asset.end


def meter_bill(ledger: Ledger, measured_j: int) -> tuple[Bill, list[DepositFact]]:
    """The bill a correct meter closes from the ledger, and the deposits it lists."""
    t = ledger.interval
    issues = [f for f in ledger.issues if f.height <= ledger.closed_height]
    counted = [
        f
        for f in issues
        if any(
            _covers(o.asset, t) or (isinstance(o.asset, Fa) and f.interval == t) for o in f.outputs
        )
    ]
    listed = [
        d
        for d in ledger.deposits
        if _covers(d.asset, t) or (isinstance(d.asset, Fa) and d.interval == t)
    ]
    bill = close_bill(
        chain=CHAIN,
        meter=METER,
        interval=t,
        closed_height=ledger.closed_height,
        interval_s=ledger.interval_s,
        measured_j=measured_j,
        issued_epa_w=sum(
            o.asset.power
            for f in issues
            for o in f.outputs
            if isinstance(o.asset, Epa) and _covers(o.asset, t)
        ),
        deposited_epa_w=sum(
            d.asset.power for d in listed if isinstance(d.asset, Epa) and _covers(d.asset, t)
        ),
        fa_issued=sum(
            o.asset.amount
            for f in issues
            if f.interval == t
            for o in f.outputs
            if isinstance(o.asset, Fa)
        ),
        fa_deposited=sum(d.asset.amount for d in listed if isinstance(d.asset, Fa)),
        price_consumption=ledger.price_consumption,
        price_production=ledger.price_production,
        issues=[f.txid for f in counted],
        deposits=[d.outpoint for d in listed],
    )
    return bill, listed


def reconcile_with(ledger: Ledger, bill: Bill, listed: list[DepositFact]) -> list[Discrepancy]:
    # this meter's bills for every interval an EPA deposit covers list it, this one included
    claims = {
        d.outpoint: [(METER, n) for n in range(d.asset.start, d.asset.end + 1)]
        for d in listed
        if isinstance(d.asset, Epa)
    }
    return reconcile(
        bill,
        interval_s=ledger.interval_s,
        issues=ledger.issues,
        deposits={d.outpoint: d for d in listed},
        claimed_elsewhere=claims,
        price_consumption=ledger.price_consumption,
        price_production=ledger.price_production,
    )


@given(ledgers(), st.integers(-(10**10), 10**10))
def test_a_bill_closed_from_the_ledger_always_reconciles(ledger: Ledger, measured_j: int) -> None:
    bill, listed = meter_bill(ledger, measured_j)
    assert reconcile_with(ledger, bill, listed) == []


FIGURES = {
    "issued_epa_w": "issued_epa_mismatch",
    "fa_issued": "fa_issued_mismatch",
    "deposited_epa_w": "deposited_epa_mismatch",
    "fa_deposited": "fa_deposited_mismatch",
    "amount": "amount_mismatch",
}


@given(
    ledgers(),
    st.integers(-(10**10), 10**10),
    st.sampled_from(sorted(FIGURES)),
    st.integers(-(10**9), 10**9).filter(bool),
)
def test_changing_any_figure_is_caught(
    ledger: Ledger, measured_j: int, figure: str, change: int
) -> None:
    bill, listed = meter_bill(ledger, measured_j)
    changed = dataclasses.replace(bill, **{figure: getattr(bill, figure) + change})
    assert FIGURES[figure] in codes(reconcile_with(ledger, changed, listed))
