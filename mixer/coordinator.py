"""The mixer's coordinator (DESIGN.md section 8, docs/mixer-api.md): a bulletin board that forms
pools of peers with equal denominations, relays their signed CoinShuffle messages
(`mixer.protocol`), enforces the protocol's timeouts and submits the finished transfer.

Framework-free and thread-safe: `mixer.api` serves it over HTTP, awaits its long polls on the
event loop (`mixer.polls`) and calls `tick` from a background thread. It learns no link
between an input and an output (the shuffle is sealed for the peers' ephemeral keys), keeps
pools in memory only, forgets each (its events included) `forget_s` after it ends, and logs
only pool ids, sizes, runs and phases.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any, Protocol

import orjson

from assets import (
    Asset,
    Code,
    Outpoint,
    Rejected,
    Transfer,
    canonical_json,
    encode_transaction,
    txid,
    verify,
)
from assets.codec import MAX_INT, asset_from_wire, asset_to_wire
from ledger import HeadWatch
from ledger.client import LedgerClient, LedgerClientError, LedgerRejected, Submitted
from mixer import protocol
from mixer.auth import FRESH_S, NONCE_BYTES, join_message, poll_message
from mixer.metrics import MixerMetrics
from mixer.protocol import BadMessage, Input, Kind, Message, Phase, Session, decode_message
from service.metrics import new_registry

log = logging.getLogger("petra.mixer")

MAX_WAIT_S = 30.0  # the longest long poll, s
DEFAULT_WAIT_S = 20.0
POLLS_PER_PEER = 2  # long polls one peer may hold open in one pool at once
READS_PER_WINDOW = 2000  # event reads of one peer in one pool within 2 FRESH_S (nonces kept)
MAX_EVENTS = 1000  # events in one answer to a long poll
GATHERED = (Kind.ANNOUNCE, Kind.CONFIRM, Kind.SIGN, Kind.BLAME)  # one from each peer
MAX_VERSIONS = 2  # distinct versions of one peer's message of one kind: two prove equivocation
SUBMIT_ATTEMPTS = 10  # submissions of a signed transfer while the ledger is unavailable
RETRY_S = 1.0  # between them, s
FIRST_RUN = 1


class MixerError(Exception):
    """A refusal with an HTTP status, a stable code and a sentence a person can act on;
    `retry_after`: seconds after which the same request may succeed (back-pressure)."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after


class Ledger(Protocol):
    """The ledger calls the coordinator makes (`ledger.client.LedgerClient` has them)."""

    def output(self, txid: bytes, index: int) -> dict[str, Any] | None: ...

    def unspent(self, address: bytes) -> list[dict[str, Any]]: ...

    def transaction(self, txid: bytes) -> dict[str, Any] | None: ...

    def submit(self, raw: bytes) -> Submitted: ...


class PoolState(StrEnum):
    FORMING = "forming"
    RUNNING = "running"
    LANDED = "landed"
    FAILED = "failed"


ENDED = frozenset({PoolState.LANDED, PoolState.FAILED})


