"""An in-memory bulletin board for `mixer/protocol.py`: a pool of peers run after run the way the
coordinator runs it (docs/mixer-api.md), with delivery schedules and malicious peers.

The board gives every message a place in one order and relays it to its recipients (a shuffle
to the next peer only); each peer reads its own events in board order, a `start` first. A
schedule picks which peer reads next, so the interleaving varies while each peer's order is the
board's. When nobody has anything left to read, the coordinator settles the run: a timeout
names `owed(...)`, every blame relayed ends it in blame, every signature relayed lands it (and
the ledger's word names double spenders). The next run is the pool without the culprits, with
fresh peers and fresh outputs.
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nacl.public
from hypothesis import strategies as st

from assets import Fa, Keypair, Outpoint, verify
from assets.codec import txid
from assets.signing import signing_message
from mixer.protocol import (
    ADDRESS_BYTES,
    BadMessage,
    Blamed,
    Done,
    Input,
    Kind,
    Message,
    Outcome,
    Peer,
    Phase,
    Session,
    decode_message,
    owed,
    seal,
    sign_message,
    verdict,
)

CHAIN = b"c" * 32
POOL = "pool"
ASSET = Fa(1000)
KIND_ORDER = (Kind.ANNOUNCE, Kind.SHUFFLE, Kind.FINAL, Kind.CONFIRM, Kind.SIGN, Kind.BLAME)

# ----------------------------------------------------------------------------- adversaries


class Adversary(Peer):
    """A peer that may deviate from the protocol. It never sends the kinds in `mute` (silence
    past the timeout) and decides in `route` what goes to whom; `misbehaved` is set once it
    actually deviated in this run."""

    def __init__(
        self,
        session: Session,
        key: Keypair,
        output: bytes,
        *,
        rng: random.Random | None = None,
        mute: frozenset[Kind] = frozenset(),
    ) -> None:
        super().__init__(session, key, output, rng=rng)
        self.mute = mute
        self.misbehaved = False

    def route(self, message: Message, recipients: list[int]) -> list[tuple[Message, list[int]]]:
        """The messages to post for `message` and their recipients (by default: as asked)."""
        if message.kind in self.mute:
            self.misbehaved = True
            return []
        return [(message, recipients)]

    def later_eks(self) -> list[bytes]:
        """The keys an onion made at this peer's step is sealed for, innermost first."""
        return [self._eks[n] for n in range(self.index + 1, self.session.size)][::-1]

    def send_shuffled(self, items: list[bytes]) -> list[Message]:
        """Send `items` shuffled as this peer's step (a shuffle, or the final list if last)."""
        self.rng.shuffle(items)
        if self.index < self.session.size - 1:
            return self._own(Kind.SHUFFLE, {"ciphertexts": [c.hex() for c in items]})
        return self._own(Kind.FINAL, {"outputs": [a.hex() for a in items]})


def silent_from(kind: Kind) -> frozenset[Kind]:
    """Every kind from `kind` on: a peer that stops talking at that step."""
    return frozenset(KIND_ORDER[KIND_ORDER.index(kind) :])


