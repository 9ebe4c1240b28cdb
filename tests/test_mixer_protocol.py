"""CoinShuffle (mixer/protocol.py) among honest peers: runs, messages, onions, `owed`, and the
verdict as a pure function."""

from __future__ import annotations

import os
import random
from collections import Counter
from functools import partial
from typing import Any

import nacl.public
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mixer_network import (
    ASSET,
    CHAIN,
    POOL,
    BadOnion,
    Board,
    Equivocates,
    FalseAccuser,
    Member,
    Run,
    check_pool,
    malicious_pool,
    members,
    run_pool,
    schedules,
)

from assets import Fa, Keypair, Outpoint
from mixer.protocol import (
    ADDRESS_BYTES,
    LAZY,
    MAX_EVIDENCE,
    BadMessage,
    Blamed,
    Done,
    Input,
    Kind,
    Message,
    Peer,
    Session,
    decode_message,
    message_id,
    owed,
    peel,
    peer_order,
    seal,
    sign_message,
    verdict,
)

SETTINGS = settings(max_examples=30, deadline=None)


def one_run(pool: list[Member], schedule: random.Random | None = None) -> Run:
    """The first run of `pool`, delivered but not settled."""
    session = Session.of(CHAIN, POOL, 0, ASSET, [m.input for m in pool])
    by_index = {session.index_of(m.key.public_key): m for m in pool}
    peers = {n: m.make(session, m.key, os.urandom(ADDRESS_BYTES)) for n, m in by_index.items()}
    run = Run(session, peers, by_index)
    Board(run, schedule).deliver()
    return run


# ----------------------------------------------------------------------------- honest runs


@pytest.mark.parametrize("size", [2, 3, 10, 50])
def test_honest_peers_all_get_the_same_fully_signed_transfer(size: int) -> None:
    pool = members(size)
    runs = run_pool(pool)
    assert len(runs) == 1 and runs[0].settled_by == "landed"
    check_pool(pool, runs)
    run = runs[0]
    transfers = {p.outcome.transfer for p in run.peers.values() if isinstance(p.outcome, Done)}
    assert len(transfers) == 1 and len(run.peers) == size
    transfer = transfers.pop()
    assert Counter(o.address for o in transfer.outputs) == Counter(
        p.output for p in run.peers.values()
    )
    assert all(o.asset == ASSET for o in transfer.outputs)
    assert transfer.inputs == tuple(p.outpoint for p in run.session.peers)
    assert transfer.chain == CHAIN


@SETTINGS
@given(size=st.integers(2, 7), schedule=schedules())
def test_honest_runs_end_the_same_whatever_the_delivery_order(
    size: int, schedule: random.Random
) -> None:
    pool = members(size)
    runs = run_pool(pool, schedule)
    assert len(runs) == 1
    check_pool(pool, runs)


def test_the_final_order_is_a_permutation_not_tied_to_peer_order() -> None:
    size, rounds = 3, 60
    seen: dict[int, set[int]] = {n: set() for n in range(size)}
    for _ in range(rounds):
        run = run_pool(members(size))[0]
        assert isinstance(run.outcome, Done)
        addresses = [o.address for o in run.outcome.transfer.outputs]
        for n, peer in run.peers.items():
            seen[n].add(addresses.index(peer.output))
    # each peer's output lands in every position: (2/3)**60 that it misses one by chance
    assert all(positions == set(range(size)) for positions in seen.values())


class CountingRandom(random.Random):
    """A seeded rng that counts its shuffles."""

    shuffles = 0

    def shuffle(self, x: Any) -> None:
        self.shuffles += 1
        super().shuffle(x)


class CountingPeers:
    """Makes peers that each shuffle with a `CountingRandom` seeded by its turn."""

    def __init__(self) -> None:
        self.rngs: list[CountingRandom] = []

    def __call__(self, *args: Any, rng: random.Random | None = None, **kwargs: Any) -> Peer:
        self.rngs.append(CountingRandom(len(self.rngs)))
        return Peer(*args, rng=self.rngs[-1], **kwargs)


