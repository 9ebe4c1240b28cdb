"""The interval bill of DESIGN.md section 7: formula, wire format, id and signature."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from assets import Keypair, Outpoint, signing_message, verify
from assets.bill import (
    JOULES_PER_KWH,
    MAX_BILL_BYTES,
    MAX_BILL_ENTRIES,
    Bill,
    BillRejected,
    bill_amount,
    bill_id,
    bill_signature_valid,
    bill_to_wire,
    close_bill,
    decode_bill,
    decode_bill_with_id,
    encode_bill,
    energy_charge,
    interval_energy_j,
    sign_bill,
)
from assets.codec import MAX_INT
from assets.schemas import BILL

CHAIN = bytes(range(32))
METER = "ES0021000000000001JN0F"
METER_KEY = Keypair(bytes([7]) * 32)
OTHER_KEY = Keypair(bytes([8]) * 32)


def sample_bill() -> Bill:
    """A 900 s interval: 2 kW consumed, 1 kW of EPA issued, 400 W of EPA and FA deposited."""
    return close_bill(
        chain=CHAIN,
        meter=METER,
        interval=42,
        closed_height=100,
        interval_s=900,
        measured_j=1_800_000,
        issued_epa_w=1_000,
        deposited_epa_w=400,
        fa_issued=250_000,
        fa_deposited=100_000,
        price_consumption=250_000,
        price_production=80_000,
        issues=[b"\x02" * 32, b"\x01" * 32],
        deposits=[Outpoint(b"\x03" * 32, 1), Outpoint(b"\x03" * 32, 0)],
    )


def signed_wire() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(encode_bill(sign_bill(sample_bill(), METER_KEY)))
    return parsed


def _encode(wire: Any) -> bytes:
    return json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()


def rejection(raw: bytes) -> BillRejected:
    with pytest.raises(BillRejected) as caught:
        decode_bill(raw)
    return caught.value


# ---------------------------------------------------------------- the formula


def test_close_bill_computes_energy_and_amount_and_sorts_the_facts() -> None:
    bill = sample_bill()
    # E = 1_800_000 J - 400 W * 900 s + 1_000 W * 900 s = 1_800_000 - 360_000 + 900_000
    assert bill.energy_j == 2_340_000
    # 2_340_000 J = 0.65 kWh at 250_000 micro-units/kWh = 162_500; FA: 250_000 - 100_000
    assert bill.amount == 250_000 - 100_000 + 162_500 == 312_500
    assert bill.issues == (b"\x01" * 32, b"\x02" * 32)
    assert bill.deposits == (Outpoint(b"\x03" * 32, 0), Outpoint(b"\x03" * 32, 1))
    assert bill.signature == b""


@pytest.mark.parametrize(
    ("field", "value"),
    [("issues", [b"\x01" * 32, b"\x01" * 32]), ("deposits", [Outpoint(CHAIN, 0)] * 2)],
)
def test_close_bill_refuses_a_fact_named_twice(field: str, value: list[Any]) -> None:
    arguments: dict[str, Any] = {
        "chain": CHAIN,
        "meter": METER,
        "interval": 0,
        "closed_height": 0,
        "interval_s": 900,
        "measured_j": 0,
        "issued_epa_w": 0,
        "deposited_epa_w": 0,
        "fa_issued": 0,
        "fa_deposited": 0,
        "price_consumption": None,
        "price_production": None,
        "issues": [],
        "deposits": [],
        field: value,
    }
    with pytest.raises(ValueError, match="twice"):
        close_bill(**arguments)


@pytest.mark.parametrize(
    ("measured_j", "issued_epa_w", "deposited_epa_w", "energy_j"),
    [
        # 1 kW withdrawn for the whole 900 s interval: 1_000 W * 900 s = 900_000 J = 0.25 kWh
        (900_000, 0, 0, 900_000),
        # 2 kW exported: -1_800_000 J, a net producer
        (-1_800_000, 0, 0, -1_800_000),
        # 1 kW exported, all of it sold as 1 kW of EPA: -900_000 + 1_000 * 900 = 0
        (-900_000, 1_000, 0, 0),
        # 500 W consumed, all of it bought as 500 W of EPA: 450_000 - 500 * 900 = 0
        (450_000, 0, 500, 0),
        # 1 kW consumed, 400 W bought, 300 W of EPA sold: 900_000 - 360_000 + 270_000
        (900_000, 300, 400, 810_000),
    ],
)
def test_interval_energy(
    measured_j: int, issued_epa_w: int, deposited_epa_w: int, energy_j: int
) -> None:
    assert interval_energy_j(measured_j, issued_epa_w, deposited_epa_w, 900) == energy_j


@pytest.mark.parametrize(
    ("energy_j", "consumption", "production", "charge"),
    [
        # 0.25 kWh at 0.20 EUR/kWh (200_000 micro-units) = 0.05 EUR
        (900_000, 200_000, 60_000, 50_000),
        # -0.5 kWh exported at 0.06 EUR/kWh: a credit of 0.03 EUR, at the production price
        (-1_800_000, 200_000, 60_000, -30_000),
        (0, 200_000, 60_000, 0),
        # no price in force bills the energy at 0
        (900_000, None, 60_000, 0),
        (-1_800_000, 200_000, None, 0),
        # 1 J at 100_000 micro-units/kWh is 1/36 micro-unit: 17 J = 0.47 -> 0, 19 J = 0.53 -> 1
        (17, 100_000, 100_000, 0),
        (19, 100_000, 100_000, 1),
        (-19, 100_000, 100_000, -1),
    ],
)
def test_energy_charge(
    energy_j: int, consumption: int | None, production: int | None, charge: int
) -> None:
    assert energy_charge(energy_j, consumption, production) == charge


@pytest.mark.parametrize(
    ("energy_j", "charge"),
    [
        # at 100_000 micro-units/kWh: 18 J = 0.5, 54 J = 1.5, 90 J = 2.5, 126 J = 3.5
        (18, 0),
        (54, 2),
        (90, 2),
        (126, 4),
        (-18, 0),
        (-54, -2),
        (-90, -2),
        (-126, -4),
    ],
)
def test_an_exact_half_rounds_to_even(energy_j: int, charge: int) -> None:
    assert energy_charge(energy_j, 100_000, 100_000) == charge


def test_an_exact_half_rounds_to_even_at_one_micro_unit_per_kwh() -> None:
    # 1_800_000 J = 0.5 kWh -> 0.5 -> 0; 5_400_000 J = 1.5 kWh -> 1.5 -> 2
    assert energy_charge(1_800_000, 1, 1) == 0
    assert energy_charge(5_400_000, 1, 1) == 2
    assert energy_charge(-1_800_000, 1, 1) == 0
    assert energy_charge(-5_400_000, 1, 1) == -2


def test_the_amount_rounds_once_not_per_term() -> None:
    # FA terms are whole; only the energy charge rounds: 54 J at 100_000 -> 1.5 -> 2
    assert bill_amount(10, 3, 54, 100_000, 100_000) == 10 - 3 + 2
    # a net producer with no FA is owed money: -900_000 J = -0.25 kWh at 80_000 = -20_000
    assert bill_amount(0, 0, -900_000, 250_000, 80_000) == -20_000


prices = st.one_of(st.none(), st.integers(-(10**9), 10**9))
energies = st.integers(-(10**12), 10**12)
amounts = st.integers(0, 10**12)


@given(amounts, amounts, energies, prices, prices)
def test_the_amount_is_always_an_int(
    fa_issued: int,
    fa_deposited: int,
    energy_j: int,
    consumption: int | None,
    production: int | None,
) -> None:
    assert type(bill_amount(fa_issued, fa_deposited, energy_j, consumption, production)) is int


@given(energies, prices, prices)
def test_the_charge_is_within_half_a_micro_unit_of_the_exact_price(
    energy_j: int, consumption: int | None, production: int | None
) -> None:
    price = (consumption if energy_j >= 0 else production) or 0
    exact = Fraction(energy_j * price, JOULES_PER_KWH)
    assert abs(energy_charge(energy_j, consumption, production) - exact) <= Fraction(1, 2)


@given(energies, st.integers(-(10**9), 10**9))
def test_the_charge_is_antisymmetric_when_both_prices_are_equal(energy_j: int, price: int) -> None:
    assert energy_charge(-energy_j, price, price) == -energy_charge(energy_j, price, price)


@given(
    energies,
    energies,
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**9),
    st.integers(0, 10**9),
)
def test_the_amount_never_falls_when_more_is_measured(
    measured_a: int,
    measured_b: int,
    issued_w: int,
    deposited_w: int,
    consumption: int,
    production: int,
) -> None:
    low, high = sorted((measured_a, measured_b))

    def amount(measured_j: int) -> int:
        energy_j = interval_energy_j(measured_j, issued_w, deposited_w, 900)
        return bill_amount(5, 7, energy_j, consumption, production)

    assert amount(low) <= amount(high)


# ---------------------------------------------------------------- wire format


def test_a_signed_bill_round_trips_through_its_canonical_bytes() -> None:
    signed = sign_bill(sample_bill(), METER_KEY)
    raw = encode_bill(signed)
    assert decode_bill(raw) == signed
    assert raw.startswith(b'{"amount":312500,"chain":"000102')


@given(
    measured_j=st.integers(-MAX_INT, MAX_INT),
    interval=st.integers(0, MAX_INT),
    meter=st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
    prices=st.tuples(st.none() | st.integers(0, 10**9), st.none() | st.integers(0, 10**9)),
    issues=st.lists(st.binary(min_size=32, max_size=32), max_size=4, unique=True),
    deposits=st.lists(
        st.builds(Outpoint, st.binary(min_size=32, max_size=32), st.integers(0, 1_000)),
        max_size=4,
        unique=True,
    ),
    signer=st.sampled_from([METER_KEY, OTHER_KEY]),
)
def test_the_id_read_from_a_bills_bytes_is_its_id_and_checks_its_signature_alike(
    measured_j: int,
    interval: int,
    meter: str,
    prices: tuple[int | None, int | None],
    issues: list[bytes],
    deposits: list[Outpoint],
    signer: Keypair,
) -> None:
    """`decode_bill_with_id` reads the id from the parsed bytes, not from the bill rebuilt:
    the same id as `bill_id`, so the same signature check, whoever signed."""
    bill = dataclasses.replace(
        sample_bill(),
        meter=meter,
        interval=interval,
        measured_j=measured_j,
        price_consumption=prices[0],
        price_production=prices[1],
        issues=tuple(sorted(issues)),
        deposits=tuple(sorted(deposits, key=lambda d: (d.txid, d.index))),
    )
    signed = sign_bill(bill, signer)
    decoded, the_id = decode_bill_with_id(encode_bill(signed))
    assert decoded == signed
    assert the_id == bill_id(signed)
    valid = bill_signature_valid(decoded, METER_KEY.public_key)
    assert bill_signature_valid(decoded, METER_KEY.public_key, the_id) is valid
    assert valid is (signer is METER_KEY)


def test_an_unsigned_bill_is_not_encoded() -> None:
    with pytest.raises(ValueError, match="sign the bill"):
        encode_bill(sample_bill())


def test_the_schema_names_exactly_the_fields_of_a_bill() -> None:
    """The OpenAPI schema describes the decoder's format: every field required, no other."""
    fields = sorted(signed_wire())
    assert sorted(BILL["properties"]) == BILL["required"] == fields
    assert BILL["additionalProperties"] is False


