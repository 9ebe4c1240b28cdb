"""The wire format of DESIGN.md section 4: strict decoding, canonical encoding, transaction ids.

Decoding accepts exactly the fields the design names, each of its type and in its range, and
only the canonical encoding of them: anything else is `malformed` (or `too_large`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

from assets.canonical import canonical_json, encode_parsed, parse_json
from assets.model import (
    Asset,
    AssetKind,
    Authorization,
    Eca,
    Epa,
    Fa,
    Genesis,
    Issue,
    Outpoint,
    Output,
    Regulate,
    Signature,
    Transaction,
    Transfer,
)
from assets.rejections import Code, Rejected

WIRE_VERSION = 1
MAX_INT = 2**53 - 1  # every integer stays exact in any JSON reader
MAX_TX_BYTES = 256 * 1024  # a 256-peer CoinShuffle transfer fits
MAX_INPUTS = 512
MAX_OUTPUTS = 512
MAX_SIGNATURES = 512
MAX_REGULATED_METERS = 1024  # per list (authorize, ban) in one regulate
_MAX_PARSE_FOR_ID = 16 * 1024 * 1024  # an oversized body is still named by its id up to here

METER_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_KEYS = {
    "transfer": frozenset({"v", "chain", "type", "inputs", "outputs", "signatures"}),
    "issue": frozenset({"v", "chain", "type", "meter", "nonce", "outputs", "signature"}),
    "regulate": frozenset(
        {
            "v",
            "chain",
            "type",
            "time",
            "authorize",
            "ban",
            "price_consumption",
            "price_production",
            "nonce",
            "signature",
        }
    ),
}
_SIGNATURE_FIELD = {"transfer": "signatures", "issue": "signature", "regulate": "signature"}


@dataclass(frozen=True, slots=True)
class Decoded:
    """A transaction that passed the wire checks, with its id and its exact bytes (the leaf)."""

    tx: Transaction
    txid: bytes
    raw: bytes


# ---------------------------------------------------------------- encoding


def asset_to_wire(asset: Asset) -> dict[str, Any]:
    if isinstance(asset, Fa):
        return {"kind": "FA", "amount": asset.amount}
    return {"kind": str(asset.kind), "power": asset.power, "start": asset.start, "end": asset.end}


def output_to_wire(output: Output) -> dict[str, Any]:
    return {"asset": asset_to_wire(output.asset), "address": output.address.hex()}


def tx_to_wire(tx: Transaction, *, signed: bool = True) -> dict[str, Any]:
    """The JSON object of `tx`; without its signature field when `signed` is False."""
    wire: dict[str, Any] = {"v": WIRE_VERSION, "chain": tx.chain.hex(), "type": tx.type}
    if isinstance(tx, Transfer):
        wire["inputs"] = [{"tx": i.txid.hex(), "index": i.index} for i in tx.inputs]
        wire["outputs"] = [output_to_wire(o) for o in tx.outputs]
        if signed:
            wire["signatures"] = [
                {"public_key": s.public_key.hex(), "signature": s.signature.hex()}
                for s in tx.signatures
            ]
    elif isinstance(tx, Issue):
        wire["meter"] = tx.meter
        wire["nonce"] = tx.nonce
        wire["outputs"] = [output_to_wire(o) for o in tx.outputs]
        if signed:
            wire["signature"] = tx.signature.hex()
    else:
        wire["time"] = tx.time
        wire["authorize"] = [
            {
                "meter": a.meter,
                "public_key": a.public_key.hex(),
                "max_epa": a.max_epa,
                "max_eca": a.max_eca,
            }
            for a in tx.authorize
        ]
        wire["ban"] = list(tx.ban)
        wire["price_consumption"] = tx.price_consumption
        wire["price_production"] = tx.price_production
        wire["nonce"] = tx.nonce
        if signed:
            wire["signature"] = tx.signature.hex()
    return wire


def encode_transaction(tx: Transaction) -> bytes:
    """Canonical bytes of the signed transaction: what is submitted and what the log stores."""
    return canonical_json(tx_to_wire(tx))


def txid(tx: Transaction) -> bytes:
    """SHA-256 of the canonical JSON of `tx` without its signature fields (32 raw bytes)."""
    return hashlib.sha256(canonical_json(tx_to_wire(tx, signed=False))).digest()


def genesis_to_wire(genesis: Genesis) -> dict[str, Any]:
    return {
        "v": WIRE_VERSION,
        "name": genesis.name,
        "interval_s": genesis.interval_s,
        "epoch": genesis.epoch,
        "currency": genesis.currency,
        "dso_keys": [k.hex() for k in genesis.dso_keys],
        "sequencer_keys": [k.hex() for k in genesis.sequencer_keys],
    }


def chain_id(genesis: Genesis) -> bytes:
    """The genesis id: SHA-256 of its canonical JSON, the `chain` of every transaction."""
    return hashlib.sha256(canonical_json(genesis_to_wire(genesis))).digest()


# ---------------------------------------------------------------- decoding
# The `field_*` decoders check one field of a wire object; other wire objects (orders, bills)
# build on them, so every PETra object refuses the same things the same way.


def decode_transaction(raw: bytes) -> Decoded:
    """Check `raw` against the wire format and return the transaction with its id.

    Raises Rejected(`too_large` | `malformed`), naming the txid whenever one can be computed.
    """
    if len(raw) > MAX_TX_BYTES:
        raise Rejected(
            Code.TOO_LARGE,
            f"transaction is {len(raw)} bytes, the limit is {MAX_TX_BYTES}",
            _txid_if_computable(raw) if len(raw) <= _MAX_PARSE_FOR_ID else None,
        )
    accepted = _decode_canonical(raw)
    if accepted is not None:
        return accepted
    wire = parse_json(raw)
    tx_id = _txid_of_wire(wire)
    try:
        tx = tx_from_wire(wire)
    except Rejected as rejected:
        raise rejected.with_txid(tx_id) from None
    if encode_parsed(wire) != raw:
        raise Rejected(
            Code.MALFORMED,
            "not canonical JSON (keys sorted, no spaces, lowercase hex, integers only)",
            tx_id,
        )
    assert tx_id is not None  # a well-formed transaction always has an id
    return Decoded(tx, tx_id, raw)


def trusted_transaction(raw: bytes) -> Transaction:
    """The transaction in `raw`, which `decode_transaction` already accepted elsewhere (in a
    worker process): skips the canonical re-encoding and the id, which are known."""
    return tx_from_wire(parse_json(raw))


def _decode_canonical(raw: bytes) -> Decoded | None:
    """The transaction in `raw` if it is one in canonical form, read the quick way (orjson);
    None otherwise, and then `decode_transaction`'s own path decides, with its exact refusal.

    The same answer as that path whenever this one accepts: `tx_from_wire` accepted the value,
    so it holds only the design's fields (objects, lists, ASCII hex and ids, integers within
    MAX_INT, null); `raw` is its canonical encoding (`encode_parsed`); and the json module
    reads the canonical encoding of such a value back as that very value, so `parse_json`
    would give the same value, id and transaction."""
    try:
        wire = orjson.loads(raw)
        tx = tx_from_wire(wire)
    except Exception:  # not valid JSON, or not a transaction: the strict path says why
        return None
    if encode_parsed(wire) != raw:
        return None
    tx_id = _txid_of_wire(wire)
    return None if tx_id is None else Decoded(tx, tx_id, raw)


def accepted_transaction(raw: bytes) -> Transaction:
    """The transaction in `raw`, which `decode_transaction` accepted in this run (the ledger's
    static checks, perhaps in a worker process): built without checking again.

    Only for bytes known to be accepted: every string of an accepted transaction is hex, a
    meter id or a fixed name, and every integer is within MAX_INT, so orjson reads them as
    the strict decoder does; anything else may give a wrong transaction or any exception."""
    wire = orjson.loads(raw)
    chain = bytes.fromhex(wire["chain"])
    tx_type = wire["type"]
    if tx_type == "transfer":
        return Transfer(
            chain=chain,
            inputs=tuple(Outpoint(bytes.fromhex(i["tx"]), i["index"]) for i in wire["inputs"]),
            outputs=_accepted_outputs(wire["outputs"]),
            signatures=tuple(
                Signature(bytes.fromhex(s["public_key"]), bytes.fromhex(s["signature"]))
                for s in wire["signatures"]
            ),
        )
    if tx_type == "issue":
        return Issue(
            chain=chain,
            meter=wire["meter"],
            nonce=wire["nonce"],
            outputs=_accepted_outputs(wire["outputs"]),
            signature=bytes.fromhex(wire["signature"]),
        )
    return tx_from_wire(wire)  # regulations are rare: the checked path costs nothing here


def _accepted_outputs(wires: list[dict[str, Any]]) -> tuple[Output, ...]:
    outputs = []
    for wire in wires:
        asset = wire["asset"]
        kind = asset["kind"]
        outputs.append(
            Output(
                Fa(asset["amount"])
                if kind == "FA"
                else (Epa if kind == "EPA" else Eca)(asset["power"], asset["start"], asset["end"]),
                bytes.fromhex(wire["address"]),
            )
        )
    return tuple(outputs)


def _txid_if_computable(raw: bytes) -> bytes | None:
    try:
        return _txid_of_wire(parse_json(raw))
    except Rejected:
        return None


def _txid_of_wire(wire: Any) -> bytes | None:
    """The id of a parsed object that has a known type, even if it is otherwise malformed."""
    if not isinstance(wire, dict) or not isinstance(wire.get("type"), str):
        return None
    field = _SIGNATURE_FIELD.get(wire["type"])
    if field is None:
        return None
    unsigned = {k: v for k, v in wire.items() if k != field}
    return hashlib.sha256(encode_parsed(unsigned)).digest()


def tx_from_wire(wire: Any) -> Transaction:
    """A transaction from its parsed JSON object; Rejected(`malformed` | `too_large`) if not one."""
    if not isinstance(wire, dict):
        raise Rejected(Code.MALFORMED, "a transaction is a JSON object")
    tx_type = wire.get("type")
    if not isinstance(tx_type, str) or tx_type not in _KEYS:
        raise Rejected(Code.MALFORMED, "type must be one of transfer, issue, regulate")
    keys = wire.keys()
    if keys != _KEYS[tx_type]:
        missing = sorted(_KEYS[tx_type] - keys)
        extra = sorted(keys - _KEYS[tx_type])
        raise Rejected(Code.MALFORMED, f"{tx_type}: missing fields {missing}, unknown {extra}")
    if wire["v"] != WIRE_VERSION or type(wire["v"]) is not int:
        raise Rejected(Code.MALFORMED, f"v must be {WIRE_VERSION}")
    chain = field_hex(wire["chain"], 32, "chain")
    if tx_type == "transfer":
        signatures = tuple(
            _signature(s, f"signatures[{n}]")
            for n, s in enumerate(field_list(wire["signatures"], "signatures", 0, MAX_SIGNATURES))
        )
        signers = [s.public_key for s in signatures]
        if signers != sorted(signers):  # another order would be another leaf under the same txid
            raise _malformed("signatures", "must be in ascending order of public_key")
        return Transfer(
            chain=chain,
            inputs=tuple(
                field_outpoint(i, f"inputs[{n}]")
                for n, i in enumerate(field_list(wire["inputs"], "inputs", 1, MAX_INPUTS))
            ),
            outputs=_outputs(wire["outputs"]),
            signatures=signatures,
        )
    if tx_type == "issue":
        return Issue(
            chain=chain,
            meter=field_meter(wire["meter"], "meter"),
            nonce=field_int(wire["nonce"], "nonce", 0),
            outputs=_outputs(wire["outputs"]),
            signature=field_hex(wire["signature"], 64, "signature"),
        )
    authorize = field_list(wire["authorize"], "authorize", 0, MAX_REGULATED_METERS)
    ban = field_list(wire["ban"], "ban", 0, MAX_REGULATED_METERS)
    regulate = Regulate(
        chain=chain,
        time=field_int(wire["time"], "time", -MAX_INT),
        authorize=tuple(_authorization(a, f"authorize[{n}]") for n, a in enumerate(authorize)),
        ban=tuple(field_meter(m, f"ban[{n}]") for n, m in enumerate(ban)),
        price_consumption=field_price(wire["price_consumption"], "price_consumption"),
        price_production=field_price(wire["price_production"], "price_production"),
        nonce=field_int(wire["nonce"], "nonce", 0),
        signature=field_hex(wire["signature"], 64, "signature"),
    )
    named = [a.meter for a in regulate.authorize] + list(regulate.ban)
    if len(set(named)) != len(named):
        raise Rejected(Code.MALFORMED, "a meter is named twice in one regulation")
    return regulate


def genesis_from_wire(wire: Any) -> Genesis:
    """A genesis from its JSON object; Rejected(`malformed`) with the reason if not one."""
    expected = {"v", "name", "interval_s", "epoch", "currency", "dso_keys", "sequencer_keys"}
    if not isinstance(wire, dict) or wire.keys() != expected:
        raise Rejected(Code.MALFORMED, f"a genesis is an object with exactly {sorted(expected)}")
    if wire["v"] != WIRE_VERSION or type(wire["v"]) is not int:
        raise Rejected(Code.MALFORMED, f"genesis v must be {WIRE_VERSION}")
    for field in ("name", "currency"):
        if not isinstance(wire[field], str) or not wire[field]:
            raise Rejected(Code.MALFORMED, f"genesis {field} must be a non-empty string")
    dso_keys = field_list(wire["dso_keys"], "dso_keys", 1, 64)
    sequencer_keys = field_list(wire["sequencer_keys"], "sequencer_keys", 1, 64)
    return Genesis(
        name=wire["name"],
        interval_s=field_int(wire["interval_s"], "interval_s", 1),
        epoch=field_int(wire["epoch"], "epoch", 0),
        currency=wire["currency"],
        dso_keys=tuple(field_hex(k, 32, f"dso_keys[{n}]") for n, k in enumerate(dso_keys)),
        sequencer_keys=tuple(
            field_hex(k, 32, f"sequencer_keys[{n}]") for n, k in enumerate(sequencer_keys)
        ),
    )


def parse_genesis(raw: bytes) -> Genesis:
    """A genesis from JSON bytes (any formatting: a genesis file is written by people too)."""
    return genesis_from_wire(parse_json(raw))


def _malformed(where: str, what: str) -> Rejected:
    return Rejected(Code.MALFORMED, f"{where} {what}")


def field_int(value: Any, where: str, low: int, high: int = MAX_INT) -> int:
    """`value` as an integer in [low, high] (never a bool); `malformed` naming `where`."""
    if type(value) is not int:  # bool is an int in Python, never on the wire
        raise _malformed(where, "must be an integer")
    if not low <= value <= high:
        raise _malformed(where, f"must be between {low} and {high}, got {value}")
    return value


def field_price(value: Any, where: str) -> int | None:
    """A price in micro-units per kWh, or None (unchanged)."""
    return None if value is None else field_int(value, where, -MAX_INT)


def field_hex(value: Any, size: int, where: str) -> bytes:
    """`size` bytes written as exactly `2 * size` lowercase hex digits."""
    try:
        raw = bytes.fromhex(value) if type(value) is str and len(value) == 2 * size else b""
    except ValueError:
        raw = b""
    # the round trip refuses uppercase, spaces and wrong lengths in one comparison
    if len(raw) != size or raw.hex() != value:
        raise _malformed(where, f"must be {size} bytes as {2 * size} lowercase hex digits")
    return raw


def field_meter(value: Any, where: str) -> str:
    """A meter id: 1-64 of [A-Za-z0-9._-]."""
    if not isinstance(value, str) or not METER_ID.fullmatch(value):
        raise _malformed(where, "must be a meter id of 1-64 characters from [A-Za-z0-9._-]")
    return value


def field_list(value: Any, where: str, low: int, high: int) -> list[Any]:
    """A list of `low` to `high` entries (`too_large` above)."""
    if not isinstance(value, list):
        raise _malformed(where, "must be a list")
    if len(value) > high:
        raise Rejected(Code.TOO_LARGE, f"{where} has {len(value)} entries, the limit is {high}")
    if len(value) < low:
        raise _malformed(where, f"must have at least {low} entr{'y' if low == 1 else 'ies'}")
    return value


def _object(value: Any, where: str, keys: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict) or len(value) != len(keys) or not keys.issuperset(value):
        raise _malformed(where, f"must be an object with exactly {sorted(keys)}")
    return value


_ENERGY_KEYS = frozenset({"kind", "power", "start", "end"})
_FA_KEYS = frozenset({"kind", "amount"})


def asset_from_wire(wire: Any) -> Asset:
    """The asset a wire object describes (as `asset_to_wire` writes it); `malformed` if none."""
    return _asset(wire, "asset")


def _asset(value: Any, where: str) -> Asset:
    kind = value.get("kind") if isinstance(value, dict) else None
    if kind == AssetKind.FA:
        _object(value, where, _FA_KEYS)
        return Fa(amount=field_int(value["amount"], f"{where}.amount", 1))
    if kind not in (AssetKind.EPA, AssetKind.ECA):
        raise _malformed(f"{where}.kind", "must be EPA, ECA or FA")
    _object(value, where, _ENERGY_KEYS)
    power = field_int(value["power"], f"{where}.power", 1)
    start = field_int(value["start"], f"{where}.start", 0)
    end = field_int(value["end"], f"{where}.end", start)
    return Epa(power, start, end) if kind == AssetKind.EPA else Eca(power, start, end)


_OUTPUT_KEYS = frozenset({"asset", "address"})
_OUTPOINT_KEYS = frozenset({"tx", "index"})
_SIGNATURE_KEYS = frozenset({"public_key", "signature"})
_AUTHORIZATION_KEYS = frozenset({"meter", "public_key", "max_epa", "max_eca"})


def _outputs(value: Any) -> tuple[Output, ...]:
    items = field_list(value, "outputs", 1, MAX_OUTPUTS)
    return tuple(_output(o, f"outputs[{n}]") for n, o in enumerate(items))


def _output(value: Any, where: str) -> Output:
    _object(value, where, _OUTPUT_KEYS)
    return Output(_asset(value["asset"], f"{where}.asset"), field_hex(value["address"], 32, where))


def field_outpoint(value: Any, where: str) -> Outpoint:
    """An outpoint object `{"tx", "index"}`."""
    _object(value, where, _OUTPOINT_KEYS)
    return Outpoint(
        field_hex(value["tx"], 32, f"{where}.tx"), field_int(value["index"], f"{where}.index", 0)
    )


def _signature(value: Any, where: str) -> Signature:
    _object(value, where, _SIGNATURE_KEYS)
    return Signature(
        field_hex(value["public_key"], 32, f"{where}.public_key"),
        field_hex(value["signature"], 64, f"{where}.signature"),
    )


def _authorization(value: Any, where: str) -> Authorization:
    _object(value, where, _AUTHORIZATION_KEYS)
    return Authorization(
        meter=field_meter(value["meter"], f"{where}.meter"),
        public_key=field_hex(value["public_key"], 32, f"{where}.public_key"),
        max_epa=field_int(value["max_epa"], f"{where}.max_epa", 0),
        max_eca=field_int(value["max_eca"], f"{where}.max_eca", 0),
    )