def test_every_peer_shuffles_with_its_rng_and_the_rng_alone_decides_the_order() -> None:
    pool = members(4)
    orders = []
    for _ in range(2):
        make = CountingPeers()
        for m in pool:
            m.make = make
        run = run_pool(pool)[0]
        assert [r.shuffles for r in make.rngs] == [1] * 4
        outcome = run.peers[0].outcome
        assert isinstance(outcome, Done)
        addresses = [o.address for o in outcome.transfer.outputs]
        orders.append([addresses.index(run.peers[n].output) for n in range(4)])
    assert orders[0] == orders[1]


@SETTINGS
@given(size=st.integers(2, 6), schedule=schedules())
def test_no_peer_sees_another_peers_output_in_clear_before_the_final_list(
    size: int, schedule: random.Random
) -> None:
    run = one_run(members(size), schedule)
    outputs = {n: p.output for n, p in run.peers.items()}
    for n, delivered in run.delivered.items():
        for message in delivered:
            if message.kind is Kind.FINAL:
                break
            raw = message.encode()
            for other, output in outputs.items():
                if other != n:
                    assert output.hex().encode() not in raw and output not in raw


def test_a_peer_ignores_messages_of_another_session_and_repeats() -> None:
    pool = members(3)
    session = Session.of(CHAIN, POOL, 0, ASSET, [m.input for m in pool])
    other = Session.of(CHAIN, POOL, 1, ASSET, [m.input for m in pool])
    peer = Peer(session, pool[1].key, os.urandom(ADDRESS_BYTES))
    stranger = Peer(other, pool[0].key, os.urandom(ADDRESS_BYTES))
    assert peer.receive(stranger.start()[0]) == []
    announce = Peer(session, pool[0].key, os.urandom(ADDRESS_BYTES)).start()[0]
    assert peer.receive(announce) == [] and peer.receive(announce) == []
    assert peer.phase is not None and peer.outcome is None


# ----------------------------------------------------------------------------- sessions


def test_peer_order_is_chosen_by_nobody() -> None:
    pool = members(6)
    inputs = [m.input for m in pool]
    assert peer_order(inputs) == peer_order(inputs[::-1]) == tuple(inputs)
    session = Session.of(CHAIN, POOL, 0, ASSET, inputs[::-1])
    assert session.peers == tuple(inputs)
    later = session.without([1, 4])
    assert later.run == 1 and set(later.peers) == set(inputs) - {inputs[1], inputs[4]}
    assert later.id != session.id
    with pytest.raises(ValueError):
        session.without(range(5))
    with pytest.raises(ValueError):
        Session(CHAIN, POOL, 0, ASSET, tuple(inputs[::-1]))


# ----------------------------------------------------------------------------- messages


@pytest.fixture(name="signed")
def signed_fixture() -> tuple[Session, list[Keypair], Message]:
    pool = members(3)
    session = Session.of(CHAIN, POOL, 0, ASSET, [m.input for m in pool])
    keys = [m.key for m in pool]
    message = sign_message(session, 1, Kind.ANNOUNCE, {"ek": "ab" * 32}, keys[1])
    return session, keys, message


def test_decode_takes_a_well_signed_message(signed: tuple[Session, list[Keypair], Message]) -> None:
    session, _, message = signed
    assert decode_message(message.encode(), session) == message
    assert decode_message(message.to_wire(), session) == message


def _tampered(wire: dict[str, Any], change: str) -> dict[str, Any] | bytes:
    altered = {**wire, "body": dict(wire["body"])}
    if change == "body":
        altered["body"]["ek"] = "cd" * 32
    elif change == "sender":
        altered["sender"] = 2
    elif change == "kind":
        altered["kind"] = "confirm"
        altered["body"] = {"digest": "ab" * 32}
    elif change == "signature":
        altered["signature"] = "00" * 64
    elif change == "short signature":
        altered["signature"] = "00" * 63
    elif change == "upper hex":
        altered["body"]["ek"] = "AB" * 32
    elif change == "extra field":
        altered["extra"] = 1
    elif change == "extra body field":
        altered["body"]["more"] = 1
    elif change == "version":
        altered["v"] = 2
    elif change == "bool sender":
        altered["sender"] = True
    elif change == "sender out of range":
        altered["sender"] = 3
    elif change == "unknown kind":
        altered["kind"] = "gossip"
    elif change == "short key":
        altered["body"]["ek"] = "ab" * 31
    elif change == "not json":
        return b"{not json"
    return altered


