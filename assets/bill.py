"""The interval bill of DESIGN.md section 7: its formula, wire format, id and signature.

A wire object like a transaction: the meter closes and signs it, the DSO decodes, checks and
reconciles it, so it lives here, below both. Pure: no I/O.

Per interval t the meter bills its owner

    E_t = M_t - D_EPA(t) * interval_s + W_EPA(t) * interval_s                (joules)
    B_t = FA issued during t - FA deposited during t + energy charge          (micro-units)

where the energy charge is E_t priced per kWh at the consumption price when E_t >= 0 and at
the production price when E_t < 0 (so a net producer is credited: DESIGN corrects the paper's
sign slip), rounded once, half to even, to a whole micro-unit. Money is never a float.

On the wire a bill is canonical JSON like a transaction (section 4), `"type": "bill"`; its id is
the SHA-256 of that JSON without `signature`, and the meter signs `b"PETRA-v1/bill\\x00" + id`,
a message no transaction signature can ever be. Decoding is as strict as for transactions.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from assets.canonical import canonical_json, encode_parsed, parse_json
from assets.codec import (
    MAX_INT,
    WIRE_VERSION,
    field_hex,
    field_int,
    field_list,
    field_meter,
    field_outpoint,
    field_price,
)
from assets.model import Asset, Epa, Fa, Outpoint, Output
from assets.rejections import Rejected
from assets.signing import Keypair, signing_message, verify

BILL_TYPE = "bill"
JOULES_PER_KWH = 3_600_000
MAX_BILL_BYTES = 1024 * 1024
MAX_BILL_ENTRIES = 4096  # per list (issues, deposits); both lists full still fit the byte limit

MALFORMED = "malformed"
TOO_LARGE = "too_large"

_KEYS = frozenset(
    {
        "v",
        "type",
        "chain",
        "meter",
        "interval",
        "closed_height",
        "measured_j",
        "issued_epa_w",
        "deposited_epa_w",
        "fa_issued",
        "fa_deposited",
        "price_consumption",
        "price_production",
        "energy_j",
        "amount",
        "issues",
        "deposits",
        "signature",
    }
)


class BillRejected(Exception):
    """A bill that is not its own canonical encoding; `code` is `malformed` or `too_large`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Bill:
    """What a meter's owner owes the DSO for one interval, and the ledger facts it counted.

    Energies in joules, powers in watts, money in micro-units, prices in micro-units per kWh
    (None: no price in force, billed as 0). `issues` are sorted unique txids; `deposits` are
    outpoints sorted by (txid, index), unique.
    """

    chain: bytes
    meter: str
    interval: int
    closed_height: int
    measured_j: int
    issued_epa_w: int
    deposited_epa_w: int
    fa_issued: int
    fa_deposited: int
    price_consumption: int | None
    price_production: int | None
    energy_j: int
    amount: int
    issues: tuple[bytes, ...]
    deposits: tuple[Outpoint, ...]
    signature: bytes = b""


# ---------------------------------------------------------------- the formula


def interval_energy_j(
    measured_j: int, issued_epa_w: int, deposited_epa_w: int, interval_s: int
) -> int:
    """E_t in joules: measured joules, less deposited EPA watts and plus issued EPA watts, each
    held for `interval_s` seconds."""
    return measured_j - deposited_epa_w * interval_s + issued_epa_w * interval_s


def energy_charge(
    energy_j: int, price_consumption: int | None, price_production: int | None
) -> int:
    """Micro-units for `energy_j` joules at prices in micro-units per kWh (None counts as 0).

    Consumption (E >= 0) is priced at `price_consumption`, production (E < 0) at
    `price_production`, giving a negative charge (a credit). Rounded once, half to even.
    """
    price = price_consumption if energy_j >= 0 else price_production
    # Fraction's round() is exact and rounds half to even, as DESIGN.md section 3 asks
    return round(Fraction(energy_j * (price or 0), JOULES_PER_KWH))


