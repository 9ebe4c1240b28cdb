"""A wallet's side of the mixer (DESIGN.md section 8, docs/mixer-api.md): join a pool with one
input, follow its events, run `mixer.protocol.Peer` for each run, and end with the coin at a
fresh key nobody can link to the input.

The coordinator is trusted for nothing the client can check: each run's session must be the one
the client computes (the previous run's peers without the culprits this client named itself,
from its own blame verdict, a timeout its own view does not contradict, or inputs the ledger
shows spent), and the transfer must be on the ledger and pay one of this client's keys before
the mix is over.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from assets import (
    Asset,
    Code,
    Keypair,
    Outpoint,
    Rejected,
    Transfer,
    canonical_json,
    encode_transaction,
)
from assets.codec import asset_from_wire, asset_to_wire, tx_from_wire
from ledger.client import LedgerClient, LedgerClientError, LedgerRejected
from mixer.auth import join_message, poll_params
from mixer.protocol import (
    LAZY,
    BadMessage,
    Blamed,
    Done,
    Input,
    Kind,
    Message,
    Peer,
    Session,
    decode_message,
)
from mixer.transport import KeepAliveTransport
from service.client import PROTOCOL, ServiceClient, refusal, retry_after_s

log = logging.getLogger("petra.mixer.client")

WAIT_S = 20  # how long one long poll of the events may wait at the coordinator
SUBMIT_GRACE_S = 5.0  # after every signature is in, how long the coordinator has to land it
RETRIES = 5  # further attempts after a failed request, with backoff
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 2.0
MAX_RETRY_AFTER_S = 30.0  # the longest Retry-After this client honours as given
DEFAULT_TIMEOUT_S = 600.0  # how long a whole mix may take, every run included


class MixError(Exception):
    """The mix did not end with the coin at one of this client's keys; `code` says why:
    one of the coordinator's error codes, `failed` (the pool ended without a transfer),
    `excluded` (this client was named a culprit), `coordinator_deviated` (the coordinator
    said something the client can refute), `not_landed`, `unreachable` or `timed_out`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class MixResult:
    """The mix's end: `output` owns the coin, in transfer `txid` at block `height`, after
    `runs` runs; `excluded` names each ended run's culprits (run -> peer index -> reason);
    `bytes_sent` counts every request body posted (bytes); `started` and `finished` are
    `time.perf_counter()` readings when the first run started and when the mix ended."""

    output: Keypair
    txid: bytes
    height: int
    runs: int
    excluded: Mapping[int, Mapping[int, str]]
    bytes_sent: int
    started: float = 0.0
    finished: float = 0.0


def join_request(asset: Asset, outpoint: Outpoint, key: Keypair, at: int) -> dict[str, Any]:
    """The signed body of `POST /v1/join` for `key`'s input `outpoint` holding `asset`, made
    at unix second `at`."""
    request: dict[str, Any] = {
        "v": 1,
        "asset": asset_to_wire(asset),
        "input": Input(outpoint, key.public_key).to_wire(),
        "at": at,
    }
    return {**request, "signature": key.sign(join_signing_message(request)).hex()}


def join_signing_message(request: Mapping[str, Any]) -> bytes:
    """What the input's owner signs: the join request without its `signature`."""
    return join_message(request)