@pytest.mark.parametrize(
    "change",
    [
        "body",
        "sender",
        "kind",
        "signature",
        "short signature",
        "upper hex",
        "extra field",
        "extra body field",
        "version",
        "bool sender",
        "sender out of range",
        "unknown kind",
        "short key",
        "not json",
    ],
)
def test_decode_refuses_a_tampered_message(
    signed: tuple[Session, list[Keypair], Message], change: str
) -> None:
    session, _, message = signed
    with pytest.raises(BadMessage):
        decode_message(_tampered(message.to_wire(), change), session)


def test_decode_refuses_a_message_of_another_session(
    signed: tuple[Session, list[Keypair], Message],
) -> None:
    session, _, message = signed
    later = Session.of(session.chain, session.pool, 1, session.asset, session.peers)
    elsewhere = Session.of(b"d" * 32, session.pool, 0, session.asset, session.peers)
    for other in (later, elsewhere):
        with pytest.raises(BadMessage, match="not of this session"):
            decode_message(message.encode(), other)


def test_decode_refuses_a_message_signed_by_another_key(
    signed: tuple[Session, list[Keypair], Message],
) -> None:
    session, keys, _ = signed
    for key in (keys[0], Keypair.generate()):
        forged = sign_message(session, 1, Kind.ANNOUNCE, {"ek": "ab" * 32}, key)
        with pytest.raises(BadMessage, match="signature"):
            decode_message(forged.encode(), session)


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (Kind.SHUFFLE, {"ciphertexts": []}),
        (Kind.SHUFFLE, {"ciphertexts": ["ab"] * 4}),
        (Kind.FINAL, {"outputs": ["ab" * 31] * 3}),
        (Kind.CONFIRM, {"digest": "ab" * 31}),
        (Kind.SIGN, {"signature": "ab" * 32}),
        (Kind.BLAME, {"reason": "x" * 501, "dk": None, "evidence": [], "cause": None}),
        (Kind.BLAME, {"reason": "", "dk": "ab", "evidence": [], "cause": None}),
        (Kind.BLAME, {"reason": "", "dk": None, "evidence": {}, "cause": None}),
        (
            Kind.BLAME,
            {"reason": "", "dk": None, "evidence": [{}] * (MAX_EVIDENCE + 1), "cause": None},
        ),
        (Kind.BLAME, {"reason": "", "dk": None, "evidence": [], "cause": "ab"}),
    ],
)
def test_decode_refuses_a_malformed_body(
    signed: tuple[Session, list[Keypair], Message], kind: Kind, body: dict[str, Any]
) -> None:
    session, keys, _ = signed
    with pytest.raises(BadMessage):
        decode_message(sign_message(session, 1, kind, body, keys[1]).encode(), session)


# ----------------------------------------------------------------------------- onions


def test_an_onion_opens_layer_by_layer_with_the_keys_in_reverse_order() -> None:
    keys = [nacl.public.PrivateKey.generate() for _ in range(4)]
    address = os.urandom(ADDRESS_BYTES)
    onion = seal(address, [bytes(k.public_key) for k in keys])
    for key in reversed(keys):
        assert peel(onion, bytes(keys[0])) is None or key == keys[0]
        opened = peel(onion, bytes(key))
        assert opened is not None
        onion = opened
    assert onion == address
    assert seal(address, []) == address


def test_peel_refuses_garbage_and_other_keys() -> None:
    key, other = nacl.public.PrivateKey.generate(), nacl.public.PrivateKey.generate()
    onion = seal(os.urandom(ADDRESS_BYTES), [bytes(key.public_key)])
    assert peel(onion, bytes(other)) is None
    assert peel(os.urandom(len(onion)), bytes(key)) is None
    assert peel(b"", bytes(key)) is None
    assert peel(onion[:-1], bytes(key)) is None


# ----------------------------------------------------------------------------- owed


