"""Asks and bids of the bid store (DESIGN.md section 9): wire format, signature, checks.

An order offers or asks for power in ONE interval t:

- an ask spends exactly one EPA outpoint whose asset is Epa(power, t, t); assets spanning
  several intervals are refused (a wallet splits them first, so the book compares like with
  like);
- a bid spends exactly one ECA outpoint Eca(power, t, t) and 1..8 FA outpoints whose amounts
  sum to at least `payment(power, interval_s, price)`, the whole power bought at its own price.

Both carry `price` (micro-units per kWh, 1..10**9), `contact` ("relay" or a v3 onion address),
`receive` (the 32-byte address the counterparty pays: FA and ECA for an ask, EPA for a bid),
`owner` (the one address owning every asset of the order), `challenge` (32 bytes the store
issued, usable once) and `signature`: Ed25519 by `owner` over
`signing_message("bidstore-order", sha256(canonical JSON of the wire without "signature"))`.

Wire: the canonical JSON object {"v": 1, "side": "ask"|"bid", "interval", "price",
"assets": [{"tx", "index"}], "contact", "receive", "owner", "challenge", "signature"}, bytes as
lowercase hex. An order's id is the SHA-256 of its canonical encoding, signature included.

Checking is staged like the ledger's: `decode_order` needs the bytes alone (shape, signature);
`check_order` asks the ledger (through `lookup`) and the store's challenges. Every refusal
carries one stable code. Pure: no I/O; the clock and randomness of `Challenges` are injected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import re
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from assets.canonical import canonical_json, encode_parsed, parse_json
from assets.codec import MAX_INT, WIRE_VERSION, field_hex, field_int, field_list, field_outpoint
from assets.model import Eca, Epa, Fa, Outpoint, Output
from assets.rejections import Rejected
from assets.signing import Keypair, signing_message, verify

ORDER_TYPE = "bidstore-order"  # the signing domain: no transaction signature is ever one
JOULES_PER_KWH = 3_600_000
MIN_PRICE = 1
MAX_PRICE = 10**9  # micro-units per kWh: 1000 units of currency per kWh
MAX_FA_INPUTS = 8
MAX_ORDER_BYTES = 4096  # a bid with 9 outpoints is about 1.5 KiB
RELAY = "relay"
ONION = re.compile(r"[a-z2-7]{56}\.onion")  # a v3 onion address: 35 bytes in base32

_KEYS = frozenset(
    {
        "v",
        "side",
        "interval",
        "price",
        "assets",
        "contact",
        "receive",
        "owner",
        "challenge",
        "signature",
    }
)


class OrderSide(StrEnum):
    ASK = "ask"  # sells EPA
    BID = "bid"  # buys EPA, paying with ECA + FA


class OrderRefused(Exception):
    """The store refused an order or a proposal; `code` is stable, `message` one sentence.

    Codes: `malformed`, `bad_signature`, `unknown_asset`, `not_owner`, `spent`, `wrong_asset`,
    `underfunded`, `interval_passed`, `bad_challenge` (orders); `unknown_order`, `bad_power`,
    `terms_mismatch` (the book and trade proposals).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Order:
    """An ask or a bid for `interval`; `price` in micro-units per kWh; addresses 32 bytes."""

    side: OrderSide
    interval: int
    price: int
    assets: tuple[Outpoint, ...]
    contact: str
    receive: bytes
    owner: bytes
    challenge: bytes
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class Listing:
    """An order that passed `check_order`, with what the ledger said its assets are.

    `power_w` is the EPA power of an ask or the ECA power of a bid (watts, in `order.interval`);
    `funds` the FA total of a bid in micro-units (0 for an ask); `inputs` the outputs behind
    `order.assets`, in the same order.
    """

    order: Order
    order_id: bytes
    power_w: int
    funds: int
    inputs: tuple[Output, ...]


@dataclass(frozen=True, slots=True)
class Decoded:
    """An order `decode_order` took off the wire, with its id: the SHA-256 of the bytes it came
    in, which are its canonical encoding, so no encoding it again to hash it."""

    order: Order
    order_id: bytes


