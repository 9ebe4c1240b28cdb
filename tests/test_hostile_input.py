"""Issue 14, without servers: nothing an outsider sends can raise anything but a refusal.

Canonical decoding refuses lone surrogates and deep nesting as `malformed`; a transfer's
signatures have one order; every per-transaction check turns a fault of its own into the
refusal of that transaction alone, so its block, and the sequencer, go on.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hostile import HOSTILE_BODIES, hostile_json, json_bytes
from hypothesis import given, settings
from hypothesis import strategies as st
from waiting import wait_until

from assets import (
    Authorization,
    Code,
    Epa,
    Fa,
    Keypair,
    Outpoint,
    Rejected,
    Transfer,
    decode_transaction,
    encode_transaction,
    txid,
)
from assets.canonical import MAX_DEPTH, parse_json
from assets.codec import tx_to_wire
from ledger import open_ledger, rules
from ledger.api import LedgerNode, create_app
from ledger.sequencer import InProcessSequencer, SequencerBusy
from ledger.static import check_batch
from simulation.scenario import Scenario, pay

KEY = Keypair(bytes(32))
SURROGATE = b'{"type":"transfer","x":"\\ud800"}'


def refusal(raw: bytes) -> Rejected:
    with pytest.raises(Rejected) as caught:
        decode_transaction(raw)
    return caught.value


@pytest.mark.parametrize(
    "raw",
    [
        SURROGATE,
        b'{"\\udfff":1}',
        b'["\\udc00\\ud800"]',  # a low surrogate before a high one is no pair
        b"[" * 986 + b"]" * 986,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
    ],
    ids=["surrogate", "surrogate-key", "reversed-pair", "depth-986", "depth-1e5", "objects"],
)
def test_lone_surrogates_and_deep_nesting_are_malformed(raw: bytes) -> None:
    assert refusal(raw).code is Code.MALFORMED
    with pytest.raises(Rejected):
        parse_json(raw)


def test_nesting_up_to_the_bound_and_surrogate_pairs_still_parse() -> None:
    assert parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    assert parse_json(b'"\\ud83d\\ude00"') == "\U0001f600"  # a pair is one character
    assert parse_json(b'"' + b"[" * 32 + b'"') == "[" * 32  # brackets inside a string


@settings(max_examples=300)
@given(hostile_json())
def test_any_json_an_outsider_sends_is_decoded_or_refused(value: Any) -> None:
    """Whatever the JSON, decoding a transaction returns or raises `Rejected`, never more."""
    with contextlib.suppress(Rejected):
        decode_transaction(json_bytes(value))


@settings(max_examples=200)
@given(st.sampled_from(["v", "chain", "inputs", "outputs", "signatures"]), hostile_json())
def test_a_transfer_with_any_field_replaced_is_refused_cleanly(field: str, value: Any) -> None:
    scenario = Scenario()
    alice = Keypair(bytes(32))
    tx = scenario.transfer([Outpoint(bytes(32), 0)], [pay(Fa(5), alice)], alice)
    wire = {**tx_to_wire(tx), field: value}
    for raw in (json_bytes(wire), json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()):
        verdict = check_batch(scenario.genesis, [raw])[0]  # never raises
        if field == "signatures":  # who must sign is a dynamic rule: fewer may pass here
            continue
        unchanged = json_bytes(value) == json_bytes(tx_to_wire(tx)[field])
        assert (verdict.code is None) == (unchanged and raw == encode_transaction(tx)), verdict


@pytest.mark.parametrize("hostile", HOSTILE_BODIES, ids=lambda h: h.name)
def test_the_static_checks_refuse_every_corpus_body(hostile: Any) -> None:
    (verdict,) = check_batch(Scenario().genesis, [hostile.body])
    assert verdict.code in (Code.MALFORMED, Code.TOO_LARGE)


# ---------------------------------------------------------------- one order of signatures


def two_owner_transfer(scenario: Scenario) -> tuple[Transfer, Keypair, Keypair]:
    alice, bob = sorted((Keypair.generate(), Keypair.generate()), key=lambda k: k.public_key)
    inputs = [Outpoint(bytes([1]) * 32, 0), Outpoint(bytes([2]) * 32, 0)]
    outputs = [pay(Fa(10), alice), pay(Epa(100, 1, 1), bob)]
    return scenario.transfer(inputs, outputs, bob, alice), alice, bob


def test_signatures_are_kept_and_encoded_in_ascending_order_of_public_key() -> None:
    tx, alice, bob = two_owner_transfer(Scenario())
    assert [s.public_key for s in tx.signatures] == [alice.public_key, bob.public_key]
    reordered = Transfer(tx.chain, tx.inputs, tx.outputs, tx.signatures[::-1])
    assert reordered == tx and encode_transaction(reordered) == encode_transaction(tx)


def test_reordered_signatures_are_malformed_so_one_txid_has_one_leaf() -> None:
    """Anyone could swap a two-owner transfer's signatures: same txid, other bytes."""
    tx, _, _ = two_owner_transfer(Scenario())
    wire = tx_to_wire(tx)
    wire["signatures"] = wire["signatures"][::-1]
    swapped = json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()
    refused = refusal(swapped)
    assert refused.code is Code.MALFORMED and "ascending order" in refused.message
    assert refused.txid == txid(tx)
    assert decode_transaction(encode_transaction(tx)).tx == tx


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=6, unique=True))
def test_only_the_ascending_order_decodes(keys: list[bytes]) -> None:
    """Property: of every order of the same signatures, exactly the ascending one decodes."""
    wire = tx_to_wire(Transfer(bytes(32), (Outpoint(bytes(32), 0),), (pay(Fa(1), KEY),)))
    signatures = [{"public_key": k.hex(), "signature": "00" * 64} for k in keys]
    for order in (signatures, signatures[::-1], sorted(signatures, key=lambda s: s["public_key"])):
        raw = json.dumps({**wire, "signatures": order}, sort_keys=True, separators=(",", ":"))
        ascending = [s["public_key"] for s in order] == sorted(k.hex() for k in keys)
        try:
            decode_transaction(raw.encode())
            assert ascending
        except Rejected as rejected:
            assert not ascending and rejected.code is Code.MALFORMED