# ----------------------------------------------------------------------------- joining


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A signed request to put `input` (holding `asset`) into a pool; `at` in unix s."""

    asset: Asset
    input: Input
    at: int
    signature: bytes


def parse_join(wire: Any) -> JoinRequest:
    """The join request in `wire` (parsed JSON), its signature checked: 400 `malformed` or 401
    `bad_signature` otherwise. Nothing here asks the clock or the ledger."""
    if not isinstance(wire, dict) or set(wire) != {"v", "asset", "input", "at", "signature"}:
        raise _malformed("a join request has exactly v, asset, input, at, signature")
    if type(wire["v"]) is not int or wire["v"] != 1:
        raise _malformed("v must be 1")
    try:
        asset = asset_from_wire(wire["asset"])
    except Rejected as exc:
        raise _malformed(exc.message) from None
    given = wire["input"]
    if not isinstance(given, dict) or set(given) != {"tx", "index", "owner"}:
        raise _malformed("input has exactly tx, index, owner")
    index = given["index"]
    if type(index) is not int or not 0 <= index <= MAX_INT:
        raise _malformed(f"input.index must be an integer from 0 to {MAX_INT}")
    at = wire["at"]
    if type(at) is not int or not 0 <= at <= MAX_INT:
        raise _malformed("at must be a time in unix seconds")
    owner = _hex(given["owner"], 32, "input.owner")
    item = Input(Outpoint(_hex(given["tx"], 32, "input.tx"), index), owner)
    signature = _hex(wire["signature"], 64, "signature")
    unsigned = {k: v for k, v in wire.items() if k != "signature"}
    if not verify(owner, join_message(unsigned), signature):
        raise MixerError(401, "bad_signature", "the join request is not signed by input.owner")
    return JoinRequest(asset, item, at, signature)


def _malformed(message: str) -> MixerError:
    return MixerError(400, "malformed", message)


def _hex(value: Any, size: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value) if type(value) is str and len(value) == 2 * size else b""
    except ValueError:
        raw = b""
    if len(raw) != size or raw.hex() != value:
        raise _malformed(f"{what} must be {2 * size} lowercase hex digits")
    return raw


def _envelope(wire: Any) -> tuple[Mapping[str, Any], list[int] | None]:
    """The message and its `to` list from a POST .../messages body."""
    if not isinstance(wire, dict) or "message" not in wire or not set(wire) <= {"message", "to"}:
        raise _malformed('the body is {"message": {...}, "to": null or [peer indexes]}')
    message, to = wire["message"], wire.get("to")
    if not isinstance(message, dict):
        raise _malformed("message must be an object")
    if to is not None and (
        not isinstance(to, list)
        or len(to) > protocol.MAX_PEERS
        or any(type(n) is not int for n in to)
    ):
        raise _malformed(f"to must be null or a list of at most {protocol.MAX_PEERS} indexes")
    return message, to


@dataclass(frozen=True, slots=True)
class PollRequest:
    """A signed read of a pool's events: `peer`'s events after seq `after`, waiting up to
    `wait_s` seconds; signed at unix second `at` over the pool, peer, after, at and `nonce`."""

    peer: bytes
    after: int
    wait_s: float
    at: int
    nonce: bytes
    signature: bytes


POLL_QUERY = frozenset({"peer", "after", "wait", "at", "nonce", "signature"})


def parse_poll(query: Mapping[str, str]) -> PollRequest:
    """The read in the query of `GET /v1/pools/{pool}/events`: 400 `malformed` for a field
    that is not one, 401 `unauthenticated` without its signature. Nothing here asks the
    clock or checks the signature (`Coordinator.open_poll` does)."""
    if not set(query) <= POLL_QUERY:
        raise _malformed(f"the query has only {', '.join(sorted(POLL_QUERY))}")
    peer = _hex(query.get("peer"), 32, "peer")
    after = _seq(query.get("after", "0"), "after")
    wait_s = _seconds(query.get("wait"))
    if not {"at", "nonce", "signature"} <= set(query):
        raise MixerError(
            401,
            "unauthenticated",
            "sign the read: at, nonce and signature by the peer's key (docs/mixer-api.md)",
        )
    at = _seq(query["at"], "at")
    nonce = _hex(query["nonce"], NONCE_BYTES, "nonce")
    signature = _hex(query["signature"], 64, "signature")
    return PollRequest(peer, after, wait_s, at, nonce, signature)


KINDS = ("EPA", "ECA", "FA")


def parse_forming(query: Mapping[str, str]) -> str | None:
    """The asset kind the query of `GET /v1/forming` asks about (None: every kind); 400
    `malformed` for another parameter or kind."""
    if not set(query) <= {"kind"}:
        raise _malformed("the query has only kind")
    kind = query.get("kind")
    if kind is not None and kind not in KINDS:
        raise _malformed(f"kind is one of {', '.join(KINDS)}")
    return kind


def _seq(value: str, what: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 16:
        raise _malformed(f"{what} must be a whole number from 0")
    return int(value)


def _seconds(value: str | None) -> float:
    """A long poll's wait in seconds: DEFAULT_WAIT_S unless given, at most MAX_WAIT_S."""
    if value is None:
        return DEFAULT_WAIT_S
    try:
        wait = float(value) if len(value) <= 20 else -1.0
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= 10**9:  # refuses NaN and infinities too
        raise _malformed("wait must be a number of seconds from 0")
    return min(wait, MAX_WAIT_S)


