"""CoinShuffle (mixer/protocol.py) against malicious peers: whatever they do and whatever the
delivery order, the culprits are named, honest peers agree and are never named, and the honest
peers finish while at least two remain (`check_pool`)."""

from __future__ import annotations

import random
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mixer_network import (
    Adversary,
    BadOnion,
    BadSignature,
    DropsCiphertext,
    Equivocates,
    FalseAccuser,
    Make,
    Member,
    RepeatsCiphertext,
    WithholdsShuffles,
    check_pool,
    malicious_pool,
    members,
    run_pool,
    schedules,
    silent_from,
)

from mixer.protocol import Blamed, Done, Kind

# A quarter of the profile's examples (each runs a whole pool): 25 in `make test`, 6 in
# `make check`.
SETTINGS = settings(max_examples=max(settings().max_examples // 4, 1), deadline=None)


@st.composite
def pools(
    draw: st.DrawFn, makes: st.SearchStrategy[Make], several: bool, spenders: bool = False
) -> tuple[list[Member], random.Random | None]:
    """A pool with one (or several) malicious peers at drawn places, and a schedule (None:
    each peer reads in turn)."""
    size = draw(st.integers(4, 7) if several else st.integers(3, 6))
    most = size - 2 if several else 1
    bad = draw(st.sets(st.integers(0, size - 1), min_size=2 if several else 1, max_size=most))
    if spenders:
        pool = malicious_pool(size, {}, frozenset(bad))
    else:
        pool = malicious_pool(size, {n: draw(makes) for n in sorted(bad)})
    return pool, draw(st.none() | schedules())


def play(
    makes: st.SearchStrategy[Make], several: bool, data: st.DataObject, spenders: bool = False
) -> None:
    pool, schedule = data.draw(pools(makes, several, spenders))
    check_pool(pool, run_pool(pool, schedule))


class EquivocatingAccuser(Equivocates, FalseAccuser):
    """Blames for nothing, and sends one version of its blame to some peers, another to the
    rest."""


class WithholdingBadOnion(BadOnion, WithholdsShuffles):
    """Makes a bad onion and leaves every shuffle out of its blame."""


SEVERAL = pytest.mark.parametrize("several", [False, True], ids=["one", "several"])


@SEVERAL
@SETTINGS
@given(data=st.data())
def test_a_missing_output_names_who_dropped_it(several: bool, data: st.DataObject) -> None:
    makes = st.sampled_from(
        [partial(DropsCiphertext, replace=True), partial(DropsCiphertext, replace=False)]
    )
    play(makes, several, data)


@SEVERAL
@SETTINGS
@given(data=st.data())
def test_a_bad_ciphertext_names_who_made_it(several: bool, data: st.DataObject) -> None:
    makes = st.sampled_from([partial(BadOnion, flaw=f) for f in ("garbage", "layer")])
    play(makes, several, data)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_an_onion_without_an_address_inside_names_who_made_it(index: int) -> None:
    pool = malicious_pool(4, {index: partial(BadOnion, flaw="content")})
    runs = run_pool(pool)
    first = runs[0].outcome
    assert isinstance(first, Blamed) and list(first.culprits) == [index]
    check_pool(pool, runs)


@SEVERAL
@SETTINGS
@given(data=st.data())
def test_a_duplicate_names_who_repeated_it(several: bool, data: st.DataObject) -> None:
    play(st.just(RepeatsCiphertext), several, data)


@SEVERAL
@SETTINGS
@given(data=st.data())
def test_equivocation_names_who_said_two_things(several: bool, data: st.DataObject) -> None:
    makes = st.sampled_from(
        [partial(Equivocates, kind=k) for k in (Kind.ANNOUNCE, Kind.FINAL, Kind.CONFIRM)]
    )
    play(makes, several, data)


@SEVERAL
@SETTINGS
@given(data=st.data())
def test_a_double_spend_names_who_spent_its_input(several: bool, data: st.DataObject) -> None:
    play(st.just(Adversary), several, data, spenders=True)


@SEVERAL
@SETTINGS
@given(data=st.data())
def test_a_bad_signature_names_its_signer(several: bool, data: st.DataObject) -> None:
    makes = st.sampled_from([partial(BadSignature, of=o) for o in ("noise", "another order")])
    play(makes, several, data)


@SEVERAL
@SETTINGS
@given(data=st.data())
def test_a_missing_signature_names_who_did_not_sign(several: bool, data: st.DataObject) -> None:
    makes = st.sampled_from(
        [
            partial(Adversary, mute=frozenset({Kind.SIGN})),
            partial(Adversary, mute=silent_from(Kind.SIGN)),
        ]
    )
    play(makes, several, data)


@pytest.mark.parametrize("kind", [Kind.ANNOUNCE, Kind.SHUFFLE, Kind.CONFIRM, Kind.SIGN])
@SEVERAL
@SETTINGS
@given(data=st.data())
def test_silence_past_the_timeout_names_the_silent(
    kind: Kind, several: bool, data: st.DataObject
) -> None:
    play(st.just(partial(Adversary, mute=silent_from(kind))), several, data)


@SEVERAL
@SETTINGS
@given(data=st.data())
def test_silence_in_the_blame_phase_names_the_silent(several: bool, data: st.DataObject) -> None:
    blame = frozenset({Kind.BLAME})
    makes: st.SearchStrategy[Make] = st.sampled_from(
        [
            partial(Equivocates, kind=Kind.ANNOUNCE, mute=blame),
            partial(BadOnion, mute=blame),
            partial(Adversary, mute=blame),
        ]
    )
    play(makes, several, data)


@pytest.mark.parametrize("at", [Kind.ANNOUNCE, Kind.SHUFFLE, Kind.CONFIRM])
@SEVERAL
@SETTINGS
@given(data=st.data())
def test_a_false_accusation_names_the_accuser(at: Kind, several: bool, data: st.DataObject) -> None:
    play(st.just(partial(FalseAccuser, at=at)), several, data)


@SEVERAL
@SETTINGS
@given(data=st.data())
def test_any_mix_of_misbehaviour(several: bool, data: st.DataObject) -> None:
    makes: st.SearchStrategy[Make] = st.sampled_from(
        [
            partial(DropsCiphertext, replace=True),
            partial(BadOnion, flaw="layer"),
            RepeatsCiphertext,
            partial(Equivocates, kind=Kind.ANNOUNCE),
            partial(Equivocates, kind=Kind.FINAL),
            partial(BadSignature, of="noise"),
            partial(Adversary, mute=silent_from(Kind.SHUFFLE)),
            partial(Adversary, mute=frozenset({Kind.BLAME})),
            partial(FalseAccuser, at=Kind.CONFIRM),
        ]
    )
    play(makes, several, data)


# ----------------------------------------------------------------------------- single cases


def test_a_dropped_output_names_the_last_peer_and_the_rest_finish() -> None:
    pool = malicious_pool(4, {3: DropsCiphertext})
    runs = run_pool(pool)
    assert isinstance(runs[0].outcome, Blamed) and list(runs[0].outcome.culprits) == [3]
    assert "dropped" in runs[0].outcome.culprits[3]
    check_pool(pool, runs)
    assert len(runs) == 2 and runs[1].session.size == 3


def test_of_two_peers_with_one_output_the_later_is_named_as_the_copy() -> None:
    """Nobody can copy an onion or output made by a later peer (it does not exist yet), so of
    equal values the lowest creator's is the original: the others are named, never it."""
    pool = members(5)
    shared = bytes(32)

    def same_output(*args: object, **kwargs: object) -> Adversary:
        session, key, _ = args
        peer = Adversary(session, key, shared, **kwargs)  # type: ignore[arg-type]
        peer.misbehaved = True
        return peer

    pool[0].make = pool[2].make = same_output
    runs = run_pool(pool, max_runs=3)
    first = runs[0].outcome
    assert isinstance(first, Blamed) and set(first.culprits) == {2}
    check_pool(pool, runs)


@pytest.mark.parametrize("kind", [Kind.ANNOUNCE, Kind.FINAL])
def test_equivocation_to_different_peers_is_named_as_such(kind: Kind) -> None:
    index = 4 if kind is Kind.FINAL else 1
    pool = malicious_pool(5, {index: partial(Equivocates, kind=kind)})
    runs = run_pool(pool)
    first = runs[0].outcome
    assert isinstance(first, Blamed) and list(first.culprits) == [index]
    assert f"two different {kind}" in first.culprits[index]
    check_pool(pool, runs)


@pytest.mark.parametrize(
    "several",
    [
        False,
        True,
    ],
    ids=["one", "several"],
)
def test_a_false_accusation_after_the_accuser_signed(several: bool) -> None:
    """An accuser that signs and then blames (with two, every honest peer gets a blame before
    the last signature): once every signature is in, the transfer is whole and the blame is
    moot, so every peer, the accusers too, ends with the same signed transfer."""
    bad = {1: partial(FalseAccuser, at=Kind.SIGN)}
    if several:
        bad[3] = partial(FalseAccuser, at=Kind.SIGN)
    pool = malicious_pool(5, bad)
    for seed in range(20):
        runs = run_pool(pool, random.Random(seed))
        assert len(runs) == 1, f"schedule {seed}: the run did not end with the transfer"
        outcomes = {n: p.outcome for n, p in runs[0].peers.items()}
        assert all(isinstance(o, Done) for o in outcomes.values()), outcomes
        assert len({o.transfer for o in outcomes.values() if isinstance(o, Done)}) == 1
        check_pool(pool, runs)


def test_adjacent_peers_withholding_their_shuffle_cannot_get_an_honest_peer_named() -> None:
    """Peer 1's shuffle is known only to peers 1 and 2; both leave it out of their blames and
    peer 2 makes a bad onion that honest peer 3 blames."""
    pool = malicious_pool(4, {1: WithholdsShuffles, 2: WithholdingBadOnion})
    check_pool(pool, run_pool(pool))


def test_an_equivocated_blame_cannot_get_an_honest_peer_named() -> None:
    """A false accuser sends one blame to peer 0 and another to the rest: peer 0 answers the
    first, whose id the others' verdict does not know."""
    pool = malicious_pool(4, {2: partial(EquivocatingAccuser, kind=Kind.BLAME, at=Kind.CONFIRM)})
    check_pool(pool, run_pool(pool))


def test_every_peer_that_dropped_a_ciphertext_in_a_run_is_named_in_it() -> None:
    pool = malicious_pool(5, {1: DropsCiphertext, 2: DropsCiphertext})
    runs = run_pool(pool)
    first = runs[0].outcome
    assert isinstance(first, Blamed) and set(first.culprits) == {1, 2}