# ---------------------------------------------------------------- a fault refuses one tx


def funded(tmp_path: Path) -> tuple[Scenario, Any, Keypair, Outpoint]:
    """A ledger where meter m1 issued 100 FA to alice; alice's coin."""
    scenario = Scenario(epoch=int(time.time()) - 5_000)
    ledger = open_ledger(f"sqlite:///{tmp_path}/l.sqlite", scenario.genesis_raw, scenario.sequencer)
    meter, alice = Keypair.generate(), Keypair.generate()
    now = ledger.time
    ledger.append_block(
        [encode_transaction(scenario.regulate(0, [Authorization("m1", meter.public_key, 9, 9)]))],
        scenario.time_in(0),
    )
    issue = scenario.issue("m1", meter, 1, [pay(Fa(100), alice)])
    result = ledger.append_block([encode_transaction(issue)], max(now, scenario.time_in(2)))
    assert result.outcomes[0].accepted, result.outcomes
    return scenario, ledger, alice, Outpoint(txid(issue), 0)


def test_hostile_bodies_and_an_honest_transfer_in_one_block(tmp_path: Path) -> None:
    scenario, ledger, alice, coin = funded(tmp_path)
    bob = Keypair.generate()
    honest = scenario.transfer([coin], [pay(Fa(100), bob)], alice)
    raws = [SURROGATE, b"[" * 986 + b"]" * 986, encode_transaction(honest), SURROGATE]
    result = ledger.append_block(raws, ledger.time + 1)
    codes = [o.code for o in result.outcomes]
    assert codes == [Code.MALFORMED, Code.MALFORMED, None, Code.MALFORMED]
    assert result.head is not None and result.head.header.tree_size == 3