Lookup = Callable[[Outpoint], tuple[Output, bool] | None]
"""The ledger's word on an outpoint: its output and whether it is spent, or None if unknown."""


# ---------------------------------------------------------------- money


def payment(power_w: int, interval_s: int, price: int) -> int:
    """Micro-units for `power_w` watts held `interval_s` seconds at `price` micro-units per kWh.

    The energy is power_w * interval_s joules; the amount is rounded once, half to even.
    """
    quotient, remainder = divmod(power_w * interval_s * price, JOULES_PER_KWH)
    twice = 2 * remainder
    if twice > JOULES_PER_KWH or (twice == JOULES_PER_KWH and quotient % 2 == 1):
        quotient += 1
    return quotient


# ---------------------------------------------------------------- wire


def order_to_wire(order: Order, *, signed: bool = True) -> dict[str, Any]:
    """The JSON object of `order`; without `signature` when `signed` is False."""
    wire: dict[str, Any] = {
        "v": WIRE_VERSION,
        "side": str(order.side),
        "interval": order.interval,
        "price": order.price,
        "assets": [{"tx": a.txid.hex(), "index": a.index} for a in order.assets],
        "contact": order.contact,
        "receive": order.receive.hex(),
        "owner": order.owner.hex(),
        "challenge": order.challenge.hex(),
    }
    if signed:
        wire["signature"] = order.signature.hex()
    return wire


def encode_order(order: Order) -> bytes:
    """The canonical JSON bytes of the signed order."""
    return canonical_json(order_to_wire(order))


def order_id(order: Order) -> bytes:
    """SHA-256 of the order's canonical encoding, signature included (32 raw bytes)."""
    return hashlib.sha256(encode_order(order)).digest()


def order_message(order: Order) -> bytes:
    """The bytes `owner` signs: the domain and the SHA-256 of the unsigned wire."""
    return _signed_bytes(canonical_json(order_to_wire(order, signed=False)))


def _signed_bytes(unsigned: bytes) -> bytes:
    """The bytes an owner signs for the canonical unsigned wire `unsigned`."""
    return signing_message(ORDER_TYPE, hashlib.sha256(unsigned).digest())


def sign_order(order: Order, key: Keypair) -> Order:
    """`order` signed by `key`, which must be the key of `order.owner` to verify."""
    return dataclasses.replace(order, signature=key.sign(order_message(order)))


def decode_order(raw: bytes) -> Order:
    """The order in `raw`, its canonical encoding with a valid owner's signature (so its id
    is the SHA-256 of `raw`).

    Raises OrderRefused(`malformed` | `bad_signature`).
    """
    if len(raw) > MAX_ORDER_BYTES:
        raise OrderRefused(
            "malformed", f"order is {len(raw)} bytes, the limit is {MAX_ORDER_BYTES}"
        )
    try:
        wire = parse_json(raw)
        order = _order_from_wire(wire)
    except Rejected as rejected:
        raise OrderRefused("malformed", rejected.message) from None
    if encode_parsed(wire) != raw:
        raise OrderRefused(
            "malformed", "not canonical JSON (keys sorted, no spaces, lowercase hex)"
        )
    # the parsed wire is the order's own (its encoding is `raw`): no rebuilding it to sign
    unsigned = encode_parsed({key: value for key, value in wire.items() if key != "signature"})
    if not verify(order.owner, _signed_bytes(unsigned), order.signature):
        raise OrderRefused("bad_signature", "the signature does not verify under owner")
    return order