def test_a_bill_written_by_another_program_from_the_design_is_accepted() -> None:
    """Built with json, hashlib and libsodium only, from DESIGN.md sections 4 and 7."""
    key = SigningKey(bytes(range(32)))
    body: dict[str, Any] = {
        "v": 1,
        "type": "bill",
        "chain": CHAIN.hex(),
        "meter": METER,
        "interval": 7,
        "closed_height": 12,
        "measured_j": -900_000,
        "issued_epa_w": 0,
        "deposited_epa_w": 0,
        "fa_issued": 0,
        "fa_deposited": 0,
        "price_consumption": 250_000,
        "price_production": None,
        "energy_j": -900_000,
        "amount": 0,
        "issues": [],
        "deposits": [{"tx": "ab" * 32, "index": 3}],
    }
    unsigned = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    bill_hash = hashlib.sha256(unsigned).digest()
    body["signature"] = key.sign(b"PETRA-v1/bill\x00" + bill_hash).signature.hex()
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    bill = decode_bill(raw)

    assert bill_id(bill) == bill_hash
    assert bill.price_production is None
    assert bill.deposits == (Outpoint(bytes.fromhex("ab" * 32), 3),)
    assert bill_signature_valid(bill, bytes(key.verify_key))
    assert encode_bill(bill) == raw