def bill_amount(
    fa_issued: int,
    fa_deposited: int,
    energy_j: int,
    price_consumption: int | None,
    price_production: int | None,
) -> int:
    """B_t in micro-units (negative: a credit): FA issued minus FA deposited, both micro-units,
    plus the energy charge of `energy_j` joules at prices in micro-units per kWh."""
    return fa_issued - fa_deposited + energy_charge(energy_j, price_consumption, price_production)


def close_bill(
    *,
    chain: bytes,
    meter: str,
    interval: int,
    closed_height: int,
    interval_s: int,
    measured_j: int,
    issued_epa_w: int,
    deposited_epa_w: int,
    fa_issued: int,
    fa_deposited: int,
    price_consumption: int | None,
    price_production: int | None,
    issues: Iterable[bytes],
    deposits: Iterable[Outpoint],
) -> Bill:
    """The unsigned bill for `interval`, with E_t and B_t computed from the other figures.

    Units as in `Bill`; `interval_s` is the chain's interval length in seconds. `issues` and
    `deposits` are sorted here; naming one twice is a ValueError (it would be counted twice).
    """
    issue_list = sorted(issues)
    deposit_list = sorted(deposits, key=_outpoint_order)
    if len(set(issue_list)) != len(issue_list):
        raise ValueError("an issue txid is named twice")
    if len(set(deposit_list)) != len(deposit_list):
        raise ValueError("a deposit outpoint is named twice")
    energy_j = interval_energy_j(measured_j, issued_epa_w, deposited_epa_w, interval_s)
    return Bill(
        chain=chain,
        meter=meter,
        interval=interval,
        closed_height=closed_height,
        measured_j=measured_j,
        issued_epa_w=issued_epa_w,
        deposited_epa_w=deposited_epa_w,
        fa_issued=fa_issued,
        fa_deposited=fa_deposited,
        price_consumption=price_consumption,
        price_production=price_production,
        energy_j=energy_j,
        amount=bill_amount(fa_issued, fa_deposited, energy_j, price_consumption, price_production),
        issues=tuple(issue_list),
        deposits=tuple(deposit_list),
    )


def _outpoint_order(outpoint: Outpoint) -> tuple[bytes, int]:
    return (outpoint.txid, outpoint.index)


# ---------------------------------------------------------------- id and signature


def bill_id(bill: Bill) -> bytes:
    """SHA-256 of the bill's canonical JSON without `signature` (32 raw bytes)."""
    return hashlib.sha256(canonical_json(bill_to_wire(bill, signed=False))).digest()


def sign_bill(bill: Bill, key: Keypair) -> Bill:
    """`bill` signed by the meter's registered key."""
    return dataclasses.replace(bill, signature=key.sign(signing_message(BILL_TYPE, bill_id(bill))))


def bill_signature_valid(bill: Bill, public_key: bytes, the_id: bytes | None = None) -> bool:
    """True iff `bill.signature` is the meter's signature of this very bill under `public_key`;
    `the_id`, when the caller has it (`decode_bill_with_id`), is taken as the bill's id."""
    signed = bill_id(bill) if the_id is None else the_id
    return verify(public_key, signing_message(BILL_TYPE, signed), bill.signature)


# ---------------------------------------------------------------- wire format


def bill_to_wire(bill: Bill, *, signed: bool = True) -> dict[str, Any]:
    """The JSON object of `bill`; without `signature` when `signed` is False."""
    wire: dict[str, Any] = {
        "v": WIRE_VERSION,
        "type": BILL_TYPE,
        "chain": bill.chain.hex(),
        "meter": bill.meter,
        "interval": bill.interval,
        "closed_height": bill.closed_height,
        "measured_j": bill.measured_j,
        "issued_epa_w": bill.issued_epa_w,
        "deposited_epa_w": bill.deposited_epa_w,
        "fa_issued": bill.fa_issued,
        "fa_deposited": bill.fa_deposited,
        "price_consumption": bill.price_consumption,
        "price_production": bill.price_production,
        "energy_j": bill.energy_j,
        "amount": bill.amount,
        "issues": [txid.hex() for txid in bill.issues],
        "deposits": [{"tx": d.txid.hex(), "index": d.index} for d in bill.deposits],
    }
    if signed:
        wire["signature"] = bill.signature.hex()
    return wire