def test_owed_names_whom_each_phase_waits_for() -> None:
    size = 4
    run = one_run(members(size))
    relayed = run.relayed
    session = run.session
    everyone = frozenset(range(size))
    assert owed(session, []) == everyone
    announces = [m for m in relayed if m.kind is Kind.ANNOUNCE]
    assert owed(session, announces[:1]) == everyone - {announces[0].sender}
    steps = [m for m in relayed if m.kind in (Kind.SHUFFLE, Kind.FINAL)]
    assert [m.sender for m in steps] == list(range(size))
    for n in range(size):
        assert owed(session, [*announces, *steps[:n]]) == {n}
    confirms = [m for m in relayed if m.kind is Kind.CONFIRM]
    assert owed(session, [*announces, *steps]) == everyone
    assert owed(session, [*announces, *steps, *confirms[:3]]) == {confirms[3].sender}
    signs = [m for m in relayed if m.kind is Kind.SIGN]
    assert owed(session, [*announces, *steps, *confirms]) == everyone
    assert owed(session, [*announces, *steps, *confirms, *signs[1:]]) == {signs[0].sender}
    assert owed(session, relayed) == frozenset()
    # in blame, whoever has not blamed yet
    blame = run.peers[2]._blame("test")[0]
    assert owed(session, [*announces, blame]) == everyone - {2}


def test_owed_is_empty_once_every_signature_is_in_even_after_a_blame() -> None:
    run = one_run(members(3))
    assert owed(run.session, run.relayed) == frozenset()
    late = sign_message(
        run.session,
        0,
        Kind.BLAME,
        {"reason": "late", "dk": None, "evidence": [], "cause": None},
        run.members[0].key,
    )
    assert owed(run.session, [*run.relayed, late]) == frozenset()


# ----------------------------------------------------------------------------- the verdict


def _blames(run: Run) -> list[Message]:
    first: dict[int, Message] = {}
    for m in run.relayed:
        if m.kind is Kind.BLAME:
            first.setdefault(m.sender, m)
    return list(first.values())


BLAMING = [
    partial(BadOnion, flaw="garbage"),
    partial(BadOnion, flaw="layer"),
    partial(Equivocates, kind=Kind.ANNOUNCE),
    partial(Equivocates, kind=Kind.FINAL),
    partial(FalseAccuser, at=Kind.CONFIRM),
]


@SETTINGS
@given(
    size=st.integers(3, 6),
    index=st.integers(0, 5),
    make=st.sampled_from(BLAMING),
    schedule=schedules(),
    data=st.data(),
)
def test_verdict_is_the_same_whatever_the_order_of_the_blames(
    size: int, index: int, make: Any, schedule: random.Random, data: st.DataObject
) -> None:
    run = one_run(malicious_pool(size, {index % size: make}), schedule)
    blames = _blames(run)
    if len(blames) < size:
        return  # no blame phase in this schedule (the adversary's step was honest)
    expected = verdict(run.session, blames)
    assert expected and all(not run.members[n].honest for n in expected)
    shuffled = data.draw(st.permutations(blames))
    assert verdict(run.session, shuffled) == expected
    assert verdict(run.session, [*shuffled, *shuffled]) == expected


def test_a_blame_for_nothing_names_the_one_who_started_it_not_those_who_answered() -> None:
    run = one_run(malicious_pool(4, {2: partial(FalseAccuser, at=Kind.SHUFFLE)}))
    culprits = verdict(run.session, _blames(run))
    assert list(culprits) == [2] and "without cause" in culprits[2]
    for peer in run.peers.values():
        assert isinstance(peer.outcome, Blamed) and dict(peer.outcome.culprits) == culprits


def test_a_blame_whose_evidence_is_not_a_message_names_its_sender() -> None:
    run = one_run(malicious_pool(3, {1: partial(FalseAccuser, at=Kind.CONFIRM)}))
    blames = _blames(run)
    honest = next(b for b in blames if b.sender == 0)
    bad_evidence = [*honest.body["evidence"], {"not": "a message"}]
    forged = sign_message(
        run.session, 0, Kind.BLAME, {**honest.body, "evidence": bad_evidence}, run.members[0].key
    )
    culprits = verdict(run.session, [forged, *(b for b in blames if b.sender != 0)])
    assert "not a message" in culprits[0]