def _set(field: str, value: Any) -> Any:
    return lambda wire: wire.update({field: value})


@pytest.mark.parametrize(
    ("mutate", "code", "names"),
    [
        (lambda w: w.update(memo="hi"), "malformed", "memo"),
        (lambda w: w.pop("signature"), "malformed", "signature"),
        (lambda w: w.pop("closed_height"), "malformed", "closed_height"),
        (_set("v", 2), "malformed", "v must be 1"),
        (_set("v", True), "malformed", "v must be 1"),
        (_set("type", "issue"), "malformed", "type"),
        (_set("chain", "AB" * 32), "malformed", "chain"),
        (_set("chain", "ab" * 31), "malformed", "chain"),
        (_set("chain", "zz" * 32), "malformed", "chain"),
        (_set("meter", "ES 0021"), "malformed", "meter"),
        (_set("meter", "m" * 65), "malformed", "meter"),
        (_set("meter", 5), "malformed", "meter"),
        (_set("interval", -1), "malformed", "interval"),
        (_set("interval", True), "malformed", "interval"),
        (_set("interval", "42"), "malformed", "interval"),
        (_set("closed_height", -1), "malformed", "closed_height"),
        (_set("measured_j", -MAX_INT - 1), "malformed", "measured_j"),
        (_set("measured_j", False), "malformed", "measured_j"),
        (_set("issued_epa_w", -1), "malformed", "issued_epa_w"),
        (_set("deposited_epa_w", -1), "malformed", "deposited_epa_w"),
        (_set("fa_issued", -1), "malformed", "fa_issued"),
        (_set("fa_deposited", MAX_INT + 1), "malformed", "fa_deposited"),
        (_set("price_consumption", "250000"), "malformed", "price_consumption"),
        (_set("price_production", MAX_INT + 1), "malformed", "price_production"),
        (_set("energy_j", None), "malformed", "energy_j"),
        (_set("amount", MAX_INT + 1), "malformed", "amount"),
        (_set("amount", True), "malformed", "amount"),
        (_set("issues", "01" * 32), "malformed", "issues"),
        (_set("issues", ["02" * 32, "01" * 32]), "malformed", "issues"),
        (_set("issues", ["01" * 32, "01" * 32]), "malformed", "issues[1]"),
        (_set("issues", ["01" * 31]), "malformed", "issues[0]"),
        (_set("issues", ["0G" * 32]), "malformed", "issues[0]"),
        (_set("issues", [f"{n:064x}" for n in range(MAX_BILL_ENTRIES + 1)]), "too_large", "issues"),
        (_set("deposits", {}), "malformed", "deposits"),
        (
            _set("deposits", [{"tx": "03" * 32, "index": 1}, {"tx": "03" * 32, "index": 0}]),
            "malformed",
            "deposits",
        ),
        (
            _set("deposits", [{"tx": "04" * 32, "index": 0}, {"tx": "03" * 32, "index": 9}]),
            "malformed",
            "deposits",
        ),
        (_set("deposits", [{"tx": "03" * 32, "index": 0}] * 2), "malformed", "deposits[1]"),
        (_set("deposits", [{"tx": "03" * 32, "index": -1}]), "malformed", "deposits[0].index"),
        (_set("deposits", [{"tx": "03" * 32, "index": True}]), "malformed", "deposits[0].index"),
        (_set("deposits", [{"tx": "3" * 64}]), "malformed", "deposits[0]"),
        (_set("deposits", [{"tx": "03" * 32, "index": 0, "n": 1}]), "malformed", "deposits[0]"),
        (_set("deposits", [{"tx": "03" * 33, "index": 0}]), "malformed", "deposits[0].tx"),
        (
            _set("deposits", [{"tx": "00" * 32, "index": n} for n in range(MAX_BILL_ENTRIES + 1)]),
            "too_large",
            "deposits",
        ),
        (_set("signature", ""), "malformed", "signature"),
        (_set("signature", "ab" * 32), "malformed", "signature"),
        (_set("memo", "x" * MAX_BILL_BYTES), "too_large", "bill is"),
    ],
)
def test_malformed_bills_are_refused_naming_the_field(mutate: Any, code: str, names: str) -> None:
    wire = signed_wire()
    mutate(wire)
    refused = rejection(_encode(wire))
    assert refused.code == code
    assert names in refused.message


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (b"", "JSON"),
        (b"not json", "JSON"),
        (b"\xff\xfe", "JSON"),
        (b"[" * 100_000, "JSON"),
        (b"[]", "object"),
        (b'"bill"', "object"),
    ],
)
def test_what_is_not_a_json_object_is_malformed(raw: bytes, names: str) -> None:
    refused = rejection(raw)
    assert refused.code == "malformed"
    assert names in refused.message


