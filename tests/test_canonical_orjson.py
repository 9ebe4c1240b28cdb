"""orjson in the wire format's hot path gives byte for byte the answers of the json module.

The canonical encoding defines transaction ids and which bytes are accepted, so the quick
paths (`encode_parsed`, `decode_transaction`'s canonical read, `accepted_transaction`) are held
against the reference: the json module's canonical encoder and the strict decoding it backs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_assets import KEY, transactions

from assets import Decoded, Rejected, decode_transaction, encode_transaction, sign
from assets.canonical import encode_parsed, parse_json
from assets.codec import (
    _SIGNATURE_FIELD,
    MAX_TX_BYTES,
    accepted_transaction,
    tx_from_wire,
)

_REFERENCE = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)

# Every code point, lone surrogates, controls and the escapes JSON has included.
texts = st.text(st.characters(codec=None, categories=None), max_size=12) | st.sampled_from(
    ["\ud800", "\udfff", "\x00\x1f\x7f", '"\\/\b\f\n\r\t', "\u2028\u2029", "\uffff\U00010000"]
)
big_ints = st.integers() | st.sampled_from([2**53, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**40])
json_values = st.recursive(
    st.none() | st.booleans() | big_ints | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=24,
)


def reference_encoding(value: Any) -> bytes | type[BaseException]:
    try:
        return _REFERENCE.encode(value).encode("utf-8")
    except Exception as exc:
        return type(exc)


def reference_decode(raw: bytes) -> Decoded | tuple[str, str, bytes | None]:
    """`decode_transaction` as it was before orjson: json parse, id, fields, canonical check."""
    try:
        if len(raw) > MAX_TX_BYTES:
            return decode_transaction(raw)  # the size check comes first, untouched
        wire = parse_json(raw)
        tx_id = None
        if isinstance(wire, dict) and isinstance(wire.get("type"), str):
            field = _SIGNATURE_FIELD.get(wire["type"])
            if field is not None:
                unsigned = {k: v for k, v in wire.items() if k != field}
                tx_id = hashlib.sha256(_REFERENCE.encode(unsigned).encode()).digest()
        try:
            tx = tx_from_wire(wire)
        except Rejected as rejected:
            raise rejected.with_txid(tx_id) from None
        if _REFERENCE.encode(wire).encode() != raw:
            decode_transaction(raw)  # refused as not canonical: the same message either way
            raise AssertionError(f"accepted a non-canonical encoding: {raw!r}")
        assert tx_id is not None
        return Decoded(tx, tx_id, raw)
    except Rejected as rejected:
        return (rejected.code, rejected.message, rejected.txid)


def decode(raw: bytes) -> Decoded | tuple[str, str, bytes | None]:
    try:
        return decode_transaction(raw)
    except Rejected as rejected:
        return (rejected.code, rejected.message, rejected.txid)


@given(json_values)
@settings(max_examples=400)
def test_encode_parsed_writes_the_canonical_encoders_bytes(value: Any) -> None:
    expected = reference_encoding(value)
    if isinstance(expected, bytes):
        assert encode_parsed(value) == expected
    else:  # a lone surrogate: refused the same way
        try:
            encode_parsed(value)
        except Exception as exc:
            assert type(exc) is expected
        else:
            raise AssertionError(f"encoded what the canonical encoder refuses: {value!r}")


@given(json_values)
@settings(max_examples=400)
def test_parsed_json_is_re_encoded_as_the_reference_does(value: Any) -> None:
    raw = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    try:
        parsed = parse_json(raw.encode("utf-8", "surrogatepass"))
    except Rejected:
        return
    assert encode_parsed(parsed) == reference_encoding(parsed)


def _respellings(raw: bytes) -> st.SearchStrategy[bytes]:
    """Encodings of a transaction's value that are not its canonical bytes, and near misses."""
    wire = json.loads(raw)
    return st.sampled_from(
        [
            json.dumps(wire).encode(),  # spaces
            json.dumps(wire, separators=(",", ":")).encode(),  # insertion order
            json.dumps(wire, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(),
            raw.replace(b'"v":1', b'"v":1.0'),
            raw.replace(b'"v":1', b'"v":true'),
            raw.replace(b'"v":1', b'"v":1,"v":1'),  # a duplicate key
            raw.replace(b'{"', b'{"type":"transfer","', 1),  # a duplicate, earlier key
            raw.replace(b'"chain":"0', b'"chain":"\\u0030', 1),  # an escaped hex digit
            raw.replace(b'"chain":"0', b'"chain":"\\ud800', 1),  # a lone surrogate
            raw.replace(b'"chain":"', b'"chain":"\xff', 1),  # not UTF-8
            raw.replace(b"}", b",}", 1),
            raw[:-1],
            raw + b" ",
            b"\xef\xbb\xbf" + raw,  # a byte order mark
            raw.replace(b":1,", b":" + str(2**64).encode() + b",", 1),
            raw.replace(b":0,", b":-0,", 1),
            b"[" * 40 + raw + b"]" * 40,
            raw,
        ]
    )


@given(transactions, st.data())
@settings(max_examples=300)
def test_decoding_accepts_and_refuses_exactly_as_the_json_module_path(
    tx: Any, data: st.DataObject
) -> None:
    raw = encode_transaction(sign(tx, KEY))
    spelled = data.draw(_respellings(raw))
    assert decode(spelled) == reference_decode(spelled)


@given(st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()))
@settings(max_examples=300)
def test_decoding_arbitrary_input_answers_as_the_json_module_path(raw: bytes) -> None:
    assert decode(raw) == reference_decode(raw)


@given(transactions)
@settings(max_examples=300)
def test_an_accepted_transaction_reads_back_the_same_without_checks(tx: Any) -> None:
    raw = encode_transaction(sign(tx, KEY))
    assert accepted_transaction(raw) == decode_transaction(raw).tx