def test_an_answer_to_a_blame_names_its_cause() -> None:
    run = one_run(malicious_pool(3, {0: partial(FalseAccuser, at=Kind.ANNOUNCE)}))
    blames = {b.sender: b for b in _blames(run)}
    assert blames[0].body["cause"] is None
    assert blames[1].body["cause"] == blames[2].body["cause"] == message_id(blames[0]).hex()
    assert all(b.body["dk"] is not None for b in blames.values())


# -- signatures checked only when held against their sender (LAZY)


def _lazy_run(size: int, forge: Kind) -> tuple[list[Peer], list[Message]]:
    """A run of honest peers where each peer also gets, before the real one, a forgery of
    peer 1's message of `forge` (taken unchecked, as the client does for LAZY kinds): a
    confirm of another digest, or a signature that does not sign the transfer. Returns the
    peers and the forgeries."""
    keys = [Keypair.generate() for _ in range(size)]
    inputs = [Input(Outpoint(bytes([n + 1]) * 32, 0), k.public_key) for n, k in enumerate(keys)]
    session = Session.of(b"c" * 32, "pool", 1, Fa(1_000), inputs)
    peers = [Peer(session, k, os.urandom(32)) for k in keys]
    forgeries: list[Message] = []
    queue = [m for p in peers for m in p.start()]
    while queue:
        message = queue.pop(0)
        if message.kind is forge and message.sender == 1 and not forgeries:
            field = "digest" if forge is Kind.CONFIRM else "signature"
            body = {field: os.urandom(len(bytes.fromhex(message.body[field]))).hex()}
            forged = Message(session.id, 1, forge, body, os.urandom(64))
            forgeries.append(forged)
            for peer in peers:
                if peer.index != 1:
                    queue.extend(peer.receive(forged, checked=False))
        for peer in peers:
            if message.kind is Kind.SHUFFLE and peer.index not in (message.sender + 1,):
                continue
            lazy = str(message.kind) in LAZY
            queue.extend(peer.receive(message, checked=not lazy))
    return peers, forgeries


@pytest.mark.parametrize("forge", [Kind.CONFIRM, Kind.SIGN], ids=str)
def test_a_forged_lazy_message_is_dropped_not_held_against_its_sender(forge: Kind) -> None:
    for _ in range(10):  # the peer order, so who holds what when the forgery comes, varies
        peers, [forged] = _lazy_run(4, forge)
        outcomes = [p.outcome for p in peers]
        assert all(isinstance(o, Done) for o in outcomes), [p.problem for p in peers]
        assert len({o.transfer for o in outcomes if isinstance(o, Done)}) == 1
        for peer in peers:
            assert forged not in peer.received()  # forgotten once found forged


def test_only_lazy_kinds_may_come_unchecked() -> None:
    keys = [Keypair.generate() for _ in range(2)]
    inputs = [Input(Outpoint(bytes([n + 1]) * 32, 0), k.public_key) for n, k in enumerate(keys)]
    session = Session.of(b"c" * 32, "pool", 1, Fa(1_000), inputs)
    first, second = (Peer(session, k, os.urandom(32)) for k in keys)
    [announce] = first.start()[:1]
    with pytest.raises(ValueError, match="signature checked"):
        second.receive(announce, checked=False)
    assert {"confirm", "sign"} == LAZY


def test_blame_evidence_leaves_out_what_was_forged_on_the_way() -> None:
    """A forged confirm taken unchecked, then a real reason to blame: the forgery is checked
    before it would go into the evidence, and left out (no honest peer is named for it)."""
    keys = [Keypair.generate() for _ in range(3)]
    inputs = [Input(Outpoint(bytes([n + 1]) * 32, 0), k.public_key) for n, k in enumerate(keys)]
    session = Session.of(b"c" * 32, "pool", 1, Fa(1_000), inputs)
    peer = Peer(session, keys[0], os.urandom(32))
    peer.start()
    forged = Message(session.id, 2, Kind.CONFIRM, {"digest": "00" * 32}, os.urandom(64))
    peer.receive(forged, checked=False)
    [blame] = [m for m in peer._blame("a test's reason") if m.kind is Kind.BLAME]
    kinds = [wire["kind"] for wire in blame.body["evidence"]]
    assert kinds == ["announce"]  # its own announcement only
    assert all(decode_message(w, session) for w in blame.body["evidence"])