def encode_bill(bill: Bill) -> bytes:
    """Canonical bytes of a signed bill, as posted to the DSO; ValueError if it is unsigned."""
    if len(bill.signature) != 64:
        raise ValueError("sign the bill before encoding it: the DSO refuses unsigned bills")
    return canonical_json(bill_to_wire(bill))


def decode_bill(raw: bytes) -> Bill:
    """The bill in `raw`, which must be exactly its canonical encoding.

    Raises BillRejected(`too_large` | `malformed`) with a message naming the offending field.
    """
    return _decoded(raw)[0]


def decode_bill_with_id(raw: bytes) -> tuple[Bill, bytes]:
    """`decode_bill`, and the bill's id (`bill_id`) from `raw`'s own parsed form: `raw` is the
    canonical encoding, so without its signature it is the unsigned one, no rebuilding it."""
    bill, wire = _decoded(raw)
    unsigned = {key: value for key, value in wire.items() if key != "signature"}
    return bill, hashlib.sha256(encode_parsed(unsigned)).digest()


def _decoded(raw: bytes) -> tuple[Bill, dict[str, Any]]:
    if len(raw) > MAX_BILL_BYTES:
        raise BillRejected(TOO_LARGE, f"bill is {len(raw)} bytes, the limit is {MAX_BILL_BYTES}")
    try:
        wire = parse_json(raw)
        bill = _bill_from_wire(wire)
    except Rejected as rejected:
        raise BillRejected(rejected.code.value, rejected.message) from None
    if encode_parsed(wire) != raw:
        raise BillRejected(
            MALFORMED, "bill is not canonical JSON (keys sorted, no spaces, lowercase hex)"
        )
    return bill, wire


def _bill_from_wire(wire: Any) -> Bill:
    """A bill from its parsed JSON object; the assets.codec field checks raise Rejected."""
    if not isinstance(wire, dict):
        raise BillRejected(MALFORMED, "a bill is a JSON object")
    if "type" in wire and wire["type"] != BILL_TYPE:
        raise BillRejected(MALFORMED, f'type must be "{BILL_TYPE}", got {wire["type"]!r}')
    if wire.keys() != _KEYS:
        missing = sorted(_KEYS - wire.keys())
        extra = sorted(wire.keys() - _KEYS)
        raise BillRejected(MALFORMED, f"bill: missing fields {missing}, unknown {extra}")
    if wire["v"] != WIRE_VERSION or type(wire["v"]) is not int:
        raise BillRejected(MALFORMED, f"v must be {WIRE_VERSION}, got {wire['v']!r}")
    issues = field_list(wire["issues"], "issues", 0, MAX_BILL_ENTRIES)
    deposits = field_list(wire["deposits"], "deposits", 0, MAX_BILL_ENTRIES)
    bill = Bill(
        chain=field_hex(wire["chain"], 32, "chain"),
        meter=field_meter(wire["meter"], "meter"),
        interval=field_int(wire["interval"], "interval", 0),
        closed_height=field_int(wire["closed_height"], "closed_height", 0),
        measured_j=field_int(wire["measured_j"], "measured_j", -MAX_INT),
        issued_epa_w=field_int(wire["issued_epa_w"], "issued_epa_w", 0),
        deposited_epa_w=field_int(wire["deposited_epa_w"], "deposited_epa_w", 0),
        fa_issued=field_int(wire["fa_issued"], "fa_issued", 0),
        fa_deposited=field_int(wire["fa_deposited"], "fa_deposited", 0),
        price_consumption=field_price(wire["price_consumption"], "price_consumption"),
        price_production=field_price(wire["price_production"], "price_production"),
        energy_j=field_int(wire["energy_j"], "energy_j", -MAX_INT),
        amount=field_int(wire["amount"], "amount", -MAX_INT),
        issues=tuple(field_hex(t, 32, f"issues[{n}]") for n, t in enumerate(issues)),
        deposits=tuple(field_outpoint(d, f"deposits[{n}]") for n, d in enumerate(deposits)),
        signature=field_hex(wire["signature"], 64, "signature"),
    )
    _strictly_increasing([*bill.issues], "issues", "txid")
    _strictly_increasing([_outpoint_order(d) for d in bill.deposits], "deposits", "(tx, index)")
    return bill


