"""A protocol message's signed and hashed bytes (`mixer.protocol._canonical`) are its canonical
JSON, byte for byte: orjson with sorted keys for every kind but a blame, whose evidence may
hold what orjson writes differently (a float, which canonical JSON refuses)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assets import canonical_json
from mixer.protocol import Kind, Message, _canonical

texts = st.text(st.characters(codec="utf-8"), max_size=12)
ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
# What a message but a blame holds: objects, lists, strings, integers, booleans and null.
values = st.recursive(
    st.none() | st.booleans() | ints | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=24,
)
kinds = st.sampled_from([kind for kind in Kind if kind is not Kind.BLAME])


@given(st.dictionaries(texts, values, max_size=6), kinds)
def test_a_message_encodes_as_canonical_json(wire: dict[str, Any], kind: Kind) -> None:
    assert _canonical(wire, kind) == canonical_json(wire)


@given(
    st.binary(min_size=32, max_size=32),
    st.integers(0, 255),
    kinds,
    st.dictionaries(st.sampled_from(["ek", "digest", "signature"]), st.binary(max_size=64)),
)
def test_signed_bytes_and_encoding_are_those_of_canonical_json(
    session: bytes, sender: int, kind: Kind, body: dict[str, bytes]
) -> None:
    message = Message(session, sender, kind, {k: v.hex() for k, v in body.items()}, b"s" * 64)
    assert message.encode() == canonical_json(message.to_wire())
    assert _canonical(message.unsigned_wire(), kind) == canonical_json(message.unsigned_wire())


def test_an_integer_beyond_64_bits_takes_the_canonical_encoder() -> None:
    wire = {"body": {"n": 2**70}, "v": 1}
    assert (
        _canonical(wire, Kind.ANNOUNCE)
        == canonical_json(wire)
        == b'{"body":{"n":1180591620717411303424},"v":1}'
    )


def test_a_blame_with_a_float_is_refused_as_canonical_json_refuses_it() -> None:
    wire = {"body": {"evidence": [{"x": 1.5}]}, "kind": "blame"}
    with pytest.raises(ValueError, match="integers only"):
        _canonical(wire, Kind.BLAME)