class DropsCiphertext(Adversary):
    """Drops one ciphertext it got: replaced by an onion of its own (`replace`, so the count is
    right and an output goes missing) or not (one ciphertext too few)."""

    def __init__(self, *args: Any, replace: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replace = replace

    def _shuffle(self, peeled: list[bytes]) -> list[Message]:
        if not peeled:
            return super()._shuffle(peeled)
        self.misbehaved = True
        kept = list(peeled)
        victim = self.rng.randrange(len(kept))
        if self.replace:
            kept[victim] = seal(os.urandom(ADDRESS_BYTES), self.later_eks())
            return super()._shuffle(kept)
        del kept[victim]
        return self.send_shuffled([*kept, seal(self.output, self.later_eks())])


class BadOnion(Adversary):
    """Makes an onion that does not open: random bytes, a layer missing, or an inner content
    that is not an address (`flaw`). The last peer makes no onion, so it stays honest."""

    def __init__(self, *args: Any, flaw: str = "garbage", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flaw = flaw

    def _shuffle(self, peeled: list[bytes]) -> list[Message]:
        later = self.later_eks()
        if not later:
            return super()._shuffle(peeled)
        self.misbehaved = True
        if self.flaw == "garbage":
            onion = os.urandom(len(seal(self.output, later)))
        elif self.flaw == "layer":
            onion = seal(self.output, later[:-1])
        else:
            onion = seal(self.output[:-1], later)
        return self.send_shuffled([*peeled, onion])


class RepeatsCiphertext(Adversary):
    """Sends one of its ciphertexts twice in place of another (the last peer: one output twice
    in the final list)."""

    def _shuffle(self, peeled: list[bytes]) -> list[Message]:
        items = [*peeled, seal(self.output, self.later_eks())]
        if len(items) < 2:
            return super()._shuffle(peeled)
        self.misbehaved = True
        self.rng.shuffle(items)
        items[0] = items[1]
        return self.send_shuffled(items)


class Equivocates(Adversary):
    """Signs two versions of its message of `kind` and sends one to some peers, the other to
    the rest (both to its only recipient, if it has one)."""

    def __init__(self, *args: Any, kind: Kind = Kind.ANNOUNCE, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kind = kind

    def route(self, message: Message, recipients: list[int]) -> list[tuple[Message, list[int]]]:
        if message.kind is not self.kind or not recipients or message.kind in self.mute:
            return super().route(message, recipients)
        self.misbehaved = True
        other = sign_message(
            self.session, self.index, message.kind, self.other_body(message), self.key
        )
        if len(recipients) == 1:
            return [(message, recipients), (other, recipients)]
        split = self.rng.randrange(1, len(recipients))
        return [(message, recipients[:split]), (other, recipients[split:])]

    def other_body(self, message: Message) -> dict[str, Any]:
        body = dict(message.body)
        if message.kind is Kind.ANNOUNCE:
            body["ek"] = bytes(nacl.public.PrivateKey.generate().public_key).hex()
        elif message.kind is Kind.FINAL:
            body["outputs"] = body["outputs"][::-1]
        elif message.kind is Kind.CONFIRM:
            body["digest"] = os.urandom(32).hex()
        elif message.kind is Kind.BLAME:
            body["reason"] = body["reason"] + ", said otherwise"
        else:
            raise ValueError(f"no second version of a {message.kind} message")
        return body


class BadSignature(Adversary):
    """Signs something other than the transfer: random bytes, or the transfer with another
    output order (`of`)."""

    def __init__(self, *args: Any, of: str = "noise", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.of = of

    def _own(self, kind: Kind, body: Mapping[str, Any]) -> list[Message]:
        if kind is Kind.SIGN:
            self.misbehaved = True
            if self.of == "noise":
                signed = os.urandom(40)
            else:
                assert self._outputs is not None
                other = self.session.transfer(self._outputs[::-1])
                signed = signing_message("transfer", txid(other))
            body = {"signature": self.key.sign(signed).hex()}
        return super()._own(kind, body)


class FalseAccuser(Adversary):
    """Blames for nothing right after it sends its message of `at` (SHUFFLE: its shuffle step,
    the final list if it is last)."""

    def __init__(self, *args: Any, at: Kind = Kind.ANNOUNCE, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at = at

    def _own(self, kind: Kind, body: Mapping[str, Any]) -> list[Message]:
        out = super()._own(kind, body)
        step = Kind.SHUFFLE if kind is Kind.FINAL else kind
        if step is self.at and self.outcome is None and self.phase is not Phase.BLAME:
            self.misbehaved = True
            out.extend(self._blame("somebody cheated, I say"))
        return out


class WithholdsShuffles(Adversary):
    """Leaves every shuffle message out of the evidence of its blame."""

    def _own(self, kind: Kind, body: Mapping[str, Any]) -> list[Message]:
        if kind is Kind.BLAME:
            kept = [w for w in body["evidence"] if w["kind"] != str(Kind.SHUFFLE)]
            if len(kept) != len(body["evidence"]):
                self.misbehaved = True
            body = {**body, "evidence": kept}
        return super()._own(kind, body)


# ----------------------------------------------------------------------------- the pool

Make = Callable[..., Peer]  # (session, key, output, rng=...) -> a peer


@dataclass
class Member:
    """One participant of the pool: its input key, how it behaves, whether it double spends."""

    key: Keypair
    input: Input
    make: Make = Peer
    spends: bool = False  # its input is spent elsewhere: the ledger refuses the transfer

    @property
    def honest(self) -> bool:
        return self.make is Peer and not self.spends


def members(count: int) -> list[Member]:
    """`count` honest members with inputs of one denomination, in peer order."""
    keys = [Keypair.generate() for _ in range(count)]
    found = [
        Member(k, Input(Outpoint(os.urandom(32), n % 3), k.public_key)) for n, k in enumerate(keys)
    ]
    order = Session.of(CHAIN, POOL, 0, ASSET, [m.input for m in found]).peers
    return sorted(found, key=lambda m: order.index(m.input))


@dataclass
class Run:
    """One run of the pool: its peers by index, what the board relayed, and how it ended."""

    session: Session
    peers: dict[int, Peer]
    members: dict[int, Member]
    relayed: list[Message] = field(default_factory=list)
    delivered: dict[int, list[Message]] = field(default_factory=dict)
    rejected: list[BadMessage] = field(default_factory=list)
    settled_by: str = ""
    outcome: Outcome | None = None  # the honest peers' common outcome

    def honest(self) -> list[Peer]:
        return [p for n, p in self.peers.items() if self.members[n].honest]

    def misbehaved(self) -> set[int]:
        """The indexes of the peers that deviated in this run."""
        return {
            n
            for n, p in self.peers.items()
            if (isinstance(p, Adversary) and p.misbehaved)
            or (self.members[n].spends and isinstance(self.outcome, Blamed))
        }


class Board:
    """The coordinator's relay for one run; `schedule` picks who reads next (None: in turn)."""

    def __init__(self, run: Run, schedule: random.Random | None) -> None:
        self.run = run
        self.schedule = schedule
        self.inbox: dict[int, deque[Message | None]] = {n: deque([None]) for n in run.peers}

    def post(self, peer: Peer, messages: Sequence[Message]) -> None:
        session = self.run.session
        for message in messages:
            everyone = [n for n in range(session.size) if n != peer.index]
            if message.kind is Kind.SHUFFLE:
                everyone = [peer.index + 1] if peer.index + 1 < session.size else []
            routes = (
                peer.route(message, everyone)
                if isinstance(peer, Adversary)
                else [(message, everyone)]
            )
            for sent, recipients in routes:
                try:
                    relayed = decode_message(sent.encode(), session)
                except BadMessage as bad:
                    self.run.rejected.append(bad)
                    continue
                if relayed.kind is Kind.SHUFFLE:
                    recipients = [n for n in recipients if n == relayed.sender + 1]
                elif relayed.kind is Kind.BLAME:  # as the coordinator does: blames go to all
                    recipients = [n for n in range(session.size) if n != relayed.sender]
                self.run.relayed.append(relayed)
                for n in recipients:
                    self.inbox[n].append(relayed)

    def deliver(self) -> None:
        """Until nobody has anything left to read."""
        while ready := [n for n, box in self.inbox.items() if box]:
            n = ready[0] if self.schedule is None else self.schedule.choice(ready)
            event = self.inbox[n].popleft()
            peer = self.run.peers[n]
            if event is None:
                self.post(peer, peer.start())
                continue
            self.run.delivered.setdefault(n, []).append(event)
            self.post(peer, peer.receive(decode_message(event.encode(), self.run.session)))


class Stuck(AssertionError):
    """The board went quiet with honest peers waiting and nobody owing anything."""


def settle(run: Run) -> None:
    """The coordinator's end of a quiet run: a timeout, a verdict, or a landed transfer."""
    session = run.session
    waiting = owed(session, run.relayed)
    blamers = {m.sender for m in run.relayed if m.kind is Kind.BLAME}
    signers = {m.sender for m in run.relayed if m.kind is Kind.SIGN}
    if waiting:
        run.settled_by = f"timeout {sorted(waiting)}"
        for peer in run.peers.values():
            peer.silent(waiting)
    elif len(blamers) == session.size:
        run.settled_by = "blame"
    elif len(signers) == session.size:
        run.settled_by = "landed"
        spenders = [n for n, m in run.members.items() if m.spends]
        if spenders:
            run.settled_by = f"spent {spenders}"
            for peer in run.peers.values():
                peer.inputs_spent(spenders)
    outcomes = {n: p.outcome for n, p in run.peers.items() if run.members[n].honest}
    if any(o is None for o in outcomes.values()):
        raise Stuck(f"honest peers without an outcome after {run.settled_by!r}: {outcomes}")
    distinct = {_outcome_key(o) for o in outcomes.values() if o is not None}
    assert len(distinct) <= 1, f"honest peers disagree: {outcomes}"
    if outcomes:
        run.outcome = next(iter(outcomes.values()))
    if run.settled_by == "blame":
        first: dict[int, Message] = {}
        for m in run.relayed:
            if m.kind is Kind.BLAME:
                first.setdefault(m.sender, m)
        coordinator = verdict(session, list(first.values()))
        if isinstance(run.outcome, Blamed):
            assert dict(run.outcome.culprits) == coordinator, "the coordinator disagrees"


def _outcome_key(outcome: Outcome | None) -> object:
    if isinstance(outcome, Blamed):
        return ("blamed", tuple(sorted(outcome.culprits.items())))
    return ("done", outcome.transfer if outcome is not None else None)


def run_pool(
    pool: Sequence[Member],
    schedule: random.Random | None = None,
    max_runs: int | None = None,
) -> list[Run]:
    """Every run of `pool` until one lands or fewer than two peers remain."""
    staying = list(pool)
    runs: list[Run] = []
    number = 0
    limit = max_runs if max_runs is not None else len(pool) + 2
    while len(staying) >= 2:
        assert number < limit, f"no end after {number} runs"
        session = Session.of(CHAIN, POOL, number, ASSET, [m.input for m in staying])
        by_index = {session.index_of(m.key.public_key): m for m in staying}
        peers = {
            n: m.make(
                session,
                m.key,
                os.urandom(ADDRESS_BYTES),
                rng=random.Random(schedule.random()) if schedule is not None else None,
            )
            for n, m in by_index.items()
        }
        run = Run(session, peers, by_index)
        runs.append(run)
        Board(run, schedule).deliver()
        settle(run)
        if isinstance(run.outcome, Done) or run.outcome is None:
            break
        culprits = set(run.outcome.culprits)
        assert culprits, "a run ended in blame with nobody to blame"
        staying = [m for n, m in by_index.items() if n not in culprits]
        number += 1
    return runs


def check_pool(
    pool: Sequence[Member], runs: Sequence[Run], every_misbehaver_named: bool = False
) -> None:
    """What must hold whatever the malicious peers did: no honest peer is ever named, every
    run that ended in blame names a misbehaver, and while two honest peers remain they finish
    with one transfer of the remaining inputs to outputs including theirs."""
    named: list[set[bytes]] = []
    for run in runs:
        if isinstance(run.outcome, Blamed):
            culprits = {run.members[n].key.public_key for n in run.outcome.culprits}
            honest = {
                run.members[n].key.public_key for n in run.outcome.culprits if run.members[n].honest
            }
            assert not honest, f"honest peers named: {run.outcome.culprits} ({run.settled_by})"
        else:
            culprits = set()
        named.append(culprits)
    for number, run in enumerate(runs):
        misbehaved = run.misbehaved()
        if isinstance(run.outcome, Blamed) and misbehaved:
            assert misbehaved & set(run.outcome.culprits), f"run {number}: no misbehaver named"
        # A misbehaver of a run that ended in blame may go free when another's fault stopped
        # the replay first (checked each time with `every_misbehaver_named`); one of a run
        # that still ended with the signed transfer did no harm (a blame once it was whole).
        caught = set().union(*named[number:])
        for n in misbehaved:
            if every_misbehaver_named and isinstance(run.outcome, Blamed):
                key = run.members[n].key.public_key
                assert key in caught, f"run {number}: peer {n} misbehaved and was never named"
    if sum(m.honest for m in pool) < 2:
        return
    last = runs[-1]
    assert isinstance(last.outcome, Done), f"the honest peers did not finish: {last.outcome}"
    transfer = last.outcome.transfer
    session = last.session
    assert transfer.inputs == tuple(p.outpoint for p in session.peers)
    addresses = [o.address for o in transfer.outputs]
    assert len(set(addresses)) == session.size == len(addresses)
    for peer in last.honest():
        assert peer.output in addresses
    message = signing_message("transfer", txid(transfer))
    assert [s.public_key for s in transfer.signatures] == sorted(p.owner for p in session.peers)
    assert all(verify(s.public_key, message, s.signature) for s in transfer.signatures)


def malicious_pool(
    count: int, bad: Mapping[int, Make], spends: frozenset[int] = frozenset()
) -> list[Member]:
    """`count` members in peer order; those in `bad` are made by their factory."""
    found = members(count)
    for n, make in bad.items():
        found[n].make = make
    for n in spends:
        found[n].spends = True
    return found


def schedules() -> st.SearchStrategy[random.Random]:
    """A delivery schedule: a seeded rng (seeded, so the draws do not depend on the run)."""
    return st.integers(0, 2**32 - 1).map(random.Random)