def _strictly_increasing(keys: list[Any], where: str, order: str) -> None:
    """One bill lists each fact once and in one order, so it has one encoding and one id."""
    for n in range(1, len(keys)):
        if keys[n] == keys[n - 1]:
            raise BillRejected(MALFORMED, f"{where}[{n}] repeats {where}[{n - 1}]")
        if keys[n] < keys[n - 1]:
            raise BillRejected(
                MALFORMED, f"{where} must be sorted by {order}: {where}[{n}] sorts before [{n - 1}]"
            )


# ---------------------------------------------------------------- what counts in a bill


@dataclass(frozen=True, slots=True)
class IssuedFact:
    """An issue transaction by the bill's meter on the ledger: its block's height and the
    interval its block's time falls in."""

    txid: bytes
    height: int
    interval: int
    outputs: tuple[Output, ...]


@dataclass(frozen=True, slots=True)
class DepositFact:
    """An output a bill lists as a deposit, as the ledger has it: the height and the interval
    of the block holding the transaction that created it."""

    outpoint: Outpoint
    asset: Asset
    height: int
    interval: int


def epa_covers(asset: Asset, interval: int) -> bool:
    return isinstance(asset, Epa) and asset.start <= interval <= asset.end


def epa_power(asset: Asset, interval: int) -> int:
    """Watts `asset` counts for in `interval`: an EPA's power where it covers, else none."""
    if isinstance(asset, Epa) and epa_covers(asset, interval):
        return asset.power
    return 0


def issue_counts(fact: IssuedFact, interval: int) -> bool:
    """An issue counts in `interval` if it holds EPA covering it or FA issued during it."""
    return any(
        epa_covers(o.asset, interval) or (isinstance(o.asset, Fa) and fact.interval == interval)
        for o in fact.outputs
    )


def deposit_counts(fact: DepositFact, interval: int) -> bool:
    """ECA is never billed; EPA counts where it covers, FA in the interval it was deposited."""
    if isinstance(fact.asset, Fa):
        return fact.interval == interval
    return epa_covers(fact.asset, interval)


def bill_of_interval(
    *,
    chain: bytes,
    meter: str,
    interval: int,
    interval_s: int,
    closed_height: int,
    measured_j: int,
    issues: Iterable[IssuedFact],
    deposits: Iterable[DepositFact],
    price_consumption: int | None,
    price_production: int | None,
) -> Bill:
    """The meter's bill of `interval` (unsigned), from its measurement and what the ledger holds
    up to `closed_height`: every issue of this meter and every deposit to its addresses; each
    counts by the same rules the DSO checks it with (`issue_counts`, `deposit_counts`)."""
    counted = [f for f in issues if f.height <= closed_height and issue_counts(f, interval)]
    deposited = [d for d in deposits if d.height <= closed_height and deposit_counts(d, interval)]
    return close_bill(
        chain=chain,
        meter=meter,
        interval=interval,
        closed_height=closed_height,
        interval_s=interval_s,
        measured_j=measured_j,
        issued_epa_w=sum(epa_power(o.asset, interval) for f in counted for o in f.outputs),
        deposited_epa_w=sum(epa_power(d.asset, interval) for d in deposited),
        fa_issued=sum(
            o.asset.amount
            for f in counted
            if f.interval == interval
            for o in f.outputs
            if isinstance(o.asset, Fa)
        ),
        fa_deposited=sum(d.asset.amount for d in deposited if isinstance(d.asset, Fa)),
        price_consumption=price_consumption,
        price_production=price_production,
        issues=[f.txid for f in counted],
        deposits=[d.outpoint for d in deposited],
    )
