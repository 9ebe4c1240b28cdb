"""Properties of the ledger under random histories, checked by code independent of the rules."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from nacl.signing import VerifyKey

from assets import (
    Asset,
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
    Transfer,
    decode_transaction,
    encode_transaction,
    txid,
)
from ledger import Ledger
from ledger.issued import StepFunction
from ledger.ledger import UNSPENT_CACHE
from ledger.store import Store
from simulation.scenario import Scenario

HORIZON = 12  # intervals the random assets live in
OWNERS = [Keypair(bytes([n]) * 32) for n in range(1, 5)]
METER = Keypair(bytes([99]) * 32)
SCENARIO = Scenario(dso=Keypair(bytes([100]) * 32), sequencer=Keypair(bytes([101]) * 32))
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class History:
    """Blocks of raw transactions, and what the generator believes about outputs it made."""

    blocks: list[tuple[int, list[bytes]]] = field(default_factory=list)
    outputs: list[tuple[Outpoint, Output]] = field(default_factory=list)
    # the ledger's cache of unspent outputs: none, a few (most inputs read from the store,
    # outputs evicted while unspent), or the default (every input found in memory)
    unspent_cache: int = UNSPENT_CACHE


def _asset(draw: st.DrawFn) -> Asset:
    kind = draw(st.sampled_from(["EPA", "ECA", "FA"]))
    if kind == "FA":
        return Fa(draw(st.integers(1, 1_000)))
    start = draw(st.integers(0, HORIZON - 1))
    end = draw(st.integers(start, HORIZON - 1))
    power = draw(st.integers(1, 3_000))
    return Epa(power, start, end) if kind == "EPA" else Eca(power, start, end)


def _split(draw: st.DrawFn, asset: Asset) -> list[Asset]:
    """Pieces of `asset` that balance it exactly: in amount, power or time."""
    if isinstance(asset, Fa):
        if asset.amount < 2 or not draw(st.booleans()):
            return [asset]
        cut = draw(st.integers(1, asset.amount - 1))
        return [Fa(cut), Fa(asset.amount - cut)]
    make = type(asset)
    how = draw(st.sampled_from(["keep", "power", "time"]))
    if how == "power" and asset.power > 1:
        cut = draw(st.integers(1, asset.power - 1))
        return [make(cut, asset.start, asset.end), make(asset.power - cut, asset.start, asset.end)]
    if how == "time" and asset.end > asset.start:
        cut = draw(st.integers(asset.start, asset.end - 1))
        return [make(asset.power, asset.start, cut), make(asset.power, cut + 1, asset.end)]
    return [asset]


def _perturb(draw: st.DrawFn, asset: Asset) -> Asset:
    """A one-unit change, up or down, that unbalances a transfer."""
    step = draw(st.sampled_from([1, -1]))
    if isinstance(asset, Fa):
        return Fa(max(1, asset.amount + step)) if asset.amount + step else Fa(2)
    make = type(asset)
    change = draw(st.sampled_from(["power", "end", "kind"]))
    if change == "power":
        return make(asset.power + step if asset.power + step else 2, asset.start, asset.end)
    if change == "end":
        end = asset.end + step if asset.end + step >= asset.start else asset.end + 1
        return make(asset.power, asset.start, end)
    return (Eca if isinstance(asset, Epa) else Epa)(asset.power, asset.start, asset.end)


@st.composite
def histories(draw: st.DrawFn) -> History:
    history = History(unspent_cache=draw(st.sampled_from([UNSPENT_CACHE, 0, 1, 3])))
    history.blocks.append(
        (
            SCENARIO.time_in(0),
            [
                encode_transaction(
                    SCENARIO.regulate(
                        0,
                        authorize=[Authorization("m", METER.public_key, 10**7, 10**7)],
                        nonce=0,
                    )
                )
            ],
        )
    )
    nonce = 0
    sent: list[bytes] = []
    sent_transfers: list[bytes] = []
    for block in range(draw(st.integers(1, 6))):
        raws: list[bytes] = []
        for _ in range(draw(st.integers(1, 10))):
            if sent and draw(st.integers(0, 7)) == 0:
                # the same bytes again, a transfer's as often as not: a duplicate if they were
                # accepted, refused for what they were otherwise
                transfer_again: bool = draw(st.booleans())
                pool = sent_transfers if transfer_again and sent_transfers else sent
                raws.append(draw(st.sampled_from(pool)))
                continue
            if not history.outputs or draw(st.integers(0, 3)) == 0:
                nonce += draw(st.sampled_from([1] * 7 + [0]))  # sometimes a stale nonce
                outputs = [
                    Output(_asset(draw), draw(st.sampled_from(OWNERS)).public_key)
                    for _ in range(draw(st.integers(1, 3)))
                ]
                tx: Issue | Transfer = SCENARIO.issue("m", METER, nonce, outputs)
            else:
                picked = draw(
                    st.lists(st.sampled_from(history.outputs), min_size=1, max_size=3)
                )  # may repeat or reuse spent outputs: the ledger must refuse those
                pieces = [piece for _, o in picked for piece in _split(draw, o.asset)]
                if draw(st.integers(0, 4)) == 0:
                    at = draw(st.integers(0, len(pieces) - 1))
                    pieces[at] = _perturb(draw, pieces[at])
                outputs = [
                    Output(piece, draw(st.sampled_from(OWNERS)).public_key) for piece in pieces
                ]
                owners = {o.address for _, o in picked}
                keys = [k for k in OWNERS if k.public_key in owners]
                if draw(st.integers(0, 9)) == 0:
                    keys = keys[1:] or [OWNERS[0]]  # a signer missing or a stranger
                tx = SCENARIO.transfer([p for p, _ in picked], outputs, *keys)
            tx_id = txid(tx)
            history.outputs.extend((Outpoint(tx_id, n), o) for n, o in enumerate(tx.outputs))
            raws.append(encode_transaction(tx))
            sent.append(raws[-1])
            if isinstance(tx, Transfer):
                sent_transfers.append(raws[-1])
        history.blocks.append((SCENARIO.time_in(1 + block), raws))
    return history


def _run(url: str, history: History, unspent_cache: int | None = None) -> Ledger:
    cache = history.unspent_cache if unspent_cache is None else unspent_cache
    ledger = Ledger(Store(url), SCENARIO.genesis, SCENARIO.sequencer, cache)
    for time, raws in history.blocks:
        ledger.append_block(raws, time)
    return ledger


def _totals(assets: list[Asset]) -> tuple[int, dict[str, Counter[int]]]:
    """FA total, and per kind the power in every interval, by plain enumeration."""
    fa = 0
    power: dict[str, Counter[int]] = {"EPA": Counter(), "ECA": Counter()}
    for asset in assets:
        if isinstance(asset, Fa):
            fa += asset.amount
        else:
            for t in range(asset.start, asset.end + 1):
                power[asset.kind][t] += asset.power
    return fa, {k: +v for k, v in power.items()}


@PROPERTY_SETTINGS
@given(history=histories())
def test_transfers_never_create_or_destroy_assets_and_every_accepted_tx_verifies(
    store_factory: Callable[[], str], history: History
) -> None:
    ledger = _run(store_factory(), history)
    store = ledger.store
    head = store.head()
    size = 0 if head is None else head.header.tree_size
    bodies = [decode_transaction(t.body).tx for t in store.transactions_in(0, size)]
    issued = [o.asset for tx in bodies if isinstance(tx, Issue) for o in tx.outputs]
    event(f"accepted transfers: {min(3, sum(isinstance(tx, Transfer) for tx in bodies))}+")
    unspent = [s.output.asset for k in OWNERS for s in store.unspent(k.public_key)]
    assert _totals(unspent) == _totals(issued)
    for tx in bodies:
        message = b"PETRA-v1/" + tx.type.encode() + b"\x00" + txid(tx)
        if isinstance(tx, Transfer):
            assert tx.signatures
            for s in tx.signatures:
                VerifyKey(s.public_key).verify(message, s.signature)
        elif isinstance(tx, Issue):
            VerifyKey(METER.public_key).verify(message, tx.signature)
        else:
            assert isinstance(tx, Regulate)
            VerifyKey(SCENARIO.dso.public_key).verify(message, tx.signature)
    store.close()


@PROPERTY_SETTINGS
@given(history=histories())
def test_replaying_the_same_input_gives_the_same_blocks_and_roots(
    store_factory: Callable[[], str], history: History
) -> None:
    """The same blocks, whichever of a transfer's inputs the ledger finds in its cache of
    unspent outputs and whichever it reads from the store."""
    first = _run(store_factory(), history)
    second = _run(store_factory(), history, unspent_cache=0)  # every input from the store
    heads = [
        (h.header.height, h.header.tree_size, h.header.root, h.header.hash)
        for h in first.store.heads()
    ]
    again = [
        (h.header.height, h.header.tree_size, h.header.root, h.header.hash)
        for h in second.store.heads()
    ]
    assert heads == again
    for ledger in (first, second):
        ledger.store.close()


@PROPERTY_SETTINGS
@given(history=histories())
def test_a_transaction_is_a_duplicate_exactly_when_it_was_accepted_before(
    store_factory: Callable[[], str], history: History
) -> None:
    """Whatever spends what, in whichever block: bytes accepted once are refused `duplicate`
    ever after (a transfer is found through what spent its first input), and nothing that was
    never accepted is."""
    ledger = Ledger(
        Store(store_factory()), SCENARIO.genesis, SCENARIO.sequencer, history.unspent_cache
    )
    accepted: set[bytes] = set()
    for time, raws in history.blocks:
        result = ledger.append_block(raws, time)
        for raw, outcome in zip(raws, result.outcomes, strict=True):
            tx = decode_transaction(raw)
            if tx.txid in accepted:
                event(f"duplicate {tx.tx.type}")
                assert outcome.code is Code.DUPLICATE, (tx.tx.type, outcome)
            else:
                assert outcome.code is not Code.DUPLICATE, (tx.tx.type, outcome)
            if outcome.accepted:
                accepted.add(tx.txid)
    ledger.store.close()


@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 10), st.integers(1, 100)), max_size=20),
    st.integers(0, 50),
    st.integers(0, 10),
)
def test_step_function_matches_a_plain_count(
    adds: list[tuple[int, int, int]], start: int, length: int
) -> None:
    steps = StepFunction()
    plain: Counter[int] = Counter()
    for first, span, power in adds:
        steps.add(first, first + span, power)
        for t in range(first, first + span + 1):
            plain[t] += power
    end = start + length
    pieces = list(steps.pieces(start, end))
    assert pieces[0][0] == start and pieces[-1][1] == end
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(pieces))
    for first, last, value in pieces:
        assert all(plain[t] == value for t in range(first, last + 1))
    assert all(steps.value_at(t) == plain[t] for t in range(0, 60))