def test_a_float_or_nan_is_malformed() -> None:
    raw = _encode(signed_wire())
    assert b'"interval":42,' in raw
    for spelling in (b"42.0", b"4.2e1", b"NaN", b"Infinity"):
        refused = rejection(raw.replace(b'"interval":42,', b'"interval":' + spelling + b","))
        assert refused.code == "malformed"
        assert spelling.decode() in refused.message


@pytest.mark.parametrize(
    "respell",
    [
        lambda raw: raw.replace(b",", b", "),  # insignificant space
        lambda raw: b" " + raw,
        lambda raw: raw + b"\n",
        lambda raw: raw.replace(b'"interval":42', b'"interval":\\u0034\\u0032'),  # not a number
        lambda raw: raw.replace(b'"meter":"ES', b'"meter":"\\u0045S'),  # escaped letter
        lambda raw: raw.replace(b'"index":0', b'"index":-0'),
        lambda raw: raw.replace(b'{"amount"', b'{"interval":41,"amount"', 1),  # duplicate key
        lambda raw: json.dumps(
            dict(reversed(json.loads(raw).items())), separators=(",", ":")
        ).encode(),  # keys unsorted
    ],
)
def test_non_canonical_spellings_are_malformed(respell: Any) -> None:
    refused = rejection(respell(_encode(signed_wire())))
    assert refused.code == "malformed"


