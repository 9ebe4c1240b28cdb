"""Orders of the bid store: payment rounding, wire round trips, every refusal code, challenges."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assets import Eca, Epa, Fa, Keypair, Outpoint, Output
from bidstore.orders import (
    MAX_FA_INPUTS,
    MAX_ORDER_BYTES,
    MAX_PRICE,
    Challenges,
    ChallengesFull,
    Listing,
    Order,
    OrderRefused,
    OrderSide,
    check_order,
    decode_order,
    encode_order,
    order_id,
    order_to_wire,
    payment,
    sign_order,
)

INTERVAL_S = 900
NOW = 100
T = 105
SELLER = Keypair(bytes([1]) * 32)
BUYER = Keypair(bytes([2]) * 32)
MALLORY = Keypair(bytes([3]) * 32)
RECEIVE = bytes([9]) * 32
CHALLENGE = bytes([7]) * 32
ONION = "a" * 52 + "2345.onion"


def outpoint(n: int) -> Outpoint:
    return Outpoint(hashlib.sha256(n.to_bytes(4, "big")).digest(), n % 3)


class FakeLedger:
    """The ledger's word on outpoints, as the service's lookup gives it."""

    def __init__(self) -> None:
        self.outputs: dict[Outpoint, tuple[Output, bool]] = {}

    def put(self, n: int, output: Output, *, spent: bool = False) -> Outpoint:
        self.outputs[outpoint(n)] = (output, spent)
        return outpoint(n)

    def lookup(self, where: Outpoint) -> tuple[Output, bool] | None:
        return self.outputs.get(where)


def ask(assets: tuple[Outpoint, ...], key: Keypair = SELLER, **changes: Any) -> Order:
    order = Order(
        side=OrderSide.ASK,
        interval=T,
        price=120_000,
        assets=assets,
        contact="relay",
        receive=RECEIVE,
        owner=key.public_key,
        challenge=CHALLENGE,
    )
    return sign_order(dataclasses.replace(order, **changes), key)


def bid(assets: tuple[Outpoint, ...], key: Keypair = BUYER, **changes: Any) -> Order:
    order = Order(
        side=OrderSide.BID,
        interval=T,
        price=150_000,
        assets=assets,
        contact=ONION,
        receive=RECEIVE,
        owner=key.public_key,
        challenge=CHALLENGE,
    )
    return sign_order(dataclasses.replace(order, **changes), key)


def check(order: Order, ledger: FakeLedger, challenge_ok: bool = True) -> Listing:
    return check_order(
        order,
        ledger.lookup,
        interval_s=INTERVAL_S,
        now_interval=NOW,
        challenge_ok=lambda _: challenge_ok,
    )


def refused(code: str) -> Any:
    return pytest.raises(OrderRefused, match=f"^{code}:")


# ---------------------------------------------------------------- payment


def reference_payment(power_w: int, interval_s: int, price: int) -> int:
    """Independent: exact rational joules priced per kWh; Python's round() is half to even."""
    return round(Fraction(power_w * interval_s, 3_600_000) * price)


@given(st.integers(1, 10**7), st.sampled_from([1, 4, 60, 900, 3600]), st.integers(1, MAX_PRICE))
def test_payment_is_the_energy_priced_per_kwh_rounded_half_to_even_once(
    power_w: int, interval_s: int, price: int
) -> None:
    assert payment(power_w, interval_s, price) == reference_payment(power_w, interval_s, price)


@pytest.mark.parametrize(
    ("power_w", "interval_s", "price", "expected"),
    [
        (1, 1, 1_800_000, 0),  # 0.5 -> 0
        (1, 1, 5_400_000, 2),  # 1.5 -> 2
        (1, 1, 9_000_000, 2),  # 2.5 -> 2
        (1, 1, 1_800_001, 1),  # just above a half
        (1000, 900, 100_000, 25_000),  # 250 Wh at 0.10 per kWh
        (3, 1, 600_000, 0),  # 0.5 once: three 1 W pieces would each round 0.1667 to 0
    ],
)
def test_payment_rounds_once(power_w: int, interval_s: int, price: int, expected: int) -> None:
    assert payment(power_w, interval_s, price) == expected