def silence_refuted(peer: Peer, silent: Sequence[int]) -> str | None:
    """Why this peer's own view refutes the coordinator's word that `silent` owe a message,
    or None if it does not. The view lacks the shuffles addressed to others, so a silent
    shuffler is refuted only when this peer knows its shuffle was passed on."""
    size, received = peer.session.size, peer.received()
    said: dict[Kind, set[int]] = {kind: set() for kind in Kind}
    for message in received:
        said[message.kind].add(message.sender)
    everyone = set(range(size))
    if peer.index in silent:
        return f"it names this peer ({peer.index}) silent, which answered every message"
    if said[Kind.SHUFFLE] & {peer.index - 1, peer.index} or said[Kind.FINAL]:
        # a shuffle reached this peer, or it passed its own on, or the final list came
        shuffled = set(range(peer.index)) | said[Kind.SHUFFLE]
        said[Kind.SHUFFLE] = shuffled if not said[Kind.FINAL] else set(range(size - 1))
    if said[Kind.BLAME]:
        owed = everyone - said[Kind.BLAME]
    elif said[Kind.ANNOUNCE] != everyone:
        owed = everyone - said[Kind.ANNOUNCE]
    elif not said[Kind.FINAL]:
        owed = set(range(size)) - said[Kind.SHUFFLE]
    elif said[Kind.CONFIRM] != everyone:
        owed = everyone - said[Kind.CONFIRM]
    else:
        owed = everyone - said[Kind.SIGN]
    spoke = sorted(set(silent) - owed)
    return f"peers {spoke} sent what this peer holds as their due" if spoke else None


@dataclass
class _Run:
    """One run as this client follows it."""

    session: Session
    peer: Peer
    output: Keypair
    submitted: bool = False
    done_at: float | None = None  # monotonic seconds when every signature was in
    culprits: dict[int, str] | None = None  # set once this client knows who goes


@dataclass
class _Follow:
    pool: str
    after: int = 0
    runs: list[_Run] = field(default_factory=list)
    started: float = 0.0  # time.perf_counter() at the first run's start