def test_the_canonical_check_is_named() -> None:
    refused = rejection(_encode(signed_wire()).replace(b",", b", "))
    assert "canonical" in refused.message


def test_the_fullest_bill_fits_the_byte_limit() -> None:
    bill = dataclasses.replace(
        sign_bill(sample_bill(), METER_KEY),
        measured_j=-MAX_INT,
        energy_j=-MAX_INT,
        amount=-MAX_INT,
        issues=tuple(bytes([255]) * 28 + n.to_bytes(4) for n in range(MAX_BILL_ENTRIES)),
        deposits=tuple(
            Outpoint(bytes([255]) * 32, n)
            for n in range(MAX_INT + 1 - MAX_BILL_ENTRIES, MAX_INT + 1)
        ),
    )
    raw = encode_bill(bill)
    assert len(raw) <= MAX_BILL_BYTES
    assert decode_bill(raw) == bill


hashes = st.binary(min_size=32, max_size=32)
whole = st.integers(0, MAX_INT)
signed_int = st.integers(-MAX_INT, MAX_INT)
wire_prices = st.one_of(st.none(), signed_int)
bills = st.builds(
    Bill,
    chain=hashes,
    meter=st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True),
    interval=whole,
    closed_height=whole,
    measured_j=signed_int,
    issued_epa_w=whole,
    deposited_epa_w=whole,
    fa_issued=whole,
    fa_deposited=whole,
    price_consumption=wire_prices,
    price_production=wire_prices,
    energy_j=signed_int,
    amount=signed_int,
    issues=st.lists(hashes, max_size=5, unique=True).map(lambda xs: tuple(sorted(xs))),
    deposits=st.lists(st.tuples(hashes, whole), max_size=5, unique=True).map(
        lambda xs: tuple(Outpoint(t, i) for t, i in sorted(xs))
    ),
    signature=st.binary(min_size=64, max_size=64),
)