def _order_from_wire(wire: Any) -> Order:
    if not isinstance(wire, dict) or wire.keys() != _KEYS:
        raise OrderRefused("malformed", f"an order is an object with exactly {sorted(_KEYS)}")
    if type(wire["v"]) is not int or wire["v"] != WIRE_VERSION:
        raise OrderRefused("malformed", f"v must be {WIRE_VERSION}")
    if wire["side"] not in (OrderSide.ASK, OrderSide.BID):
        raise OrderRefused("malformed", "side must be ask or bid")
    side = OrderSide(wire["side"])
    most = 1 if side is OrderSide.ASK else 1 + MAX_FA_INPUTS
    least = 1 if side is OrderSide.ASK else 2
    items = field_list(wire["assets"], "assets", least, most)
    assets = tuple(field_outpoint(a, f"assets[{n}]") for n, a in enumerate(items))
    if len(set(assets)) != len(assets):
        # counted twice, one FA outpoint would fund a bid twice over
        raise OrderRefused("malformed", "assets names an outpoint twice")
    contact = wire["contact"]
    if not isinstance(contact, str) or not (contact == RELAY or ONION.fullmatch(contact)):
        raise OrderRefused("malformed", 'contact must be "relay" or a v3 onion address')
    return Order(
        side=side,
        interval=field_int(wire["interval"], "interval", 0, MAX_INT),
        price=field_int(wire["price"], "price", MIN_PRICE, MAX_PRICE),
        assets=assets,
        contact=contact,
        receive=field_hex(wire["receive"], 32, "receive"),
        owner=field_hex(wire["owner"], 32, "owner"),
        challenge=field_hex(wire["challenge"], 32, "challenge"),
        signature=field_hex(wire["signature"], 64, "signature"),
    )


# ---------------------------------------------------------------- against the ledger


def check_order(
    order: Order,
    lookup: Lookup,
    *,
    interval_s: int,
    now_interval: int,
    challenge_ok: Callable[[bytes], bool],
    known_id: bytes | None = None,
) -> Listing:
    """Check a decoded order against the ledger and the store's challenges; its listing.
    `known_id`: the order's id if known (`Decoded`), else it is computed.

    The challenge is redeemed before any ledger lookup, so a replayed order costs the ledger
    nothing. Raises OrderRefused(`interval_passed` | `bad_challenge` | `unknown_asset` |
    `not_owner` | `spent` | `wrong_asset` | `underfunded`).
    """
    if order.interval <= now_interval:
        raise OrderRefused(
            "interval_passed", f"interval {order.interval} is not after {now_interval}"
        )
    if not challenge_ok(order.challenge):
        raise OrderRefused("bad_challenge", "the challenge is unknown, expired or used")
    inputs: list[Output] = []
    for outpoint in order.assets:
        where = f"{outpoint.txid.hex()}:{outpoint.index}"
        found = lookup(outpoint)
        if found is None:
            raise OrderRefused("unknown_asset", f"{where} is not on the ledger")
        output, spent = found
        if output.address != order.owner:
            raise OrderRefused("not_owner", f"{where} is not owned by the order's owner")
        if spent:
            raise OrderRefused("spent", f"{where} is already spent")
        inputs.append(output)
    identity = order_id(order) if known_id is None else known_id
    if order.side is OrderSide.ASK:
        return _ask_listing(order, identity, tuple(inputs))
    return _bid_listing(order, identity, tuple(inputs), interval_s)


def _single_interval(asset: Epa | Eca, interval: int) -> bool:
    return asset.start == interval and asset.end == interval


def _ask_listing(order: Order, identity: bytes, inputs: tuple[Output, ...]) -> Listing:
    (epa,) = (o.asset for o in inputs)  # decoding allows one outpoint for an ask
    if not isinstance(epa, Epa) or not _single_interval(epa, order.interval):
        raise OrderRefused(
            "wrong_asset", f"an ask spends one EPA for interval {order.interval} alone"
        )
    return Listing(order, identity, epa.power, 0, inputs)