def test_a_fault_inside_a_rule_refuses_that_transaction_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that makes a rule raise something other than `Rejected` (as the surrogate once
    did) refuses the transaction it met; the block and the ones after it are built."""
    scenario, ledger, alice, coin = funded(tmp_path)
    bob = Keypair.generate()
    original = rules.check_transfer
    poisoned = scenario.transfer([coin], [pay(Fa(60), bob), pay(Fa(40), alice)], alice)

    def faulty(view: Any, item: Any) -> None:
        if item.txid == txid(poisoned):
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        original(view, item)

    monkeypatch.setattr(rules, "check_transfer", faulty)
    honest = scenario.transfer([coin], [pay(Fa(100), bob)], alice)
    result = ledger.append_block(
        [encode_transaction(poisoned), encode_transaction(honest)], ledger.time + 1
    )
    assert [o.code for o in result.outcomes] == [Code.MALFORMED, None]
    assert "could not be checked" in result.outcomes[0].message


def test_a_fault_in_the_static_checks_refuses_that_transaction_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scenario = Scenario()

    def faulty(raw: bytes, chain: bytes) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(rules, "check_static", faulty)
    (verdict,) = check_batch(scenario.genesis, [b"{}"])
    assert verdict.code is Code.MALFORMED and "could not be checked" in verdict.message


def test_a_full_sequencer_refuses_at_once_when_asked_not_to_wait(tmp_path: Path) -> None:
    scenario = Scenario()
    ledger = open_ledger(f"sqlite:///{tmp_path}/l.sqlite", scenario.genesis_raw, scenario.sequencer)
    sequencer = InProcessSequencer(ledger, max_queued_blocks=0, workers=1)
    try:
        with pytest.raises(SequencerBusy):
            sequencer.submit(SURROGATE, wait=False)
    finally:
        sequencer.max_queued_blocks = 4
        sequencer.close()


def test_back_pressure_is_a_503_with_retry_after_and_reads_go_on(tmp_path: Path) -> None:
    """A submission the full sequencer cannot take is answered 503 `busy` with Retry-After,
    and while it waits, the event loop answers reads."""
    scenario = Scenario()
    ledger = open_ledger(f"sqlite:///{tmp_path}/l.sqlite", scenario.genesis_raw, scenario.sequencer)
    node = LedgerNode(ledger)
    assert isinstance(node.sequencer, InProcessSequencer)
    node.sequencer.max_queued_blocks = 0  # as if the ledger were behind
    with TestClient(create_app(node)) as client:
        answers: list[Any] = []
        post = threading.Thread(
            target=lambda: answers.append(client.post("/v1/transactions", content=SURROGATE))
        )
        post.start()
        started = time.monotonic()
        assert client.get("/v1/genesis").status_code == 200
        assert time.monotonic() - started < 1.0, "a read waited on a blocked loop"
        post.join()
        (answer,) = answers
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "busy"
        assert answer.headers["retry-after"] == "1"
    node.sequencer.max_queued_blocks = 4
    node.close()


def test_a_storage_failure_is_reported_once_to_the_node(tmp_path: Path) -> None:
    scenario = Scenario()
    ledger = open_ledger(f"sqlite:///{tmp_path}/l.sqlite", scenario.genesis_raw, scenario.sequencer)
    fatal: list[bool] = []
    node = LedgerNode(ledger, on_fatal=lambda: fatal.append(True))
    assert node.sequencer is not None

    def broken(*_: Any, **__: Any) -> None:
        raise OSError("disk full")

    ledger.store.write_block = broken  # type: ignore[method-assign]
    regulate = encode_transaction(
        scenario.regulate(scenario.genesis.interval_at(int(time.time())) + 9)
    )
    with pytest.raises(OSError):
        node.sequencer.submit(regulate).result(timeout=30)
    wait_until(lambda: fatal, 10, "the node to hear of the failure", interval_s=0.01)
    assert fatal == [True] and isinstance(node.fatal, OSError)
    node.close()
