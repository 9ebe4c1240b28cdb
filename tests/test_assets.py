"""The wire format of DESIGN.md section 4: encoding, decoding, ids and signatures."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from assets import (
    Authorization,
    Code,
    Eca,
    Epa,
    Fa,
    Issue,
    Keypair,
    Outpoint,
    Output,
    Regulate,
    Rejected,
    Transaction,
    Transfer,
    canonical_json,
    decode_transaction,
    encode_transaction,
    sign,
    signing_message,
    txid,
    verify,
)
from assets.codec import MAX_INPUTS, MAX_INT, MAX_TX_BYTES
from assets.keyfile import KeyFileError, dump_keys, load_keys

CHAIN = bytes(range(32))
KEY = Keypair(bytes(32))

hashes = st.binary(min_size=32, max_size=32)
whole = st.integers(min_value=0, max_value=MAX_INT)
meter_ids = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)


@st.composite
def energy(draw: st.DrawFn) -> Epa | Eca:
    start = draw(st.integers(0, 10_000))
    end = draw(st.integers(start, start + 100))
    power = draw(st.integers(1, MAX_INT))
    return Epa(power, start, end) if draw(st.booleans()) else Eca(power, start, end)


assets_ = st.one_of(energy(), st.builds(Fa, st.integers(1, MAX_INT)))
outputs = st.builds(Output, assets_, hashes)
outpoints = st.builds(Outpoint, hashes, st.integers(0, 511))
transfers = st.builds(
    Transfer,
    st.just(CHAIN),
    st.lists(outpoints, min_size=1, max_size=4).map(tuple),
    st.lists(outputs, min_size=1, max_size=4).map(tuple),
)
issues = st.builds(
    Issue, st.just(CHAIN), meter_ids, whole, st.lists(outputs, min_size=1, max_size=4).map(tuple)
)
authorizations = st.builds(Authorization, meter_ids, hashes, whole, whole)
prices = st.one_of(st.none(), st.integers(-MAX_INT, MAX_INT))
regulations = st.builds(
    Regulate,
    st.just(CHAIN),
    st.integers(-MAX_INT, MAX_INT),
    st.lists(authorizations, max_size=3, unique_by=lambda a: a.meter).map(tuple),
    st.just(()),
    prices,
    prices,
    whole,
)
transactions = st.one_of(transfers, issues, regulations)


def wire_of(tx: Transaction) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(encode_transaction(tx))
    return parsed


def rejection(raw: bytes) -> Code:
    with pytest.raises(Rejected) as caught:
        decode_transaction(raw)
    return caught.value.code


@given(transactions)
def test_every_transaction_round_trips_through_its_canonical_bytes(tx: Transaction) -> None:
    signed = sign(tx, KEY)
    decoded = decode_transaction(encode_transaction(signed))
    assert decoded.tx == signed
    assert decoded.txid == txid(signed) == txid(tx)  # signatures are not part of the id


@given(transactions)
def test_every_signature_verifies_and_only_for_its_own_type(tx: Transaction) -> None:
    signed = sign(tx, KEY)
    signature = signed.signatures[0].signature if isinstance(signed, Transfer) else signed.signature
    tx_id = txid(signed)
    assert verify(KEY.public_key, signing_message(signed.type, tx_id), signature)
    for other in {"transfer", "issue", "regulate", "block"} - {signed.type}:
        assert not verify(KEY.public_key, signing_message(other, tx_id), signature)


def test_a_transaction_written_by_another_program_from_the_design_is_accepted() -> None:
    """Built with json and libsodium only, straight from DESIGN.md section 4."""
    key = SigningKey(bytes(range(32)))
    address = bytes(key.verify_key).hex()
    body = {
        "v": 1,
        "chain": CHAIN.hex(),
        "type": "transfer",
        "inputs": [{"tx": "ab" * 32, "index": 0}],
        "outputs": [{"asset": {"kind": "FA", "amount": 1_500_000}, "address": address}],
    }
    unsigned = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    tx_id = hashlib.sha256(unsigned).digest()
    signature = key.sign(b"PETRA-v1/transfer\x00" + tx_id).signature
    body["signatures"] = [{"public_key": address, "signature": signature.hex()}]
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    decoded = decode_transaction(raw)

    assert decoded.txid == tx_id
    assert decoded.tx == Transfer(
        CHAIN,
        (Outpoint(bytes.fromhex("ab" * 32), 0),),
        (Output(Fa(1_500_000), bytes(key.verify_key)),),
        decoded.tx.signatures,  # type: ignore[union-attr]
    )
    assert encode_transaction(decoded.tx) == raw


def test_canonical_json_sorts_keys_and_drops_spaces() -> None:
    assert canonical_json({"b": [1, {"d": None, "c": "é"}], "a": True}) == (
        '{"a":true,"b":[1,{"c":"é","d":null}]}'.encode()
    )
    with pytest.raises(ValueError):
        canonical_json({"amount": 1.0})


def _transfer_wire() -> dict[str, Any]:
    tx = Transfer(CHAIN, (Outpoint(b"\x01" * 32, 0),), (Output(Epa(5, 1, 2), b"\x02" * 32),))
    return wire_of(sign(tx, KEY))


def _encode(wire: Any) -> bytes:
    return json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda w: w["outputs"][0]["asset"].update(power=5.0), "float power"),
        (lambda w: w["outputs"][0]["asset"].update(power=True), "boolean power"),
        (lambda w: w["outputs"][0]["asset"].update(power=0), "zero power"),
        (lambda w: w["outputs"][0]["asset"].update(start=3), "start after end"),
        (lambda w: w["outputs"][0]["asset"].update(end=MAX_INT + 1), "integer past 2**53"),
        (lambda w: w["outputs"][0]["asset"].update(kind="XYZ"), "unknown asset kind"),
        (lambda w: w["outputs"][0]["asset"].update(amount=5), "FA field on EPA"),
        (lambda w: w["outputs"][0].update(address="AB" * 32), "uppercase hex"),
        (lambda w: w["outputs"][0].update(address="ab" * 31), "short address"),
        (lambda w: w["inputs"][0].update(index=-1), "negative index"),
        (lambda w: w.update(v=2), "unknown version"),
        (lambda w: w.update(type="mint"), "unknown type"),
        (lambda w: w.update(memo="hi"), "extra field"),
        (lambda w: w.pop("signatures"), "missing signatures"),
        (lambda w: w.update(inputs=[]), "no inputs"),
        (lambda w: w.update(outputs={}), "outputs not a list"),
    ],
)
def test_malformed_transactions_are_refused_with_their_id(mutate: Any, why: str) -> None:
    wire = _transfer_wire()
    mutate(wire)
    with pytest.raises(Rejected) as caught:
        decode_transaction(_encode(wire))
    assert caught.value.code is Code.MALFORMED, why
    if wire.get("type") == "transfer" and "float" not in why:
        assert caught.value.txid is not None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"type":"transfer"',
        b"\xff\xfe",
        b'{"v":1,"amount":NaN}',
        b"[" * 100_000,
    ],
)
def test_unparseable_input_is_malformed_without_an_id(raw: bytes) -> None:
    with pytest.raises(Rejected) as caught:
        decode_transaction(raw)
    assert caught.value.code is Code.MALFORMED
    assert caught.value.txid is None


def test_a_float_amount_is_malformed() -> None:
    wire = _transfer_wire()
    raw = _encode(wire).replace(b'"power":5', b'"power":5.0')
    assert rejection(raw) is Code.MALFORMED
    assert rejection(raw.replace(b'"power":5.0', b'"power":5e0')) is Code.MALFORMED


@pytest.mark.parametrize(
    "respell",
    [
        lambda raw: raw.replace(b",", b", "),  # insignificant space
        lambda raw: raw.replace(b'{"chain"', b'{"type":"transfer","chain"', 1),  # duplicate key
        lambda raw: b" " + raw,
        lambda raw: raw.replace(b'"index":0', b'"index":-0'),
        lambda raw: raw.replace(b'"power":5', b'"power":\\u0035'),
    ],
)
def test_non_canonical_spellings_are_malformed(respell: Any) -> None:
    assert rejection(respell(_encode(_transfer_wire()))) is Code.MALFORMED


def test_unsorted_keys_are_malformed_but_named() -> None:
    wire = _transfer_wire()
    unsorted = dict(reversed(wire.items()))
    raw = json.dumps(unsorted, separators=(",", ":")).encode()
    with pytest.raises(Rejected) as caught:
        decode_transaction(raw)
    assert caught.value.code is Code.MALFORMED
    assert caught.value.txid == decode_transaction(_encode(wire)).txid


def test_oversized_transactions_are_too_large() -> None:
    tx = Transfer(
        CHAIN,
        tuple(Outpoint(bytes([i % 256]) * 32, i % 512) for i in range(MAX_INPUTS)),
        tuple(Output(Fa(1), bytes([i % 256]) * 32) for i in range(MAX_INPUTS)),
    )
    raw = encode_transaction(sign(tx, *[Keypair(bytes([i]) * 32) for i in range(40)]))
    assert len(raw) <= MAX_TX_BYTES
    assert decode_transaction(raw).txid == txid(tx)
    many = Transfer(CHAIN, (*tx.inputs, Outpoint(CHAIN, 0)), tx.outputs)
    with pytest.raises(Rejected) as caught:
        decode_transaction(encode_transaction(many))
    assert caught.value.code is Code.TOO_LARGE
    assert caught.value.txid == txid(many)
    padded = wire_of(tx)
    padded["memo"] = "x" * MAX_TX_BYTES  # the size is checked before anything else
    with pytest.raises(Rejected) as caught:
        decode_transaction(_encode(padded))
    assert caught.value.code is Code.TOO_LARGE
    assert caught.value.txid is not None
    with pytest.raises(Rejected) as caught:
        decode_transaction(b"[" * (MAX_TX_BYTES + 1))
    assert (caught.value.code, caught.value.txid) == (Code.TOO_LARGE, None)


def test_a_regulation_naming_a_meter_twice_is_malformed() -> None:
    tx = Regulate(CHAIN, 1, (Authorization("m1", KEY.public_key, 1, 1),), ("m1",), None, None, 0)
    assert rejection(encode_transaction(sign(tx, KEY))) is Code.MALFORMED


def test_meter_ids_follow_the_design() -> None:
    ok = Issue(CHAIN, "ES0021000000000001JN0F", 0, (Output(Fa(1), KEY.public_key),))
    assert decode_transaction(encode_transaction(sign(ok, KEY))).tx.meter == ok.meter  # type: ignore[union-attr]
    for bad in ("", "x" * 65, "meter one", "mètre", "a/b"):
        wire = wire_of(sign(ok, KEY))
        wire["meter"] = bad
        assert rejection(_encode(wire)) is Code.MALFORMED, bad


def test_key_files_seal_keys_under_a_passphrase() -> None:
    keys = {"dso-0": Keypair.generate(), "sequencer-0": Keypair.generate()}
    sealed = dump_keys(keys, b"correct horse")
    assert keys["dso-0"].seed.hex().encode() not in sealed
    opened = load_keys(sealed, b"correct horse")
    assert {n: k.seed for n, k in opened.items()} == {n: k.seed for n, k in keys.items()}
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_keys(sealed, b"wrong")
    with pytest.raises(KeyFileError, match="passphrase"):
        load_keys(sealed, None)
    document = json.loads(sealed)
    document["sealed"] = document["sealed"][:-2] + (
        "00" if document["sealed"][-2:] != "00" else "11"
    )
    with pytest.raises(KeyFileError, match="wrong passphrase, or the key file was changed"):
        load_keys(json.dumps(document).encode(), b"correct horse")
    with pytest.raises(KeyFileError, match="damaged"):
        load_keys(b'{"format": "petra-keys-v1", "keys": {"a": "zz"}}', None)
    with pytest.raises(KeyFileError, match="not a PETra key file"):
        load_keys(b'{"format": "other"}', None)