def _bid_listing(
    order: Order, identity: bytes, inputs: tuple[Output, ...], interval_s: int
) -> Listing:
    ecas = [o.asset for o in inputs if isinstance(o.asset, Eca)]
    fas = [o.asset for o in inputs if isinstance(o.asset, Fa)]
    if (
        len(ecas) != 1
        or not _single_interval(ecas[0], order.interval)
        or not 1 <= len(fas) <= MAX_FA_INPUTS
        or len(ecas) + len(fas) != len(inputs)
    ):
        raise OrderRefused(
            "wrong_asset",
            f"a bid spends one ECA for interval {order.interval} alone and 1-{MAX_FA_INPUTS} FA",
        )
    power = ecas[0].power
    funds = sum(fa.amount for fa in fas)
    owed = payment(power, interval_s, order.price)
    if funds < owed:
        raise OrderRefused(
            "underfunded", f"FA of {funds} micro-units is below the {owed} that {power} W owes"
        )
    return Listing(order, identity, power, funds, inputs)


# ---------------------------------------------------------------- challenges

NONCE_BYTES = 8
MAC_BYTES = 16  # HMAC-SHA256 cut to 128 bits: forging one takes 2**128 tries


class ChallengesFull(Exception):
    """`capacity` redeemed challenges are kept and none has expired: refuse, never forget one
    (a forgotten one could be redeemed twice). `wait_s`: seconds until one expires."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"the redeemed challenges are full for {wait_s:.1f} s")
        self.wait_s = wait_s


class Challenges:
    """Challenges of 32 bytes, each valid `ttl_s` seconds and redeemable once, kept nowhere
    until redeemed: a random nonce (8 bytes), its expiry (8, a big-endian double of clock
    seconds) and an HMAC-SHA256 of both under a secret of this process (16 bytes).

    Issuing costs no memory, so no number of challenges issued pushes out another's. Redeeming
    checks the MAC and the expiry and records the challenge until it expires; at most
    `capacity` are recorded (past it `ChallengesFull`). `clock` returns seconds (any epoch);
    `random_bytes(n)` returns n random bytes, the secret drawn from it at construction.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        ttl_s: float = 300.0,
        capacity: int = 1_000_000,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"a challenge store records at least 1, not {capacity}")
        self._clock = clock
        self._ttl_s = ttl_s
        self._capacity = capacity
        self._random_bytes = random_bytes
        self._secret = random_bytes(32)
        # redeemed challenges by the whole second their expiry rounds up to, so a second's
        # set is dropped whole once the clock passes it
        self._redeemed: dict[int, set[bytes]] = {}
        self._count = 0

    def __len__(self) -> int:
        """Redeemed challenges still recorded."""
        return self._count

    def issue(self) -> bytes:
        """A fresh challenge, valid until `ttl_s` seconds from now."""
        stamped = self._random_bytes(NONCE_BYTES) + struct.pack(">d", self._clock() + self._ttl_s)
        return stamped + self._mac(stamped)

    def redeem(self, challenge: bytes) -> bool:
        """True iff this process issued `challenge`, it has not expired and was not redeemed
        before; raises ChallengesFull if it would be one more than `capacity` recorded."""
        now = self._clock()
        stamped, mac = challenge[:-MAC_BYTES], challenge[-MAC_BYTES:]
        if len(challenge) != NONCE_BYTES + 8 + MAC_BYTES or not hmac.compare_digest(
            mac, self._mac(stamped)
        ):
            return False
        (expiry,) = struct.unpack(">d", stamped[NONCE_BYTES:])
        if not now < expiry:
            return False
        self._forget_expired(now)
        second = math.ceil(expiry)
        redeemed = self._redeemed.setdefault(second, set())
        if challenge in redeemed:
            return False
        if self._count >= self._capacity:
            if not redeemed:
                del self._redeemed[second]
            raise ChallengesFull(max(0.0, min(self._redeemed) - now))
        redeemed.add(challenge)
        self._count += 1
        return True

    def _mac(self, stamped: bytes) -> bytes:
        return hmac.new(self._secret, stamped, hashlib.sha256).digest()[:MAC_BYTES]

    def _forget_expired(self, now: float) -> None:
        for second in [s for s in self._redeemed if s <= now]:
            self._count -= len(self._redeemed.pop(second))