# ---------------------------------------------------------------- wire


def test_round_trip_and_id() -> None:
    order = ask((outpoint(1),))
    raw = encode_order(order)
    assert decode_order(raw) == order
    assert order_id(order) == hashlib.sha256(raw).digest()
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()


@given(
    side=st.sampled_from(OrderSide),
    interval=st.integers(0, 2**53 - 1),
    price=st.integers(1, MAX_PRICE),
    fa=st.integers(1, MAX_FA_INPUTS),
    contact=st.one_of(
        st.just("relay"),
        st.text("abcdefghijklmnopqrstuvwxyz234567", min_size=56, max_size=56).map(
            lambda s: s + ".onion"
        ),
    ),
    receive=st.binary(min_size=32, max_size=32),
    challenge=st.binary(min_size=32, max_size=32),
)
def test_signed_orders_round_trip(
    side: OrderSide,
    interval: int,
    price: int,
    fa: int,
    contact: str,
    receive: bytes,
    challenge: bytes,
) -> None:
    count = 1 if side is OrderSide.ASK else 1 + fa
    order = sign_order(
        Order(
            side,
            interval,
            price,
            tuple(outpoint(n) for n in range(count)),
            contact,
            receive,
            BUYER.public_key,
            challenge,
        ),
        BUYER,
    )
    assert decode_order(encode_order(order)) == order


def wire_of(order: Order) -> dict[str, Any]:
    return order_to_wire(order)


def raw_of(wire: Any) -> bytes:
    return json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()


def _mutated(**changes: Any) -> bytes:
    wire = wire_of(ask((outpoint(1),)))
    wire.update(changes)
    return raw_of(wire)


def _bid_with(count: int) -> bytes:
    wire = wire_of(bid((outpoint(1), outpoint(2))))
    wire["assets"] = [{"tx": outpoint(n).txid.hex(), "index": n % 3} for n in range(count)]
    return raw_of(wire)