class MixClient(ServiceClient):
    """Mix `key`'s input `outpoint` (holding `asset`, on chain `chain`) at the coordinator at
    `coordinator_url`, checking what it says on `ledger`. `new_output` makes each run's fresh
    output key; `make_peer` the protocol's peer of each run (tests give one that cheats);
    `timeout_s` bounds the whole mix (seconds); `transport` replaces the HTTP transport to the
    coordinator (tests)."""

    def __init__(
        self,
        coordinator_url: str,
        ledger: LedgerClient,
        chain: bytes,
        key: Keypair,
        outpoint: Outpoint,
        asset: Asset,
        *,
        new_output: Callable[[], Keypair] = Keypair.generate,
        make_peer: Callable[[Session, Keypair, bytes], Peer] = Peer,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
        wait_s: int = WAIT_S,
    ) -> None:
        own = KeepAliveTransport() if transport is None else None
        request_timeout_s = wait_s + 10.0  # a long poll's wait, and time to answer it
        super().__init__(coordinator_url, timeout_s=request_timeout_s, transport=own or transport)
        # On its own transport the client writes its requests itself (`_exchange`).
        self._own_transport = own
        self._origin = httpx.URL(self.base_url)
        self._prefix = self._origin.raw_path.decode("ascii").rstrip("/") + "/v1"
        self._host = self._origin.netloc.decode("ascii")
        self._request_timeout_s = request_timeout_s
        self.ledger = ledger
        self.chain = chain
        self.key = key
        self.outpoint = outpoint
        self.asset = asset
        self.new_output = new_output
        self.make_peer = make_peer
        self.timeout_s = timeout_s
        self.wait_s = wait_s
        self.bytes_sent = 0
        self.events: list[dict[str, Any]] = []  # every event received, in order
        self.excluded: dict[int, dict[int, str]] = {}
        self._deadline = 0.0

    # ------------------------------------------------------------ the mix

    def run(self) -> MixResult:
        """Join, follow the pool to its end, and return where the coin is; MixError if the
        pool failed, this client was excluded, or the coordinator said something false."""
        self._deadline = time.monotonic() + self.timeout_s
        follow = _Follow(self.join())
        while True:
            if time.monotonic() > self._deadline:
                raise MixError("timed_out", f"the mix took more than {self.timeout_s:g} s")
            answer = self._request(
                "GET",
                f"/pools/{follow.pool}/events",
                params=functools.partial(
                    self._poll_query, follow.pool, follow.after, self._wait(follow)
                ),
            )
            events, follow.after = _events(answer)
            for event in events:
                self.events.append(event)
                result = self._on_event(follow, event)
                if result is not None:
                    return result

    def _poll_query(self, pool: str, after: int, wait: int) -> dict[str, str | int]:
        """A read of the pool's events, signed afresh (a nonce is used once)."""
        return {**poll_params(pool, self.key, after, int(time.time())), "wait": wait}

    def _wait(self, follow: _Follow) -> int:
        """How long the next long poll may wait. The coordinator submits the transfer every
        peer signed; if it has not landed `SUBMIT_GRACE_S` after that, this peer submits it
        too (anyone may: it is whole), and polls again soon to see it land."""
        current = follow.runs[-1] if follow.runs else None
        if current is None or current.done_at is None or current.submitted:
            return self.wait_s
        waited = time.monotonic() - current.done_at
        if waited < SUBMIT_GRACE_S:
            return max(1, min(self.wait_s, int(SUBMIT_GRACE_S - waited) + 1))
        outcome = current.peer.outcome
        if isinstance(outcome, Done):
            current.submitted = True
            self._submit(outcome.transfer)
        return min(self.wait_s, 5)

    def join(self) -> str:
        """Post the signed join request; the pool's id."""
        body = join_request(self.asset, self.outpoint, self.key, int(time.time()))
        answer = self._request("POST", "/join", body=body, resend=False)
        pool = answer.get("pool")
        if not isinstance(pool, str) or not pool:
            raise MixError("coordinator_deviated", "the join answer names no pool")
        log.info("joined pool %s (%s peers so far)", pool, answer.get("peers"))
        return pool

    def _on_event(self, follow: _Follow, event: Mapping[str, Any]) -> MixResult | None:
        kind = event.get("type")
        current = follow.runs[-1] if follow.runs else None
        if kind == "start":
            self._start(follow, event)
        elif kind == "message" and current is not None:
            self._relayed(follow.pool, current, event.get("message"))
        elif kind == "timeout" and current is not None:
            self._timeout(current, event)
        elif kind == "spent" and current is not None:
            self._spent(current, event)
        elif kind == "landed":
            return self._landed(follow, event)
        elif kind == "failed":
            raise MixError("failed", f"the pool ended without a transfer: {event.get('reason')}")
        return None

    def _start(self, follow: _Follow, event: Mapping[str, Any]) -> None:
        if not follow.runs:
            follow.started = time.perf_counter()
        run, session_hex, chain_hex = event.get("run"), event.get("session"), event.get("chain")
        if not isinstance(run, int) or not isinstance(session_hex, str):
            raise MixError("coordinator_deviated", "a start event lacks its run or session")
        if chain_hex != self.chain.hex():
            raise MixError("coordinator_deviated", f"run {run} is on another chain")
        try:
            asset = asset_from_wire(event.get("asset"))
            inputs = [_input(item) for item in event.get("peers") or []]
        except (Rejected, ValueError, TypeError, KeyError) as exc:
            raise MixError(
                "coordinator_deviated", f"run {run}'s start is malformed: {exc}"
            ) from None
        if asset != self.asset:
            raise MixError("coordinator_deviated", f"run {run} mixes another asset")
        if Input(self.outpoint, self.key.public_key) not in inputs:
            raise MixError("coordinator_deviated", f"run {run} leaves this peer's input out")
        try:
            session = Session.of(self.chain, follow.pool, run, asset, inputs)
        except ValueError as exc:
            raise MixError(
                "coordinator_deviated", f"run {run}'s peers are no session: {exc}"
            ) from None
        if session.id.hex() != session_hex:
            raise MixError("coordinator_deviated", f"run {run}'s session id is not its peers'")
        if follow.runs:
            self._check_next(follow.runs[-1], session)
        output = self.new_output()
        peer = self.make_peer(session, self.key, output.public_key)
        follow.runs.append(_Run(session, peer, output))
        log.info("pool %s run %s: %s peers", follow.pool, run, session.size)
        self._send(follow.pool, peer.start())

    def _check_next(self, previous: _Run, session: Session) -> None:
        """The next run must be the previous one without the culprits this client named."""
        if previous.culprits is None:
            outcome = previous.peer.outcome
            if not isinstance(outcome, Blamed):
                raise MixError(
                    "coordinator_deviated",
                    f"run {session.run} started while run {previous.session.run} had not ended",
                )
            previous.culprits = dict(outcome.culprits)
            self.excluded[previous.session.run] = previous.culprits
        try:
            expected = previous.session.without(previous.culprits)
        except ValueError as exc:
            raise MixError(
                "coordinator_deviated", f"a run started with too few peers: {exc}"
            ) from None
        if expected.id != session.id:
            raise MixError(
                "coordinator_deviated",
                f"run {session.run} is not run {previous.session.run} without peers "
                f"{sorted(previous.culprits)}, the culprits this client found",
            )

    def _relayed(self, pool: str, current: _Run, wire: Any) -> None:
        if not isinstance(wire, Mapping):
            log.warning("pool %s: a relayed message is not an object; ignored", pool)
            return
        lazy = wire.get("kind") in LAZY  # checked by the peer only if held against the sender
        try:
            message = decode_message(wire, current.session, check_signature=not lazy)
        except BadMessage as bad:
            log.warning("pool %s: ignored a relayed message: %s", pool, bad.reason)
            return
        self._send(pool, current.peer.receive(message, checked=not lazy))
        outcome = current.peer.outcome
        if isinstance(outcome, Done) and current.done_at is None:
            current.done_at = time.monotonic()
        elif isinstance(outcome, Blamed) and current.culprits is None:
            self._ended(current, dict(outcome.culprits))

    def _timeout(self, current: _Run, event: Mapping[str, Any]) -> None:
        if current.culprits is not None:
            raise MixError("coordinator_deviated", "a timeout came for a run that had ended")
        silent = _indexes(event.get("silent"), current.session.size, "silent")
        refuted = silence_refuted(current.peer, silent)
        if refuted is not None:
            raise MixError("coordinator_deviated", f"a timeout names peers {silent}: {refuted}")
        current.peer.silent(silent)
        self._ended(current, {n: "silent past the timeout" for n in silent})

    def _spent(self, current: _Run, event: Mapping[str, Any]) -> None:
        spent = _indexes(event.get("peers"), current.session.size, "peers")
        for n in spent:
            outpoint = current.session.peers[n].outpoint
            stored = self._ledger(
                functools.partial(self.ledger.output, outpoint.txid, outpoint.index)
            )
            if stored is None or stored.get("spent_by") is None:
                raise MixError(
                    "coordinator_deviated",
                    f"peer {n}'s input is said spent, but the ledger shows it unspent",
                )
        current.peer.inputs_spent(spent)
        self._ended(current, {n: "spent its input elsewhere (double spend)" for n in spent})

    def _ended(self, current: _Run, culprits: dict[int, str]) -> None:
        current.culprits = culprits
        self.excluded[current.session.run] = culprits
        if current.peer.index in culprits:
            raise MixError(
                "excluded",
                f"run {current.session.run} excluded this peer: {culprits[current.peer.index]}",
            )

    def _landed(self, follow: _Follow, event: Mapping[str, Any]) -> MixResult:
        txid_hex, height = event.get("txid"), event.get("height")
        try:
            txid = bytes.fromhex(txid_hex) if isinstance(txid_hex, str) else b""
        except ValueError:
            txid = b""
        if len(txid) != 32 or not isinstance(height, int):
            raise MixError("coordinator_deviated", "a landed event lacks its txid or height")
        stored = self._ledger(functools.partial(self.ledger.transaction, txid))
        if stored is None:
            raise MixError("not_landed", f"the ledger has no transaction {txid_hex}")
        try:
            tx = tx_from_wire(stored.get("transaction"))
        except Rejected as exc:
            raise MixError(
                "not_landed", f"the ledger serves a malformed {txid_hex}: {exc}"
            ) from None
        keys = {run.output.public_key: run.output for run in follow.runs}
        paid = [
            keys[o.address]
            for o in (tx.outputs if isinstance(tx, Transfer) else ())
            if o.address in keys and o.asset == self.asset
        ]
        if not isinstance(tx, Transfer) or self.outpoint not in tx.inputs or not paid:
            raise MixError("not_landed", f"transaction {txid_hex} does not pay this peer's coin")
        return MixResult(
            paid[0],
            txid,
            stored.get("height", height),
            len(follow.runs),
            self.excluded,
            self.bytes_sent,
            follow.started,
            time.perf_counter(),
        )

    # ------------------------------------------------------------ the ledger

    def _submit(self, transfer: Transfer) -> None:
        """Submit the finished transfer, so it lands even if the coordinator does not."""
        try:
            self.ledger.submit(encode_transaction(transfer))
        except LedgerRejected as rejected:
            if rejected.code is not Code.DUPLICATE:
                log.warning("the ledger refused the mixed transfer: %s", rejected)
        except LedgerClientError as exc:
            log.warning("could not submit the mixed transfer: %s", exc)

    def _ledger(self, read: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        try:
            return read()
        except LedgerClientError as exc:
            raise MixError("ledger_unavailable", str(exc)) from None

    # ------------------------------------------------------------ the coordinator

    def _send(self, pool: str, messages: Sequence[Message]) -> None:
        for message in messages:
            try:
                self._request(
                    "POST",
                    f"/pools/{pool}/messages",
                    body={"message": message.to_wire(), "to": None},
                )
            except MixError as exc:
                if exc.code != "stale_run":
                    raise
                log.info("pool %s: a message of an ended run was not relayed", pool)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Callable[[], Mapping[str, str | int]] | None = None,
        body: Mapping[str, Any] | None = None,
        resend: bool = True,
    ) -> dict[str, Any]:
        """The JSON answer of the coordinator; MixError with its error code otherwise.
        Connection failures and 5xx answers are retried with backoff (a POST that may have
        arrived only if `resend`); an answer with Retry-After (429, 503: the coordinator is
        pushing back) is retried after that long, until the mix's deadline. `params` makes
        the query of each attempt."""
        content = None if body is None else canonical_json(body)
        last = ""
        attempt = 0
        while attempt <= RETRIES:
            if content is not None:
                self.bytes_sent += len(content)
            try:
                response = self._exchange(
                    method, path, None if params is None else params(), content
                )
            except httpx.TransportError as exc:
                last = f"cannot reach the coordinator at {self.base_url}: {exc}"
                if not resend and not isinstance(exc, httpx.ConnectError):
                    raise MixError("unreachable", last) from None
            else:
                pause = _retry_after(response)
                if pause is not None and self._in_time(pause):
                    time.sleep(pause)  # pushed back: not a failure, and no retry spent
                    continue
                if response.status_code < 500:
                    return _answer(response)
                last = f"the coordinator answered {response.status_code}"
            attempt += 1
            if attempt <= RETRIES:
                ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
                time.sleep(random.uniform(0, ceiling))
        raise MixError("unreachable", f"{last} (after {RETRIES + 1} attempts)")

    def _exchange(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int] | None,
        content: bytes | None,
    ) -> httpx.Response:
        """One request to the coordinator. On the client's own transport it is written onto
        the connection as httpx would write it (the same path, query and headers a server
        reads), without httpx's request building and cookie jar, which cost a peer more CPU
        than its part of the protocol; through a transport given to the client, by httpx."""
        own = self._own_transport
        if own is None:
            return self._http.request(
                method,
                path,
                params=query,
                content=content,
                headers=None if content is None else {"Content-Type": "application/json"},
            )
        # the path quoted as httpx would (a pool's id is the coordinator's word)
        target = self._prefix + quote(path) + ("" if query is None else "?" + urlencode(query))
        headers = [("Host", self._host), ("Accept", "*/*")]
        if content is not None:
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(content)))]
        timeout_s = self._request_timeout_s
        return own.exchange(
            self._origin, method, target, headers, content, connect_s=timeout_s, read_s=timeout_s
        )

    def _in_time(self, pause: float) -> bool:
        """Whether waiting `pause` seconds still ends before the mix's deadline (if any)."""
        return not self._deadline or time.monotonic() + pause < self._deadline