# ----------------------------------------------------------------------------- pools


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a pool: `wire` as answered (with `seq` and `type`), for `audience`."""

    seq: int
    audience: frozenset[bytes] | None  # the owners it is for; None: every peer that joined
    wire: dict[str, Any]
    encoded: bytes = b""  # `wire` as compact JSON, made once for every peer it goes to

    def __post_init__(self) -> None:
        if not self.encoded:
            object.__setattr__(self, "encoded", _compact_json(self.wire))


def _compact_json(wire: Mapping[str, Any]) -> bytes:
    """`wire` as compact JSON; orjson for speed, the standard encoder for what it refuses (an
    integer beyond 64 bits in a blame's evidence)."""
    try:
        return orjson.dumps(wire)
    except TypeError:
        return json.dumps(wire, separators=(",", ":")).encode()


@dataclass(eq=False)
class Run:
    """The coordinator's bookkeeping of one run, dropped when the run ends."""

    session: Session
    owed: frozenset[int]
    owed_since: float
    relayed: dict[bytes, Message] = field(default_factory=dict)  # by message id, in order
    reached: dict[bytes, tuple[set[bytes], int]] = field(default_factory=dict)  # id -> owners, seq
    complete: set[bytes] = field(default_factory=set)  # ids every peer they were for received
    senders: dict[Kind, set[int]] = field(default_factory=dict)  # who sent each kind so far
    transfer: Transfer | None = None  # signed by every peer: its fate is the ledger's
    settling: bool = False  # a thread is submitting `transfer`
    attempts: int = 0
    retry_at: float = 0.0

    def heard(self) -> list[Message]:
        """Messages every peer they were meant for received (all others, but for a shuffle):
        what a peer told only some peers is owed to the rest."""
        return [
            m for key, m in self.relayed.items() if m.kind is Kind.SHUFFLE or key in self.complete
        ]

    def reach(self, key: bytes, message: Message, reached: set[bytes], seq: int) -> None:
        """Note that the message `key` reached the owners `reached`, in event `seq`."""
        self.reached[key] = (reached, seq)
        if (
            key not in self.complete
            and len(reached | {self.session.peers[message.sender].owner}) == self.session.size
        ):
            self.complete.add(key)


@dataclass(eq=False)
class Pool:
    id: str
    asset: Asset
    denomination: bytes
    starts_by: float
    joined: list[Input] = field(default_factory=list)
    state: PoolState = PoolState.FORMING
    session: Session | None = None  # the latest run's
    run: Run | None = None  # the live run's bookkeeping
    owners: set[bytes] = field(default_factory=set)  # the owners of `joined`
    past: set[str] = field(default_factory=set)  # session ids (hex) of earlier runs
    events: list[Event] = field(default_factory=list)  # event seq n is events[n - 1]
    started_at: float | None = None  # when its first run began (clock s)
    ended_at: float | None = None
    arriving: int = 0  # messages received for the pool and not yet relayed or refused
    watchers: dict[Callable[[], None], bytes] = field(default_factory=dict)  # wake -> owner
    lingering: set[Callable[[], None]] = field(default_factory=set)  # watchers gathering a kind
    polls: dict[bytes, list[float]] = field(default_factory=dict)  # owner -> open polls' ends
    nonces: dict[bytes, dict[bytes, float]] = field(default_factory=dict)  # owner -> until


def phase_of(session: Session, heard: Iterable[Message]) -> Phase:
    """The phase a run is in, from the messages every peer heard."""
    said: dict[Kind, set[int]] = {kind: set() for kind in Kind}
    for message in heard:
        said[message.kind].add(message.sender)
    if said[Kind.BLAME]:
        return Phase.BLAME
    if len(said[Kind.ANNOUNCE]) < session.size:
        return Phase.ANNOUNCE
    if session.size - 1 not in said[Kind.FINAL]:
        return Phase.SHUFFLE
    if len(said[Kind.CONFIRM]) < session.size:
        return Phase.CONFIRM
    return Phase.SIGN


@dataclass(frozen=True, slots=True)
class _Settled:
    """What the ledger made of a run's transfer: landed, some inputs spent, refused, or
    unknown (the ledger was unavailable)."""

    txid: bytes | None = None
    height: int | None = None
    spent: tuple[int, ...] | None = None
    refused: str | None = None


@dataclass(frozen=True, slots=True)
class EventsView:
    """A peer's events after some seq: `found`, the seq to read after next time, whether
    more of a kind every peer sends are still to come (`_more_coming`), and whether the
    service is stopping."""

    found: tuple[Event, ...]
    next: int
    more_coming: bool
    closed: bool

    def to_wire(self) -> dict[str, Any]:
        return {"events": [event.wire for event in self.found], "next": self.next}

    def to_json(self) -> bytes:
        """`to_wire` as JSON bytes, from each event's encoding made once."""
        listed = b",".join(event.encoded for event in self.found)
        return b'{"events":[' + listed + b'],"next":' + str(self.next).encode() + b"}"


# ----------------------------------------------------------------------------- the coordinator


class Coordinator:
    """Pools and runs of the mixer on `chain`, checked against and submitted to `ledger`.

    A pool starts with `max_peers` joined, or `start_s` seconds after its first join with at
    least `min_peers`; a step of the protocol waits at most `timeout_s` seconds; an ended pool
    is forgotten `forget_s` seconds after it ended. `clock` gives unix seconds.

    `ledger_watch` asks the ledger its head for readiness and metrics (by default through a
    client of its own when `ledger` is a `LedgerClient`; None: not watched), started and
    stopped by whoever runs the coordinator (`mixer.api`'s lifespan). `registry` holds its
    metrics (`mixer.metrics`).
    """

    def __init__(
        self,
        ledger: Ledger,
        chain: bytes,
        *,
        min_peers: int = 3,
        max_peers: int = 50,
        start_s: float = 30.0,
        timeout_s: float = 10.0,
        forget_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        ledger_watch: HeadWatch | None = None,
    ) -> None:
        if not 2 <= min_peers <= max_peers <= protocol.MAX_PEERS:
            raise ValueError(
                f"need 2 <= min_peers <= max_peers <= {protocol.MAX_PEERS}, "
                f"not {min_peers} and {max_peers}"
            )
        if start_s <= 0 or timeout_s <= 0 or forget_s < 0:
            raise ValueError("start_s and timeout_s must be positive, forget_s not negative")
        self.ledger = ledger
        self.chain = chain
        self.min_peers, self.max_peers = min_peers, max_peers
        self.start_s, self.timeout_s, self.forget_s = start_s, timeout_s, forget_s
        self.clock = clock
        self._lock = threading.Lock()
        self._pools: dict[str, Pool] = {}
        self._forming: dict[bytes, Pool] = {}  # denomination -> the pool it is forming
        self._owners: dict[bytes, str] = {}  # owner -> its pool, while the pool has not ended
        self._inputs: dict[Outpoint, str] = {}  # input -> its pool, the same
        self._seen: dict[bytes, float] = {}  # join signatures -> when they may be forgotten
        self._closed = False
        if ledger_watch is None and isinstance(ledger, LedgerClient):
            ledger_watch = HeadWatch.of_node(ledger.base_url)
        self.ledger_watch = ledger_watch
        self.registry = new_registry()
        self.metrics = MixerMetrics(self.registry, self.pool_counts, ledger_watch)

    def pool_counts(self) -> dict[str, int]:
        """How many pools the coordinator holds in each state (ended ones until forgotten)."""
        with self._lock:
            counts = {str(state): 0 for state in PoolState}
            for pool in self._pools.values():
                counts[str(pool.state)] += 1
            return counts

    def ledger_problem(self) -> str | None:
        """None while the ledger answered its watch lately (or is not watched), else one
        sentence: the readiness check of the ledger. The coordinator keeps no copy of the
        ledger, so it is never behind."""
        watch = self.ledger_watch
        return None if watch is None else watch.problem(watch.height)

    # ------------------------------------------------------------------ joining

    def join(self, wire: Any) -> dict[str, Any]:
        """Put the input of a signed join request (parsed JSON) into the forming pool of its
        denomination: `{"pool", "peers", "starts_by"}` (unix s), or a `MixerError`."""
        request = parse_join(wire)
        now = self.clock()
        if abs(now - request.at) > FRESH_S:
            raise MixerError(
                401, "stale_request", f"at must be within {FRESH_S} s of the coordinator's clock"
            )
        with self._lock:
            self._check_free(request)
        self._check_on_ledger(request)
        with self._lock:
            self._check_free(request)  # again: another join of it may have come meanwhile
            self._seen[request.signature] = now + 2 * FRESH_S
            denomination = canonical_json(asset_to_wire(request.asset))
            pool = self._forming.get(denomination)
            if pool is None:
                pool = Pool(secrets.token_hex(16), request.asset, denomination, now + self.start_s)
                self._pools[pool.id] = pool
                self._forming[denomination] = pool
                log.info("pool %s forming", pool.id)
            pool.joined.append(request.input)
            pool.owners.add(request.input.owner)
            self.metrics.joins.inc()
            self._owners[request.input.owner] = pool.id
            self._inputs[request.input.outpoint] = pool.id
            answer = {
                "pool": pool.id,
                "peers": len(pool.joined),
                "starts_by": math.ceil(pool.starts_by),
            }
            if len(pool.joined) >= self.max_peers:
                self._start_pool(pool, now)
            return answer

    def _check_free(self, request: JoinRequest) -> None:
        if request.signature in self._seen:
            raise MixerError(409, "already_joined", "this join request was taken already")
        if request.input.owner in self._owners or request.input.outpoint in self._inputs:
            raise MixerError(
                409, "already_joined", "the input or its owner is in a pool that has not ended"
            )

    def _check_on_ledger(self, request: JoinRequest) -> None:
        outpoint, owner = request.input.outpoint, request.input.owner
        try:
            found = self.ledger.output(outpoint.txid, outpoint.index)
        except LedgerClientError:
            raise MixerError(503, "ledger_unavailable", "the ledger cannot be read now") from None
        try:
            asset = None if found is None else asset_from_wire(found.get("asset"))
        except Rejected:
            asset = None
        if (
            found is None
            or found.get("address") != owner.hex()
            or asset != request.asset
            or found.get("spent_by") is not None
        ):
            raise MixerError(
                422,
                "not_unspent",
                "the ledger does not show that output unspent at its owner with that asset",
            )

    # ------------------------------------------------------------------ following

    def open_poll(self, pool_id: str, request: PollRequest, wake: Callable[[], None]) -> float:
        """Admit a signed long poll of the pool; its deadline (`time.monotonic()` s). Until
        `close_poll`, `wake` is called on each event for the peer and when the service stops,
        from whichever thread emits it and under the coordinator's lock: it must only
        schedule. Refused: 404 `not_found`, 401 `stale_request`, `bad_signature` or
        `replayed_request`, 403 `not_a_peer`, 429 `too_many_polls` (the peer holds
        POLLS_PER_PEER open) or `too_many_reads`, both with `retry_after`."""
        with self._lock:
            self._pool(pool_id)  # that a pool exists is no secret: its state is public
        now = self.clock()
        if abs(now - request.at) > FRESH_S:
            raise MixerError(
                401, "stale_request", f"at must be within {FRESH_S} s of the coordinator's clock"
            )
        signed = poll_message(pool_id, request.peer, request.after, request.at, request.nonce)
        if not verify(request.peer, signed, request.signature):
            raise MixerError(401, "bad_signature", "the read is not signed by peer's key")
        with self._lock:
            pool = self._pool(pool_id)
            if request.peer not in pool.owners:
                raise MixerError(403, "not_a_peer", "peer is not the owner of an input here")
            seen = pool.nonces.setdefault(request.peer, {})
            if request.nonce in seen:
                raise MixerError(401, "replayed_request", "this signed read was made already")
            if len(seen) >= READS_PER_WINDOW:
                raise MixerError(
                    429,
                    "too_many_reads",
                    f"a peer reads a pool at most {READS_PER_WINDOW} times in {2 * FRESH_S} s",
                    retry_after=max(1, math.ceil(min(seen.values()) - now)),
                )
            started = time.monotonic()
            open_ends = pool.polls.setdefault(request.peer, [])
            if len(open_ends) >= POLLS_PER_PEER:
                raise MixerError(
                    429,
                    "too_many_polls",
                    f"this peer has {POLLS_PER_PEER} long polls of the pool open already: "
                    "wait for one to be answered",
                    retry_after=max(1, math.ceil(min(open_ends) - started)),
                )
            seen[request.nonce] = request.at + FRESH_S + 1  # stale from then on: refused anyway
            deadline = started + min(request.wait_s, MAX_WAIT_S)
            open_ends.append(deadline)
            pool.watchers[wake] = request.peer
            return deadline

    def close_poll(self, pool_id: str, peer: bytes, wake: Callable[[], None], ends: float) -> None:
        """The poll `open_poll` admitted (with deadline `ends`) is answered or abandoned."""
        with self._lock:
            pool = self._pools.get(pool_id)
            if pool is None:
                return
            pool.watchers.pop(wake, None)
            pool.lingering.discard(wake)
            open_ends = pool.polls.get(peer, [])
            if ends in open_ends:
                open_ends.remove(ends)
            if not open_ends:
                pool.polls.pop(peer, None)

    def linger(self, pool_id: str, wake: Callable[[], None]) -> None:
        """The open poll of `wake` holds messages of kinds every peer sends and waits for more
        of them: from now on it is woken only by an event that could end its wait (the last
        message of a gathered kind, or an event of any other type), not by each one."""
        with self._lock:
            pool = self._pools.get(pool_id)
            if pool is not None and wake in pool.watchers:
                pool.lingering.add(wake)

    def events(self, pool_id: str, peer: bytes, after: int) -> dict[str, Any]:
        """`{"events", "next"}`: the events of the pool for `peer` after seq `after`, now."""
        return self.events_view(pool_id, peer, after).to_wire()

    def events_view(self, pool_id: str, peer: bytes, after: int) -> EventsView:
        """The events of the pool for `peer` after seq `after` (at most MAX_EVENTS), now;
        404 `not_found` or 403 `not_a_peer`. Never waits: `mixer.polls` awaits the next."""
        with self._lock:
            pool = self._pool(pool_id)
            if peer not in pool.owners:
                raise MixerError(403, "not_a_peer", "peer is not the owner of an input here")
            found: list[Event] = []
            last = max(after, len(pool.events))
            for event in pool.events[after:]:
                if event.audience is None or peer in event.audience:
                    found.append(event)
                    if len(found) == MAX_EVENTS:
                        last = event.seq
                        break
            more = bool(found) and len(found) < MAX_EVENTS and _more_coming(pool, found)
            return EventsView(tuple(found), last, more, self._closed)

    def pool_state(self, pool_id: str) -> dict[str, Any]:
        """The pool's counts and phase: nothing about who is in it."""
        with self._lock:
            pool = self._pool(pool_id)
            session = pool.session
            if pool.run is not None:
                phase: str | None = str(phase_of(pool.run.session, pool.run.heard()))
            else:
                phase = str(Phase.DONE) if pool.state is PoolState.LANDED else None
            return {
                "pool": pool.id,
                "state": str(pool.state),
                "peers": len(pool.joined) if session is None else session.size,
                "run": 0 if session is None else session.run,
                "phase": phase,
                "asset": asset_to_wire(pool.asset),
            }

    def forming(self, kind: str | None = None) -> dict[str, Any]:
        """The pools forming now (of assets of `kind` if given): each one's denomination, the
        peers waiting in it and when it starts at the latest (unix s), with what a pool needs
        to start (`min_peers` by its deadline, `start_s` s after its first join). Counts
        only: no pool id, no input."""
        with self._lock:
            pools = [
                {
                    "asset": asset_to_wire(pool.asset),
                    "peers": len(pool.joined),
                    "starts_by": math.ceil(pool.starts_by),
                }
                for pool in self._forming.values()
                if kind is None or pool.asset.kind == kind
            ]
        return {
            "min_peers": self.min_peers,
            "max_peers": self.max_peers,
            "start_s": self.start_s,
            "pools": pools,
        }

    def _pool(self, pool_id: str) -> Pool:
        pool = self._pools.get(pool_id)
        if pool is None:
            raise MixerError(404, "not_found", "no such pool (or it ended a while ago)")
        return pool

    # ------------------------------------------------------------------ relaying

    @contextmanager
    def arriving(self, pool_id: str) -> Iterator[None]:
        """While a message for the pool is between its arrival and its relay (read, queued
        for a thread, decoded, checked): a timeout of the pool's run waits for it, up to a
        second `timeout_s`, so that a peer is never named silent for the coordinator's own
        delay in taking what it sent in time."""
        with self._lock:
            pool = self._pools.get(pool_id)
            if pool is not None:
                pool.arriving += 1
        try:
            yield
        finally:
            if pool is not None:
                with self._lock:
                    pool.arriving -= 1

    def post(self, pool_id: str, wire: Any) -> int:
        """Relay the message of a POST .../messages body (parsed JSON) to the peers of the
        pool's current run it is for, and submit the transfer it makes whole; its event's seq."""
        seq, settle = self.relay(pool_id, wire)
        if settle is not None:
            settle()
        return seq

    def relay(self, pool_id: str, wire: Any) -> tuple[int, Callable[[], None] | None]:
        """`post` up to the ledger: the event's seq, and the submission of the transfer the
        message made whole (None if it made none), which blocks on the ledger (an event loop
        runs it in a thread)."""
        message_wire, to = _envelope(wire)
        with self._lock:
            run = self._live_run(self._pool(pool_id), message_wire)
        try:
            message = decode_message(message_wire, run.session)
        except BadMessage as bad:
            raise MixerError(400, "bad_message", bad.reason) from None
        size = run.session.size
        if to is not None and any(not 0 <= n < size for n in to):
            raise _malformed(f"to names peer indexes below {size}")
        if message.kind is Kind.SHUFFLE:
            targets = {message.sender + 1} & set(range(size))
        elif message.kind is Kind.BLAME:
            targets = set(range(size))  # everyone judges the same blames: they go to all
        else:
            targets = set(range(size)) if to is None else set(to)
        audience = {run.session.peers[n].owner for n in targets}
        with self._lock:
            pool = self._pool(pool_id)
            if pool.run is not run:
                raise MixerError(409, "stale_run", "the run this message is of has ended")
            seq = self._relay(pool, run, message, audience)
            settle = self._after_relay(pool, run, message)
        return seq, (partial(self._settle, pool, run) if settle else None)

    def _live_run(self, pool: Pool, message: Mapping[str, Any]) -> Run:
        if pool.state is PoolState.FORMING:
            raise MixerError(409, "stale_run", "the pool has not started a run yet")
        if pool.run is None:
            raise MixerError(409, "stale_run", "the pool has ended")
        session = message.get("session")
        if isinstance(session, str) and session in pool.past:
            raise MixerError(409, "stale_run", "the message is of an earlier run of the pool")
        return pool.run

    def _relay(self, pool: Pool, run: Run, message: Message, audience: set[bytes]) -> int:
        key = protocol.message_id(message)
        known = run.reached.get(key)
        if known is None:
            versions = [
                m
                for m in run.relayed.values()
                if (m.sender, m.kind) == (message.sender, message.kind)
            ]
            if len(versions) >= MAX_VERSIONS:
                raise MixerError(
                    400,
                    "bad_message",
                    f"peer {message.sender} sent {MAX_VERSIONS} {message.kind} messages already",
                )
            run.relayed[key] = message
            run.senders.setdefault(message.kind, set()).add(message.sender)
            known = (set(), 0)
        reached, seq = known
        new = audience - reached
        if new or not seq:
            seq = self._emit(pool, "message", frozenset(new), message=message.to_wire()).seq
        run.reach(key, message, reached | new, seq)
        return seq

    def _after_relay(self, pool: Pool, run: Run, message: Message) -> bool:
        """Act on what was relayed: note who is owed, and end the run when every blame is in
        (the verdict's culprits go) or every signature (settle it: True)."""
        now = self.clock()
        heard = run.heard()
        owed = protocol.owed(run.session, heard)
        if owed != run.owed:
            run.owed, run.owed_since = owed, now
        if run.transfer is not None:
            return False  # signed by everyone: only the ledger decides now
        if message.kind is Kind.SIGN:
            run.transfer = protocol.whole_transfer(run.session, run.relayed.values())
            run.settling = run.transfer is not None
            return run.settling
        if message.kind is Kind.BLAME:
            blames: dict[int, Message] = {}
            for m in heard:
                if m.kind is Kind.BLAME:
                    blames.setdefault(m.sender, m)  # the first, as every peer counts it
            if len(blames) == run.session.size:
                self._on_blames(pool, run, list(blames.values()), now)
        return False

    def _on_blames(self, pool: Pool, run: Run, blames: list[Message], now: float) -> None:
        self.metrics.runs.labels("blamed").inc()
        try:
            culprits = protocol.verdict(run.session, blames)
        except Exception:  # peers' evidence is hostile input: a flaw must not strand the pool
            log.exception("pool %s run %d: the verdict failed", pool.id, run.session.run)
            self._fail(pool, "the blames of the run could not be judged", now)
            return
        log.info(
            "pool %s run %d: blame excluded %d of %d peers",
            pool.id,
            run.session.run,
            len(culprits),
            run.session.size,
        )
        if not culprits:
            self._fail(pool, "every peer blamed, yet the verdict names nobody", now)
        else:
            self._next_run(pool, culprits, now)

    # ------------------------------------------------------------------ the ledger's word

    def _settle(self, pool: Pool, run: Run) -> None:
        """Submit the run's signed transfer (outside the lock) and act on the answer."""
        assert run.transfer is not None
        settled = self._submit(run.session, run.transfer)
        with self._lock:
            if pool.run is not run:
                return
            now = self.clock()
            run.settling = False
            if settled.txid is not None:
                self._emit(
                    pool,
                    "landed",
                    None,
                    run=run.session.run,
                    txid=settled.txid.hex(),
                    height=settled.height,
                )
                log.info(
                    "pool %s run %d landed, %d peers", pool.id, run.session.run, run.session.size
                )
                self.metrics.runs.labels("landed").inc()
                if pool.started_at is not None:
                    self.metrics.round_seconds.observe(max(0.0, now - pool.started_at))
                self._end(pool, PoolState.LANDED, now)
            elif settled.spent:
                self.metrics.runs.labels("spent").inc()
                self._emit(pool, "spent", None, run=run.session.run, peers=list(settled.spent))
                self._next_run(pool, settled.spent, now)
            elif settled.refused is not None:
                self.metrics.runs.labels("refused").inc()
                self._fail(pool, settled.refused, now)
            else:
                run.attempts += 1
                if run.attempts >= SUBMIT_ATTEMPTS:
                    self.metrics.runs.labels("ledger_unavailable").inc()
                    self._fail(pool, "the ledger was unavailable to take the transfer", now)
                else:
                    run.retry_at = now + RETRY_S

    def _submit(self, session: Session, transfer: Transfer) -> _Settled:
        try:
            submitted = self.ledger.submit(encode_transaction(transfer))
        except LedgerRejected as rejected:
            try:
                return self._rejected(session, transfer, rejected.code)
            except LedgerClientError:
                return _Settled()
        except LedgerClientError:
            return _Settled()
        return _Settled(txid=submitted.txid, height=submitted.height)

    def _rejected(self, session: Session, transfer: Transfer, code: Code) -> _Settled:
        if code is Code.DUPLICATE:  # a peer submitted it first: its block says the height
            found = self.ledger.transaction(txid(transfer))
            height = None if found is None else found.get("height")
            if type(height) is not int:
                return _Settled()  # not readable yet: submitted again at the next attempt
            return _Settled(txid=txid(transfer), height=height)
        if code in (Code.DOUBLE_SPEND, Code.UNKNOWN_INPUT):
            spent = tuple(n for n, peer in enumerate(session.peers) if not self._unspent(peer))
            if spent:
                return _Settled(spent=spent)
            return _Settled(
                refused=f"the ledger refused the transfer ({code}) but shows every input unspent"
            )
        return _Settled(refused=f"the ledger refused the transfer ({code})")

    def _unspent(self, peer: Input) -> bool:
        return any(
            o.get("tx") == peer.outpoint.txid.hex() and o.get("index") == peer.outpoint.index
            for o in self.ledger.unspent(peer.owner)
        )

    # ------------------------------------------------------------------ time

    def tick(self, now: float | None = None) -> None:
        """Start pools at their deadline, time out silent peers, retry submissions the ledger
        could not take, forget ended pools. Called every fraction of a second."""
        settle: list[tuple[Pool, Run]] = []
        with self._lock:
            now = self.clock() if now is None else now
            self._seen = {s: until for s, until in self._seen.items() if until > now}
            for pool in list(self._pools.values()):
                for owner, seen in list(pool.nonces.items()):
                    pool.nonces[owner] = {n: until for n, until in seen.items() if until > now}
                    if not pool.nonces[owner]:
                        del pool.nonces[owner]
                if pool.ended_at is not None:
                    if now >= pool.ended_at + self.forget_s:
                        del self._pools[pool.id]
                elif pool.state is PoolState.FORMING:
                    if now >= pool.starts_by:
                        self._start_pool(pool, now)
                elif pool.run is not None:
                    run = pool.run
                    if run.transfer is not None:
                        if not run.settling and now >= run.retry_at:
                            run.settling = True
                            settle.append((pool, run))
                    elif run.owed and now - run.owed_since >= self.timeout_s * (
                        2 if pool.arriving else 1
                    ):
                        silent = sorted(run.owed)
                        self.metrics.runs.labels("timed_out").inc()
                        self._emit(pool, "timeout", None, run=run.session.run, silent=silent)
                        log.info(
                            "pool %s run %d: %d of %d peers silent in %s",
                            pool.id,
                            run.session.run,
                            len(silent),
                            run.session.size,
                            phase_of(run.session, run.heard()),
                        )
                        self._next_run(pool, silent, now)
        for pool, run in settle:
            self._settle(pool, run)

    def close(self) -> None:
        """Answer every waiting long poll now (the service is stopping)."""
        with self._lock:
            self._closed = True
            for pool in self._pools.values():
                for wake in pool.watchers:
                    wake()

    # ------------------------------------------------------------------ runs (lock held)

    def _start_pool(self, pool: Pool, now: float) -> None:
        del self._forming[pool.denomination]
        if len(pool.joined) < self.min_peers:
            self._fail(
                pool,
                f"{len(pool.joined)} of the {self.min_peers} peers needed joined by the deadline",
                now,
            )
            return
        pool.state, pool.started_at = PoolState.RUNNING, now
        self._begin(pool, Session.of(self.chain, pool.id, FIRST_RUN, pool.asset, pool.joined), now)

    def _begin(self, pool: Pool, session: Session, now: float) -> None:
        pool.session = session
        pool.run = Run(session, protocol.owed(session, []), now)
        self._emit(
            pool,
            "start",
            None,
            run=session.run,
            session=session.id.hex(),
            chain=session.chain.hex(),
            asset=asset_to_wire(session.asset),
            peers=[p.to_wire() for p in session.peers],
        )
        log.info("pool %s run %d started with %d peers", pool.id, session.run, session.size)

    def _next_run(self, pool: Pool, excluded: Iterable[int], now: float) -> None:
        assert pool.session is not None
        session = pool.session
        staying = session.size - len(set(excluded))
        if staying < 2:
            self._fail(pool, f"only {staying} peer(s) left to go on with", now)
            return
        pool.past.add(session.id.hex())
        self._begin(pool, session.without(excluded), now)

    def _fail(self, pool: Pool, reason: str, now: float) -> None:
        self._emit(pool, "failed", None, reason=reason)
        log.info(
            "pool %s failed in run %d", pool.id, 0 if pool.session is None else pool.session.run
        )
        self._end(pool, PoolState.FAILED, now)

    def _end(self, pool: Pool, state: PoolState, now: float) -> None:
        self.metrics.pools_ended.labels("unstarted" if pool.session is None else str(state)).inc()
        pool.state, pool.ended_at, pool.run = state, now, None
        for item in pool.joined:
            self._owners.pop(item.owner, None)
            self._inputs.pop(item.outpoint, None)

    def _emit(
        self, pool: Pool, kind: str, audience: frozenset[bytes] | None, **fields: Any
    ) -> Event:
        seq = len(pool.events) + 1
        event = Event(seq, audience, {"seq": seq, "type": kind, **fields})
        pool.events.append(event)
        gathering = _gathering(pool, fields.get("message"))
        for wake, owner in pool.watchers.items():
            if (audience is None or owner in audience) and not (
                gathering and wake in pool.lingering
            ):
                wake()
        return event


def _gathering(pool: Pool, message: Any) -> bool:
    """Whether `message` (an event's, if any) is of a kind every peer sends one of and some
    peers' messages of that kind are still to come: no lingering poll ends for it."""
    run = pool.run
    if run is None or not isinstance(message, dict) or message.get("kind") not in GATHERED:
        return False
    return len(run.senders.get(Kind(message["kind"]), ())) < run.session.size


def _more_coming(pool: Pool, found: list[Event]) -> bool:
    """Whether `found` holds only messages of a kind every peer sends one of (announce,
    confirm, sign, blame), and some peers' messages of that kind are still to come."""
    run = pool.run
    if run is None:
        return False
    kinds = set()
    for event in found:
        message = event.wire.get("message")
        if event.wire.get("type") != "message" or not isinstance(message, dict):
            return False
        kinds.add(message.get("kind"))
    return all(
        kind in GATHERED and len(run.senders.get(Kind(kind), ())) < run.session.size
        for kind in kinds
    )