@given(bills)
def test_every_bill_round_trips(bill: Bill) -> None:
    assert decode_bill(encode_bill(bill)) == bill


# ---------------------------------------------------------------- id and signature


def test_the_id_is_the_hash_of_the_bill_without_its_signature() -> None:
    bill = sample_bill()
    signed = sign_bill(bill, METER_KEY)
    unsigned = _encode(bill_to_wire(bill, signed=False))
    assert b"signature" not in unsigned
    assert bill_id(bill) == bill_id(signed) == hashlib.sha256(unsigned).digest()


def test_a_bill_signed_by_its_meter_verifies() -> None:
    signed = sign_bill(sample_bill(), METER_KEY)
    assert bill_signature_valid(signed, METER_KEY.public_key)
    assert verify(METER_KEY.public_key, b"PETRA-v1/bill\x00" + bill_id(signed), signed.signature)


def test_an_unsigned_bill_does_not_verify() -> None:
    assert not bill_signature_valid(sample_bill(), METER_KEY.public_key)


def test_a_bill_does_not_verify_under_another_key() -> None:
    signed = sign_bill(sample_bill(), METER_KEY)
    assert not bill_signature_valid(signed, OTHER_KEY.public_key)
    assert not bill_signature_valid(sign_bill(sample_bill(), OTHER_KEY), METER_KEY.public_key)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("chain", bytes(32)),
        ("meter", "ES0021000000000002JN0F"),
        ("interval", 43),
        ("closed_height", 101),
        ("measured_j", 1_800_001),
        ("issued_epa_w", 999),
        ("deposited_epa_w", 401),
        ("fa_issued", 0),
        ("fa_deposited", 0),
        ("price_consumption", None),
        ("price_production", 80_001),
        ("energy_j", 0),
        ("amount", 312_499),
        ("issues", ()),
        ("deposits", (Outpoint(b"\x03" * 32, 0),)),
    ],
)
def test_a_bill_changed_after_signing_does_not_verify(field: str, value: Any) -> None:
    signed = sign_bill(sample_bill(), METER_KEY)
    changed = dataclasses.replace(signed, **{field: value})
    assert not bill_signature_valid(changed, METER_KEY.public_key)


@pytest.mark.parametrize("tx_type", ["transfer", "issue", "regulate", "block"])
def test_a_signature_for_another_type_is_refused_both_ways(tx_type: str) -> None:
    bill = sample_bill()
    # the meter's key signing the same 32 bytes as if they were an issue's txid
    forged = dataclasses.replace(
        bill, signature=METER_KEY.sign(signing_message(tx_type, bill_id(bill)))
    )
    assert not bill_signature_valid(forged, METER_KEY.public_key)
    signed = sign_bill(bill, METER_KEY)
    assert not verify(
        METER_KEY.public_key, signing_message(tx_type, bill_id(bill)), signed.signature
    )


def test_a_signature_over_the_bare_id_is_refused() -> None:
    bill = sample_bill()
    bare = dataclasses.replace(bill, signature=METER_KEY.sign(bill_id(bill)))
    assert not bill_signature_valid(bare, METER_KEY.public_key)