@dataclass(frozen=True, slots=True)
class Forming:
    """What the coordinator says is forming: the peers waiting per denomination, and what a
    pool needs: `min_peers` by its deadline, `start_s` seconds after its first join."""

    min_peers: int
    start_s: float
    waiting: Mapping[Asset, int]

    def peers(self, asset: Asset) -> int:
        """The peers waiting in the forming pool of `asset` (0: none forms)."""
        return self.waiting.get(asset, 0)


class PoolsClient(ServiceClient):
    """The coordinator's reads that need no input of the reader: what is forming, so that a
    wallet learns whether it would mix alone before it splits or joins anything."""

    def __init__(
        self,
        coordinator_url: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(coordinator_url, timeout_s=timeout_s, transport=transport)

    def forming(self) -> Forming:
        """`GET /v1/forming`; MixError with the coordinator's code, `unreachable`, or
        `coordinator_deviated` for an answer of another shape."""
        try:
            response = self._http.get("/forming")
        except httpx.TransportError as exc:
            raise MixError(
                "unreachable", f"cannot reach the coordinator at {self.base_url}: {exc}"
            ) from None
        answer = _answer(response)
        min_peers, start_s, pools = (
            answer.get("min_peers"),
            answer.get("start_s"),
            answer.get("pools"),
        )
        if (
            type(min_peers) is not int
            or not isinstance(start_s, int | float)
            or isinstance(start_s, bool)
            or not isinstance(pools, list)
        ):
            raise MixError("coordinator_deviated", "the forming answer lacks its fields")
        waiting: dict[Asset, int] = {}
        for pool in pools:
            try:
                asset, peers = asset_from_wire(pool["asset"]), pool["peers"]
            except (Rejected, KeyError, TypeError):
                raise MixError("coordinator_deviated", "a forming pool is malformed") from None
            if type(peers) is not int or peers < 0:
                raise MixError("coordinator_deviated", "a forming pool's peers is no count")
            waiting[asset] = peers
        return Forming(min_peers, float(start_s), waiting)


def _retry_after(response: httpx.Response) -> float | None:
    """The seconds a 429 or 503 answer's Retry-After asks for (capped), or None."""
    if response.status_code not in (429, 503):
        return None
    return retry_after_s(response, MAX_RETRY_AFTER_S)


def _answer(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict):
        return body
    refused = refusal(response)
    if refused is not None and refused.code != PROTOCOL:
        raise MixError(refused.code, refused.message)
    raise MixError("coordinator_deviated", f"HTTP {response.status_code} without the error shape")


def _events(answer: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
    events, after = answer.get("events"), answer.get("next")
    if not isinstance(events, list) or not isinstance(after, int) or isinstance(after, bool):
        raise MixError("coordinator_deviated", "the events answer lacks events or next")
    return [e for e in events if isinstance(e, dict)], after


def _input(wire: Mapping[str, Any]) -> Input:
    tx, index, owner = bytes.fromhex(wire["tx"]), wire["index"], bytes.fromhex(wire["owner"])
    if len(tx) != 32 or len(owner) != 32 or not isinstance(index, int) or index < 0:
        raise ValueError("an input is {tx, index, owner} with 32-byte ids")
    return Input(Outpoint(tx, index), owner)


def _indexes(value: Any, size: int, what: str) -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < size for n in value)
    ):
        raise MixError("coordinator_deviated", f"{what} must list peer indexes below {size}")
    return sorted(set(value))
