"""The meter's withdrawal checks: a clear refusal where the ledger would reject the issue or the
credit line would be crossed, and — checked against the real ledger — never a refusal the
ledger would not make, nor an issue it would reject."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets import Authorization, Code, Eca, Epa, Fa, Keypair, Output, encode_transaction
from ledger import Ledger
from ledger.store import Store
from simulation.scenario import Scenario, pay
from smartmeter.issuing import IssuedSoFar, WithdrawalRefused, check_withdrawal

METER = "meter-1"
KEY = Keypair(bytes([7]) * 32)
OWNER = Keypair(bytes([8]) * 32)
MAX_EPA, MAX_ECA = 5_000, 3_000


class Meter:
    """A ledger with the meter authorized from interval 1 (banned from 20), and the meter's own
    record of what it issued, as the daemon keeps it."""

    def __init__(self, store_url: str) -> None:
        self.scenario = Scenario(dso=Keypair(bytes([9]) * 32), sequencer=Keypair(bytes([10]) * 32))
        self.ledger = Ledger(Store(store_url), self.scenario.genesis, self.scenario.sequencer)
        regulations = [
            self.scenario.regulate(
                0, authorize=[Authorization(METER, KEY.public_key, MAX_EPA, MAX_ECA)]
            ),
            self.scenario.regulate(19, ban=[METER]),
        ]
        self.block([encode_transaction(r) for r in regulations], 0)
        self.issued = IssuedSoFar()
        self.nonces = itertools.count(1)

    def block(self, raws: list[bytes], interval: int) -> list[Code | None]:
        time = self.scenario.time_in(interval)
        return [o.code for o in self.ledger.append_block(raws, time).outcomes]

    def check(self, outputs: list[Output], now: int = 2, credit_line: int = 10_000) -> None:
        check_withdrawal(
            outputs,
            now=now,
            meter=METER,
            schedule=self.ledger.state.schedule,
            issued=self.issued,
            credit_line=credit_line,
        )

    def issue(self, outputs: list[Output], now: int = 2) -> Code | None:
        """Submit the issue to the ledger and, if accepted, record it as the meter does."""
        tx = self.scenario.issue(METER, KEY, next(self.nonces), outputs)
        [code] = self.block([encode_transaction(tx)], now)
        if code is None:
            self.issued.record(outputs)
        return code


@pytest.fixture
def meter(store_url: str) -> Iterator[Meter]:
    found = Meter(store_url)
    yield found
    found.ledger.store.close()


def refusal(check: Callable[[], None]) -> WithdrawalRefused:
    with pytest.raises(WithdrawalRefused) as refused:
        check()
    return refused.value


def test_issued_power_stays_strictly_below_the_limit(meter: Meter) -> None:
    meter.check([pay(Epa(4_999, 5, 6), OWNER)])
    assert meter.issue([pay(Epa(3_000, 5, 6), OWNER)]) is None
    found = refusal(lambda: meter.check([pay(Epa(2_000, 6, 8), OWNER)]))
    assert found.code == "limit_exceeded"
    assert found.message == (
        "EPA at interval 6: 3000 W issued and 2000 W asked would reach 5000 W; it must stay "
        "below MAXEPA 5000 W, so at most 1999 W more"
    )
    meter.check([pay(Epa(1_999, 6, 8), OWNER), pay(Eca(2_999, 6, 8), OWNER)])
    assert refusal(lambda: meter.check([pay(Eca(3_000, 9, 9), OWNER)])).code == "limit_exceeded"


def test_no_withdrawal_outside_the_authorization(meter: Meter) -> None:
    assert refusal(lambda: meter.check([pay(Epa(1, 5, 5), OWNER)], now=0)).code == (
        "not_authorized"
    )
    found = refusal(lambda: meter.check([pay(Epa(1, 0, 5), OWNER)]))
    assert (found.code, found.message) == (
        "not_authorized",
        "the meter is not authorized at interval 0",
    )
    banned = refusal(lambda: meter.check([pay(Epa(1, 18, 21), OWNER)]))
    assert (banned.code, banned.message) == ("banned", "the meter is banned at interval 20")
    assert refusal(lambda: meter.check([pay(Fa(1), OWNER)], now=20)).code == "banned"


def test_fa_stays_within_the_credit_line(meter: Meter) -> None:
    meter.check([pay(Fa(10_000), OWNER)])
    assert meter.issue([pay(Fa(6_000), OWNER)]) is None
    meter.issued.fa_deposited += 1_000  # the owner brought some back
    found = refusal(lambda: meter.check([pay(Fa(5_001), OWNER)]))
    assert (found.code, found.message) == (
        "credit_exceeded",
        "5001 micro-units of FA would bring the owner's credit to 10001, over its line of "
        "10000: at most 5000 more",
    )
    meter.check([pay(Fa(5_000), OWNER)])


def test_an_empty_withdrawal_is_refused(meter: Meter) -> None:
    assert refusal(lambda: meter.check([])).code == "bad_request"


_LEDGER_CODE = {
    "limit_exceeded": Code.LIMIT_EXCEEDED,
    "not_authorized": Code.LIMIT_EXCEEDED,  # no allowance where no authorization is in force
    "banned": Code.METER_BANNED,
}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.sampled_from([Epa, Eca]),
                st.sampled_from(
                    [1, 999, 1_000, 1_500, 2_000, 2_500, 3_000, 3_499]
                ),  # sums hit limits
                st.integers(1, 22),
                st.integers(0, 3),
            ),
            min_size=1,
            max_size=3,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_the_meter_refuses_exactly_what_the_ledger_would_reject(
    tmp_path_factory: pytest.TempPathFactory,
    withdrawals: list[list[tuple[type[Epa] | type[Eca], int, int, int]]],
) -> None:
    folder: Path = tmp_path_factory.mktemp("issuing")
    meter = Meter(f"sqlite:///{folder / 'ledger.sqlite'}")
    try:
        for wanted in withdrawals:
            outputs = [
                pay(kind(power, start, start + span), OWNER) for kind, power, start, span in wanted
            ]
            try:
                meter.check(outputs)
            except WithdrawalRefused as refused:
                # What the meter refuses, the ledger would have rejected too, with the same reason.
                assert meter.issue(outputs) is _LEDGER_CODE[refused.code]
            else:
                assert meter.issue(outputs) is None  # never an issue the ledger rejects
    finally:
        meter.ledger.store.close()