MALFORMED = {
    "not json": b"{",
    "not utf-8": b"\xff",
    "a list": b"[]",
    "float price": _mutated(price=1.5),
    "bool price": _mutated(price=True),
    "price zero": _mutated(price=0),
    "price too high": _mutated(price=MAX_PRICE + 1),
    "negative interval": _mutated(interval=-1),
    "string interval": _mutated(interval="105"),
    "version 2": _mutated(v=2),
    "unknown side": _mutated(side="buy"),
    "uppercase hex": _mutated(owner=SELLER.public_key.hex().upper()),
    "short receive": _mutated(receive="00" * 31),
    "short signature": _mutated(signature="00" * 63),
    "short challenge": _mutated(challenge="00" * 16),
    "v2 onion": _mutated(contact="abcdefghijklmnop.onion"),
    "uppercase onion": _mutated(contact="A" * 56 + ".onion"),
    "a url": _mutated(contact="http://example.com"),
    "two assets in an ask": _mutated(
        assets=[{"tx": outpoint(n).txid.hex(), "index": n % 3} for n in (1, 2)]
    ),
    "no assets": _mutated(assets=[]),
    "asset with extra key": _mutated(assets=[{"tx": "00" * 32, "index": 0, "x": 1}]),
    "negative index": _mutated(assets=[{"tx": "00" * 32, "index": -1}]),
    "bid with one asset": _bid_with(1),
    "bid with too many assets": _bid_with(2 + MAX_FA_INPUTS),
    "bid naming an outpoint twice": raw_of(
        {
            **wire_of(bid((outpoint(1), outpoint(2)))),
            "assets": [{"tx": outpoint(2).txid.hex(), "index": 2}] * 2,
        }
    ),
    "extra key": _mutated(extra=1),
    "missing key": raw_of(
        {k: v for k, v in wire_of(ask((outpoint(1),))).items() if k != "contact"}
    ),
    "spaces": json.dumps(wire_of(ask((outpoint(1),))), sort_keys=True).encode(),
    "unsorted keys": json.dumps(wire_of(ask((outpoint(1),))), separators=(",", ":")).encode(),
    "too large": _mutated(contact="relay" + " " * MAX_ORDER_BYTES),
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_wires_are_refused(raw: bytes) -> None:
    with refused("malformed"):
        decode_order(raw)


def test_an_oversized_order_is_refused_before_parsing() -> None:
    with pytest.raises(OrderRefused, match="limit is"):
        decode_order(b"{" + b" " * MAX_ORDER_BYTES + b"}")


def test_a_bid_with_the_most_assets_is_well_formed() -> None:
    order = bid(tuple(outpoint(n) for n in range(1 + MAX_FA_INPUTS)))
    assert decode_order(encode_order(order)) == order


def test_forged_signature_is_refused() -> None:
    # Mallory claims Seller's address as owner and signs with her own key
    forged = dataclasses.replace(ask((outpoint(1),), MALLORY), owner=SELLER.public_key)
    with refused("bad_signature"):
        decode_order(encode_order(forged))


def test_a_signature_does_not_carry_over_to_a_changed_order() -> None:
    order = ask((outpoint(1),))
    for changed in (
        dataclasses.replace(order, price=order.price - 1),
        dataclasses.replace(order, receive=MALLORY.public_key),
        dataclasses.replace(order, challenge=bytes(32)),
        dataclasses.replace(order, interval=T + 1),
        dataclasses.replace(order, side=OrderSide.BID, assets=(outpoint(1), outpoint(2))),
    ):
        with refused("bad_signature"):
            decode_order(encode_order(changed))


def test_a_transaction_signature_is_not_an_order_signature() -> None:
    from assets import signing_message

    order = ask((outpoint(1),))
    digest = hashlib.sha256(encode_order(dataclasses.replace(order, signature=b""))).digest()
    wrong = SELLER.sign(signing_message("transfer", digest))
    with refused("bad_signature"):
        decode_order(encode_order(dataclasses.replace(order, signature=wrong)))


# ---------------------------------------------------------------- against the ledger


def seller_ledger(asset: Epa | Eca | Fa | None = None) -> tuple[FakeLedger, Outpoint]:
    ledger = FakeLedger()
    where = ledger.put(1, Output(asset or Epa(1000, T, T), SELLER.public_key))
    return ledger, where


def buyer_ledger(
    power: int = 1000, funds: tuple[int, ...] = (40_000,)
) -> tuple[FakeLedger, tuple[Outpoint, ...]]:
    ledger = FakeLedger()
    eca = ledger.put(10, Output(Eca(power, T, T), BUYER.public_key))
    fas = tuple(
        ledger.put(11 + n, Output(Fa(amount), BUYER.public_key)) for n, amount in enumerate(funds)
    )
    return ledger, (eca, *fas)


def test_a_good_ask_lists_its_power() -> None:
    ledger, where = seller_ledger()
    order = ask((where,))
    listing = check(order, ledger)
    assert listing == Listing(order, order_id(order), 1000, 0, (ledger.outputs[where][0],))


def test_a_good_bid_lists_its_power_and_funds() -> None:
    owed = payment(1000, INTERVAL_S, 150_000)  # 37_500
    ledger, assets = buyer_ledger(1000, (owed - 500, 500))
    listing = check(bid(assets), ledger)
    assert (listing.power_w, listing.funds) == (1000, owed)
    assert listing.inputs == tuple(ledger.outputs[a][0] for a in assets)


def test_unknown_asset() -> None:
    ledger, _ = seller_ledger()
    with refused("unknown_asset"):
        check(ask((outpoint(99),)), ledger)


def test_another_owners_asset() -> None:
    # Mallory signs correctly, as herself, an ask spending Seller's EPA
    ledger, where = seller_ledger()
    order = ask((where,), MALLORY)
    assert decode_order(encode_order(order)) == order
    with refused("not_owner"):
        check(order, ledger)


def test_a_bid_with_another_owners_fa() -> None:
    ledger, assets = buyer_ledger()
    stolen = ledger.put(50, Output(Fa(10**6), SELLER.public_key))
    with refused("not_owner"):
        check(bid((*assets, stolen)), ledger)


def test_spent_asset() -> None:
    ledger = FakeLedger()
    where = ledger.put(1, Output(Epa(1000, T, T), SELLER.public_key), spent=True)
    with refused("spent"):
        check(ask((where,)), ledger)


WRONG_ASK_ASSETS = {
    "multi-interval EPA": Epa(1000, T, T + 1),
    "EPA starting before": Epa(1000, T - 1, T),
    "EPA of another interval": Epa(1000, T + 1, T + 1),
    "ECA": Eca(1000, T, T),
    "FA": Fa(10**6),
}


@pytest.mark.parametrize("asset", WRONG_ASK_ASSETS.values(), ids=WRONG_ASK_ASSETS.keys())
def test_an_ask_spends_one_single_interval_epa_for_its_interval(asset: Epa | Eca | Fa) -> None:
    ledger, where = seller_ledger(asset)
    with refused("wrong_asset"):
        check(ask((where,)), ledger)


WRONG_BIDS: dict[str, list[Epa | Eca | Fa]] = {
    "multi-interval ECA": [Eca(1000, T, T + 1), Fa(10**6)],
    "ECA of another interval": [Eca(1000, T + 1, T + 1), Fa(10**6)],
    "EPA instead of ECA": [Epa(1000, T, T), Fa(10**6)],
    "two ECAs": [Eca(1000, T, T), Eca(1000, T, T), Fa(10**6)],
    "no ECA": [Fa(10**6), Fa(10**6)],
    "no FA": [Eca(1000, T, T), Eca(5, T, T)],
    "an EPA besides": [Eca(1000, T, T), Fa(10**6), Epa(5, T, T)],
}


@pytest.mark.parametrize("assets", WRONG_BIDS.values(), ids=WRONG_BIDS.keys())
def test_a_bid_spends_one_single_interval_eca_and_fa(assets: list[Epa | Eca | Fa]) -> None:
    ledger = FakeLedger()
    where = tuple(ledger.put(n, Output(a, BUYER.public_key)) for n, a in enumerate(assets))
    with refused("wrong_asset"):
        check(bid(where), ledger)


def test_underfunded_bid_by_one_micro_unit() -> None:
    owed = payment(1000, INTERVAL_S, 150_000)
    ledger, assets = buyer_ledger(1000, (owed - 1,))
    with refused("underfunded"):
        check(bid(assets), ledger)
    ledger, assets = buyer_ledger(1000, (owed,))
    assert check(bid(assets), ledger).funds == owed


@pytest.mark.parametrize("interval", [NOW, NOW - 1, 0])
def test_interval_passed(interval: int) -> None:
    ledger = FakeLedger()
    where = ledger.put(1, Output(Epa(1000, interval, interval), SELLER.public_key))
    with refused("interval_passed"):
        check(ask((where,), interval=interval), ledger)


def test_bad_challenge_comes_before_any_lookup() -> None:
    looked: list[Outpoint] = []

    def lookup(where: Outpoint) -> tuple[Output, bool] | None:
        looked.append(where)
        return None

    with refused("bad_challenge"):
        check_order(
            ask((outpoint(1),)),
            lookup,
            interval_s=INTERVAL_S,
            now_interval=NOW,
            challenge_ok=lambda _: False,
        )
    assert looked == []


def test_reused_and_expired_challenges_are_refused() -> None:
    clock = [1000.0]
    challenges = Challenges(lambda: clock[0], ttl_s=60)
    ledger, where = seller_ledger()

    def post(challenge: bytes) -> Listing:
        return check_order(
            ask((where,), challenge=challenge),
            ledger.lookup,
            interval_s=INTERVAL_S,
            now_interval=NOW,
            challenge_ok=challenges.redeem,
        )

    fresh = challenges.issue()
    assert post(fresh).order.challenge == fresh
    with refused("bad_challenge"):
        post(fresh)  # reused
    stale = challenges.issue()
    clock[0] += 60
    with refused("bad_challenge"):
        post(stale)  # expired
    with refused("bad_challenge"):
        post(bytes(32))  # never issued


# ---------------------------------------------------------------- challenges


def test_challenges_are_random_and_once_only() -> None:
    clock = [0.0]
    challenges = Challenges(lambda: clock[0], ttl_s=10)
    issued = [challenges.issue() for _ in range(50)]
    assert len(set(issued)) == 50 and all(len(c) == 32 for c in issued)
    assert len(challenges) == 0  # issuing records nothing
    assert all(challenges.redeem(c) for c in issued)
    assert not any(challenges.redeem(c) for c in issued)
    assert len(challenges) == 50


def test_challenges_expire_at_their_ttl() -> None:
    clock = [0.0]
    challenges = Challenges(lambda: clock[0], ttl_s=10)
    early, late = challenges.issue(), challenges.issue()
    clock[0] = 9.999
    assert challenges.redeem(early)
    clock[0] = 10.0
    assert not challenges.redeem(late)


def test_no_number_of_challenges_issued_pushes_out_another() -> None:
    """Issue 14: a flood of challenges once evicted a victim's, which then failed."""
    clock = [0.0]
    challenges = Challenges(lambda: clock[0], ttl_s=100, capacity=3)
    victim = challenges.issue()
    for _ in range(10_000):
        challenges.issue()
    assert challenges.redeem(victim)


def test_a_challenge_of_another_process_or_altered_is_refused() -> None:
    clock = [0.0]
    ours, theirs = Challenges(lambda: clock[0]), Challenges(lambda: clock[0])
    assert not ours.redeem(theirs.issue())
    fresh = ours.issue()
    for at in (0, 8, 15, 16, 31):  # the nonce, the expiry, the MAC
        altered = bytearray(fresh)
        altered[at] ^= 1
        assert not ours.redeem(bytes(altered))
    assert not ours.redeem(fresh[:-1]) and not ours.redeem(fresh + b"\0")
    assert not ours.redeem(bytes(32))
    assert ours.redeem(fresh)


def test_challenges_redeemed_are_forgotten_once_expired() -> None:
    clock = [0.0]
    challenges = Challenges(lambda: clock[0], ttl_s=10)
    used = challenges.issue()
    assert challenges.redeem(used) and len(challenges) == 1
    clock[0] = 11.0
    assert challenges.redeem(challenges.issue()) and len(challenges) == 1
    assert not challenges.redeem(used)  # expired: its MAC still holds its expiry


def test_redeemed_challenges_are_bounded_and_refused_past_it_never_forgotten() -> None:
    clock = [0.0]
    challenges = Challenges(lambda: clock[0], ttl_s=10, capacity=2)
    first, second, third = (challenges.issue() for _ in range(3))
    clock[0] = 2.5
    assert challenges.redeem(first) and challenges.redeem(second)
    with pytest.raises(ChallengesFull) as full:
        challenges.redeem(third)
    assert full.value.wait_s == pytest.approx(7.5)  # first and second expire at 10
    assert not challenges.redeem(first)  # still remembered: no replay
    clock[0] = 10.0
    assert len(challenges.issue()) == 32 and challenges.redeem(challenges.issue())
