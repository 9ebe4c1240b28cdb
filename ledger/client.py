"""A synchronous client of the ledger node's HTTP API (docs/api.md), for every other service.

Reads return parsed values (signed heads, raw transaction bytes, proofs); getters return None
for what the node does not have. Idempotent GETs are retried with bounded, jittered exponential
backoff; a submission is retried only when the connection failed, and a retry that comes back
`duplicate` is confirmed on the ledger and returned as accepted (`submit_many` likewise, for
each transaction of a batch). The `prove_*` and `verified_*` helpers check proofs locally
(RFC 9162) and trust nothing the node says.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx

from assets import (
    Code,
    Genesis,
    Rejected,
    chain_id,
    decode_transaction,
    encode_transaction,
)
from assets.codec import genesis_from_wire, tx_from_wire
from assets.codec import txid as transaction_id
from ledger import merkle
from ledger.batch import NDJSON, chunks, encode_batch
from ledger.blocks import BlockHeader, SignedHead
from service.client import PROTOCOL, Refusal, ServiceClient, refusal, retry_after_s

BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 2.0
COMMENT = ":"  # the event name `_server_sent_events` reports comment lines under
STREAM_IDLE_FACTOR = 6  # an SSE connection idle this many timeouts is dropped and reopened

Block = tuple[SignedHead, list[bytes]]
_REJECTION_CODES = frozenset(c.value for c in Code)


# ---------------------------------------------------------------- errors


class LedgerClientError(Exception):
    """Anything that went wrong talking to the ledger node."""


class LedgerUnavailable(LedgerClientError):
    """The node could not be reached after the retries, or answered 503 `unavailable`."""


class LedgerRejected(LedgerClientError):
    """The ledger refused a transaction with one of the rejection codes of DESIGN.md 5."""

    def __init__(self, code: Code, message: str, txid: bytes | None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.txid = txid


class NotFound(LedgerClientError):
    """The node has no such thing (404), where None is not an answer (proofs, regulation)."""


class LedgerError(LedgerClientError):
    """The node refused the request itself (`bad_request`, `too_large`, `internal`, ...)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class LedgerProtocolError(LedgerClientError):
    """The node answered something docs/api.md does not allow."""


class ProofRefused(LedgerClientError):
    """A proof the node served does not verify against the signed heads it was checked with."""


# ---------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Submitted:
    """An accepted transaction: its id, its log position and the height of its block."""

    txid: bytes
    seq: int
    height: int


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """RFC 9162 audit path of leaf `index` (from 0) in the tree of `size` leaves."""

    index: int
    size: int
    leaf_hash: bytes
    proof: list[bytes]


def _field(wire: Mapping[str, Any], name: str, kind: type) -> Any:
    value = wire.get(name) if isinstance(wire, Mapping) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise LedgerProtocolError(f"the node's answer lacks a valid {name!r}")
    return value


def _hex_field(wire: Mapping[str, Any], name: str, size: int | None = None) -> bytes:
    return _unhex(_field(wire, name, str), name, size)


def _unhex(text: Any, name: str, size: int | None = None) -> bytes:
    try:
        value = bytes.fromhex(text) if isinstance(text, str) and text == text.lower() else None
    except ValueError:
        value = None
    if value is None or (size is not None and len(value) != size):
        raise LedgerProtocolError(f"{name!r} in the node's answer is not lowercase hex")
    return value


def head_from_wire(wire: Any) -> SignedHead:
    """A signed head from its JSON object (GET /v1/head); `LedgerProtocolError` if not one.

    The `hash` it carries must be the hash of the header it carries. The signature is not
    checked here: `SignedHead.verifies` needs the genesis's sequencer keys.
    """
    if not isinstance(wire, Mapping):
        raise LedgerProtocolError("a signed head is a JSON object")
    if _field(wire, "v", int) != 1:
        raise LedgerProtocolError("a signed head has v 1")
    header = BlockHeader(
        chain=_hex_field(wire, "chain", 32),
        height=_field(wire, "height", int),
        prev=_hex_field(wire, "prev", 32),
        time=_field(wire, "time", int),
        tree_size=_field(wire, "tree_size", int),
        root=_hex_field(wire, "root", 32),
    )
    if _hex_field(wire, "hash", 32) != header.hash:
        raise LedgerProtocolError(f"block {header.height}'s hash is not the hash of its header")
    return SignedHead(
        header, _hex_field(wire, "sequencer_key", 32), _hex_field(wire, "signature", 64)
    )


def head_problem(head: SignedHead, genesis: Genesis) -> str | None:
    """Why `head` is not a head of `genesis`'s chain signed by one of its sequencer keys, in
    one sentence; None when it is."""
    if head.header.chain != chain_id(genesis):
        return f"block {head.header.height}'s head is of another chain than the genesis's"
    if not head.verifies(genesis.sequencer_keys):
        return f"block {head.header.height}'s head is not signed by a sequencer key of the genesis"
    return None


def cosignatures_from_wire(wire: Any, head: SignedHead) -> list[SignedHead]:
    """The other sequencers' signatures a head carries (`cosignatures` of GET /v1/head, on a
    replicated ledger), each as a signed head of the same header. Not checked here."""
    listed = wire.get("cosignatures", []) if isinstance(wire, Mapping) else []
    if not isinstance(listed, list):
        raise LedgerProtocolError("a head's cosignatures are a list")
    cosigned = []
    for entry in listed:
        if not isinstance(entry, Mapping):
            raise LedgerProtocolError("a cosignature is a JSON object")
        key = _hex_field(entry, "sequencer_key", 32)
        cosigned.append(SignedHead(head.header, key, _hex_field(entry, "signature", 64)))
    return cosigned


def quorum_problem(
    head: SignedHead, cosigned: list[SignedHead], genesis: Genesis, quorum: int
) -> str | None:
    """Why fewer than `quorum` distinct sequencer keys of `genesis` signed `head`'s header
    (its own signature and its cosignatures, each checked), in one sentence; None otherwise.
    A quorum of a replicated ledger's sequencers means no single operator can show a
    history the others did not sign."""
    signers = {
        h.sequencer_key
        for h in [head, *cosigned]
        if h.header == head.header and h.verifies(genesis.sequencer_keys)
    }
    if len(signers) >= quorum:
        return None
    return (
        f"block {head.header.height}'s head is signed by {len(signers)} of the chain's "
        f"{len(genesis.sequencer_keys)} sequencer keys; the quorum asked is {quorum}"
    )


def block_from_wire(wire: Any) -> Block:
    """A block (`{"head", "transactions"}`) as its signed head and each transaction's bytes."""
    if not isinstance(wire, Mapping):
        raise LedgerProtocolError("a block is a JSON object")
    head = head_from_wire(wire.get("head"))
    raws = _field(wire, "transactions", list)
    return head, [_unhex(raw, "transactions") for raw in raws]


def _proof_hashes(wire: Mapping[str, Any]) -> list[bytes]:
    return [_unhex(h, "proof", merkle.HASH_SIZE) for h in _field(wire, "proof", list)]


# ---------------------------------------------------------------- the client


class LedgerClient(ServiceClient):
    """The ledger node at `base_url` (`/v1` may be left out). `timeout_s`: per request, in seconds;
    `retries`: further attempts after the first, for GETs and for unsent submissions."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 10.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, not {retries}")
        super().__init__(base_url, timeout_s=timeout_s, transport=transport)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_base_s = BACKOFF_BASE_S
        self.backoff_cap_s = BACKOFF_CAP_S

    # ------------------------------------------------------------ transport

    def _pause(self, attempt: int) -> None:
        """Full-jitter exponential backoff before retry number `attempt` (from 1)."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1))
        time.sleep(random.uniform(0, ceiling))

    def _get(self, path: str, params: Mapping[str, str | int] | None = None) -> Any | None:
        """The JSON answer to GET `path`; None on 404 `not_found`. Retried on connection
        errors and 503 until `retries` run out, then `LedgerUnavailable`."""
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._pause(attempt)
            try:
                response = self._http.get(path, params=params)
            except httpx.TransportError as exc:
                last = f"cannot reach the ledger node at {self.base_url}: {exc}"
                continue
            if response.status_code == 503:
                last = f"the ledger node at {self.base_url} is unavailable"
                continue
            if response.status_code == 404:
                return None
            return _answer(response)
        raise LedgerUnavailable(f"{last} (after {self.retries + 1} attempts)")

    def _get_found(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        answer = self._get(path, params)
        if answer is None:
            raise NotFound(f"the ledger node has no {path}")
        return answer

    # ------------------------------------------------------------ submitting

    def submit(self, raw: bytes) -> Submitted:
        """Submit one transaction (canonical JSON bytes); returns once its block is durable.

        Raises `LedgerRejected` with the ledger's code, `LedgerUnavailable` when the node
        cannot be reached after the retries or answers 503. A retry after a lost answer that
        comes back `duplicate` is confirmed with `transaction` and returned as accepted.
        """
        response, lost_answer = self._post_until_queued("/transactions", raw, "application/json")
        if response.status_code == 503:
            raise LedgerUnavailable(f"the ledger node at {self.base_url} is unavailable")
        try:
            answer = _answer(response)
        except LedgerRejected as rejected:
            if rejected.code is Code.DUPLICATE and lost_answer:
                return self._confirm(rejected.txid or _local_txid(raw), rejected)
            raise
        return Submitted(
            _hex_field(answer, "txid", 32),
            _field(answer, "seq", int),
            _field(answer, "height", int),
        )

    def submit_many(self, raws: Sequence[bytes]) -> list[Submitted | LedgerRejected]:
        """Submit transactions (canonical JSON bytes) through the batch route, in batches of at
        most `ledger.batch.MAX_BATCH`, in order; returns once every block holding one is
        durable, each one's outcome in order: `Submitted`, or `LedgerRejected` with its code.

        A batch is retried as `submit` retries one transaction (unsent, or `busy`: nothing of
        it was queued); after a lost answer, an entry that comes back `duplicate` is confirmed
        with `transaction` and returned as accepted. Raises `LedgerUnavailable` as `submit`
        does, `LedgerError` when the node refuses a batch itself (`too_large`, `read_only`).
        """
        outcomes: list[Submitted | LedgerRejected] = []
        for batch in chunks(raws):
            outcomes.extend(self._submit_batch(batch))
        return outcomes

    def _submit_batch(self, raws: Sequence[bytes]) -> list[Submitted | LedgerRejected]:
        response, lost_answer = self._post_until_queued(
            "/transactions/batch", encode_batch(raws), NDJSON
        )
        refused = refusal(response)
        if refused is not None:
            _raise_refused_batch(refused)
        entries = _field(_json(response.content), "results", list)
        if len(entries) != len(raws):
            raise LedgerProtocolError(
                f"the node answered {len(entries)} results to a batch of {len(raws)}"
            )
        return [
            self._batch_outcome(entry, raw, lost_answer)
            for entry, raw in zip(entries, raws, strict=True)
        ]

    def _post_until_queued(
        self, path: str, body: bytes, content_type: str
    ) -> tuple[httpx.Response, bool]:
        """POST `body` to `path` until the node takes it in: again while it could not be sent or
        the node answered 503 `busy` (nothing of it was queued), until `retries` run out
        (`LedgerUnavailable`). The answer, and whether an earlier attempt was sent and may have
        been taken without an answer coming back."""
        lost_answer = False
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self._pause(attempt)
            try:
                response = self._http.post(
                    path, content=body, headers={"Content-Type": content_type}
                )
            except httpx.TransportError as exc:
                # A request that was sent may have been accepted even though no answer came.
                lost_answer = lost_answer or not isinstance(exc, httpx.ConnectError)
                last = f"cannot reach the ledger node at {self.base_url}: {exc}"
                continue
            refused = refusal(response) if response.status_code == 503 else None
            if refused is not None and refused.code == "busy":  # nothing was queued
                last = f"the ledger node at {self.base_url} is busy"
                time.sleep(retry_after_s(response, self.backoff_cap_s) or 1.0)
                continue
            return response, lost_answer
        raise LedgerUnavailable(f"{last} (after {self.retries + 1} attempts)")

    def _batch_outcome(
        self, entry: Any, raw: bytes, lost_answer: bool
    ) -> Submitted | LedgerRejected:
        """One entry of a batch's answer; a `duplicate` after a lost answer is confirmed."""
        error = entry.get("error") if isinstance(entry, Mapping) else None
        if error is None:
            return Submitted(
                _hex_field(entry, "txid", 32),
                _field(entry, "seq", int),
                _field(entry, "height", int),
            )
        code = _field(error, "code", str)
        if code not in _REJECTION_CODES:
            raise LedgerProtocolError(f"a batch entry carries {code!r}, not a rejection code")
        raw_txid = error.get("txid")
        rejected = LedgerRejected(
            Code(code),
            str(error.get("message", "")),
            None if raw_txid is None else _unhex(raw_txid, "txid", 32),
        )
        if rejected.code is Code.DUPLICATE and lost_answer:
            try:
                return self._confirm(rejected.txid or _local_txid(raw), rejected)
            except LedgerRejected as unconfirmed:
                return unconfirmed
        return rejected

    def _confirm(self, txid: bytes | None, rejected: LedgerRejected) -> Submitted:
        """The earlier, unanswered attempt's acceptance, read back from the ledger."""
        stored = None if txid is None else self.transaction(txid)
        if stored is None or txid is None:
            raise rejected
        return Submitted(txid, _field(stored, "seq", int), _field(stored, "height", int))

    # ------------------------------------------------------------ reading

    def transaction(self, txid: bytes) -> dict[str, Any] | None:
        """`{"txid", "seq", "height", "type", "transaction"}`, or None if not on the ledger."""
        answer: dict[str, Any] | None = self._get(f"/transactions/{txid.hex()}")
        return answer

    def txids_with_prefix(self, prefix: str) -> tuple[list[bytes], bool]:
        """The ids of the transactions whose hex starts with `prefix` (4 to 64 hex digits), at
        most ten, smallest first, and whether there are more; `LedgerError` `bad_request`
        for a prefix that is not hex or too short."""
        answer = self._get_found("/transactions", {"prefix": prefix})
        txids = [_unhex(t, "txids", 32) for t in _field(answer, "txids", list)]
        if not all(t.hex().startswith(prefix.lower()) for t in txids):
            raise LedgerProtocolError(f"the node named transactions not starting with {prefix}")
        return txids, _field(answer, "more", bool)

    def output(self, txid: bytes, index: int) -> dict[str, Any] | None:
        """`{"tx", "index", "address", "asset", "seq", "spent_by"}`, or None if none such."""
        answer: dict[str, Any] | None = self._get(f"/outputs/{txid.hex()}/{index}")
        return answer

    def unspent(self, address: bytes) -> list[dict[str, Any]]:
        """The unspent outputs owned by `address` (each as `output` gives them)."""
        answer = self._get(f"/addresses/{address.hex()}/unspent")
        return [] if answer is None else list(_field(answer, "outputs", list))

    def head(self) -> SignedHead | None:
        """The latest signed head, or None before the first block. Signature not checked."""
        found = self.cosigned_head()
        return None if found is None else found[0]

    def cosigned_head(self) -> tuple[SignedHead, list[SignedHead]] | None:
        """The latest signed head and the other sequencers' signatures on it (a replicated
        ledger's), or None before the first block. Signatures not checked."""
        answer = self._get("/head")
        if answer is None:
            return None
        head = head_from_wire(answer)
        return head, cosignatures_from_wire(answer, head)

    def block(self, height: int) -> Block | None:
        """Block `height`'s signed head and transactions (bytes, in order), or None."""
        answer = self._get(f"/blocks/{height}")
        if answer is None:
            return None
        block = block_from_wire(answer)
        if block[0].header.height != height:
            raise LedgerProtocolError(f"asked for block {height}, got {block[0].header.height}")
        return block

    def blocks(self, from_height: int = 1, limit: int = 100) -> list[Block]:
        """Up to `limit` blocks from height `from_height`, in order."""
        answer = self._get("/blocks", {"from": from_height, "limit": limit})
        if answer is None:
            return []
        return [block_from_wire(b) for b in _field(answer, "blocks", list)]

    def inclusion_proof(
        self, txid: bytes | None = None, index: int | None = None, size: int | None = None
    ) -> InclusionProof:
        """The node's inclusion proof of `txid` (or of leaf `index`) in the tree of `size`
        leaves (default: the durable size). Unchecked: see `prove_inclusion`."""
        if (txid is None) == (index is None):
            raise ValueError("name the leaf by exactly one of txid and index")
        params: dict[str, str | int] = {}
        if txid is not None:
            params["txid"] = txid.hex()
        if index is not None:
            params["index"] = index
        if size is not None:
            params["size"] = size
        answer = self._get_found("/proofs/inclusion", params)
        return InclusionProof(
            _field(answer, "index", int),
            _field(answer, "size", int),
            _hex_field(answer, "leaf_hash", merkle.HASH_SIZE),
            _proof_hashes(answer),
        )

    def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]:
        """The node's consistency proof from tree size `old` to `new` (default: durable)."""
        params = {"old": old} if new is None else {"old": old, "new": new}
        answer = self._get_found("/proofs/consistency", params)
        if _field(answer, "old_size", int) != old or (
            new is not None and _field(answer, "new_size", int) != new
        ):
            raise LedgerProtocolError("the consistency proof is for other tree sizes")
        return _proof_hashes(answer)

    def regulation(self, interval: int) -> dict[str, Any]:
        """`{"interval", "prices", "meters"}`: what is in force at `interval`."""
        answer: dict[str, Any] = self._get_found(f"/regulation/{interval}")
        return answer

    def genesis(self) -> Genesis:
        """The node's genesis. Trusting it is trusting the node: prefer a genesis file."""
        try:
            return genesis_from_wire(self._get_found("/genesis"))
        except Rejected as exc:
            raise LedgerProtocolError(f"the node's genesis is not valid: {exc.message}") from None

    # ------------------------------------------------------------ streaming

    def stream_blocks(
        self, from_height: int | None = None, *, stop: Callable[[], bool] | None = None
    ) -> Iterator[Block]:
        """Blocks from `from_height` (default: the next one) as the node makes them, until
        `stop()` is true (looked at after every block and every keep-alive the node sends while
        idle, so within `ledger.api.KEEPALIVE_S`), or for ever.

        Reads Server-Sent Events; on a dropped connection reopens from the block after the
        last one received. `LedgerUnavailable` after `retries` + 1 connections in a row that
        failed without bringing a block.
        """
        last: int | None = None if from_height is None else from_height - 1
        failures = 0
        while True:
            params = {} if last is None else {"from": last + 1}
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            received = idle = False
            try:
                with contextlib.closing(self._stream_once(params, headers)) as blocks:
                    for block in blocks:
                        if stop is not None and stop():
                            return
                        if block is None:
                            continue  # a keep-alive
                        height = block[0].header.height
                        if last is not None and height <= last:
                            continue  # already delivered before a reconnection
                        if last is not None and height != last + 1:
                            raise LedgerProtocolError(
                                f"the stream skipped from block {last} to {height}"
                            )
                        last, received, failures = height, True, 0
                        yield block
                reason = "the node closed the stream"
            except httpx.ReadTimeout:
                idle = True  # not a failure: reopen in case the connection silently died
            except (httpx.TransportError, LedgerUnavailable) as exc:
                reason = str(exc)
            if received or idle:
                continue
            failures += 1
            if failures > self.retries:
                raise LedgerUnavailable(
                    f"cannot stream blocks from {self.base_url}: {reason} "
                    f"(after {failures} attempts)"
                )
            self._pause(failures)

    def _stream_once(
        self, params: Mapping[str, int], headers: Mapping[str, str]
    ) -> Generator[Block | None, None, None]:
        """The stream's blocks, and None for each keep-alive comment."""
        timeout = httpx.Timeout(self.timeout_s, read=self.timeout_s * STREAM_IDLE_FACTOR)
        with self._http.stream(
            "GET", "/stream/blocks", params=params, headers=headers, timeout=timeout
        ) as response:
            if response.status_code == 503:
                raise LedgerUnavailable(f"the ledger node at {self.base_url} is unavailable")
            if response.status_code != 200:
                response.read()
                _answer(response)
                raise LedgerProtocolError(f"the block stream answered {response.status_code}")
            lines = response.iter_lines()
            for event, data, event_id in _server_sent_events(lines, comments=True):
                if event == COMMENT:
                    yield None
                    continue
                if event != "block":
                    continue
                block = block_from_wire(_json(data))
                if event_id is not None and event_id != str(block[0].header.height):
                    raise LedgerProtocolError(f"event id {event_id} is not its block's height")
                yield block

    # ------------------------------------------------------------ verification

    def prove_inclusion(self, txid: bytes, head: SignedHead) -> InclusionProof:
        """The node's proof that transaction `txid` is in the tree `head` signs, checked
        here: the leaf is hashed from the transaction fetched and re-encoded locally, whose id
        must be `txid`. `ProofRefused` if anything does not hold. `head`'s signature is the
        caller's to check (`SignedHead.verifies`)."""
        size, root = head.header.tree_size, head.header.root
        stored = self.transaction(txid)
        if stored is None:
            raise ProofRefused(f"the node does not know transaction {txid.hex()}")
        try:
            tx = tx_from_wire(stored.get("transaction"))
        except Rejected as exc:
            raise ProofRefused(f"the node serves a malformed transaction: {exc.message}") from None
        if transaction_id(tx) != txid:
            raise ProofRefused(f"the node serves another transaction for {txid.hex()}")
        leaf = merkle.leaf_hash(encode_transaction(tx))
        try:
            proof = self.inclusion_proof(txid=txid, size=size)
        except (NotFound, LedgerError) as exc:
            _unless_refused(exc)
            raise ProofRefused(
                f"the node has no inclusion proof of {txid.hex()} in tree size {size} ({exc})"
            ) from None
        if proof.size != size or not merkle.verify_inclusion(
            leaf, proof.index, size, proof.proof, root
        ):
            raise ProofRefused(
                f"the inclusion proof of {txid.hex()} does not verify against root "
                f"{root.hex()} of tree size {size}"
            )
        return InclusionProof(proof.index, size, leaf, proof.proof)

    def verified_inclusion(self, txid: bytes, head: SignedHead) -> bool:
        """Whether the node proves transaction `txid` is in the tree `head` signs."""
        try:
            self.prove_inclusion(txid, head)
        except ProofRefused:
            return False
        return True

    def prove_consistency(self, old: SignedHead, new: SignedHead) -> list[bytes]:
        """The node's proof that `old`'s tree is a prefix of `new`'s, checked here;
        `ProofRefused` if it does not hold. Both signatures are the caller's to check."""
        a, b = old.header, new.header
        if a.chain != b.chain:
            raise ProofRefused("the two heads are of different chains")
        if b.height < a.height or b.tree_size < a.tree_size:
            raise ProofRefused(
                f"the new head (height {b.height}, tree size {b.tree_size}) is older than the "
                f"old one (height {a.height}, tree size {a.tree_size})"
            )
        if a.height == b.height and a.hash != b.hash:
            raise ProofRefused(f"two different blocks were signed at height {a.height}")
        if a.tree_size == b.tree_size:
            if a.root != b.root:
                raise ProofRefused(f"two different roots were signed for tree size {a.tree_size}")
            return []
        try:
            proof = self.consistency_proof(a.tree_size, b.tree_size)
        except (NotFound, LedgerError) as exc:
            _unless_refused(exc)
            raise ProofRefused(
                f"the node has no consistency proof from tree size {a.tree_size} to "
                f"{b.tree_size} ({exc})"
            ) from None
        if not merkle.verify_consistency(a.tree_size, b.tree_size, a.root, b.root, proof):
            raise ProofRefused(
                f"the consistency proof from tree size {a.tree_size} to {b.tree_size} does "
                f"not verify: the log was rewritten or the node lies"
            )
        return proof

    def verified_consistency(self, old: SignedHead, new: SignedHead) -> bool:
        """Whether the node proves `old`'s tree is a prefix of `new`'s."""
        try:
            self.prove_consistency(old, new)
        except ProofRefused:
            return False
        return True


# ---------------------------------------------------------------- answers and events


def _json(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise LedgerProtocolError("the node's answer is not JSON") from None


def _answer(response: httpx.Response) -> Any:
    """The JSON body of a 2xx answer; the error shape of docs/api.md raised as its exception."""
    refused = refusal(response)
    if refused is None:
        return _json(response.content)
    code, message = refused.code, refused.message
    if code == PROTOCOL:
        raise LedgerProtocolError(message)
    if code in _REJECTION_CODES:
        raw_txid = refused.fields.get("txid")
        rejected_txid = None if raw_txid is None else _unhex(raw_txid, "txid", 32)
        raise LedgerRejected(Code(code), message, rejected_txid)
    if code == "unavailable":
        raise LedgerUnavailable(f"the ledger node is unavailable: {message}")
    if code == "not_found":
        raise NotFound(message)
    raise LedgerError(response.status_code, code, message)


def _raise_refused_batch(refused: Refusal) -> NoReturn:
    """A refusal of a whole batch raised as its exception (none of it was queued, or the
    node stopped)."""
    if refused.code == PROTOCOL:
        raise LedgerProtocolError(refused.message)
    if refused.code == "unavailable":
        raise LedgerUnavailable(f"the ledger node is unavailable: {refused.message}")
    raise LedgerError(refused.status, refused.code, refused.message)


def _unless_refused(exc: LedgerClientError) -> None:
    """Re-raise `exc` unless it is the node declining to prove (404, or 400 for sizes it
    has no tree of): a failure of the node is not a failed proof."""
    if isinstance(exc, LedgerError) and exc.status != 400:
        raise exc


def _local_txid(raw: bytes) -> bytes | None:
    try:
        return decode_transaction(raw).txid
    except Rejected as exc:
        return exc.txid


def _server_sent_events(
    lines: Iterator[str], *, comments: bool = False
) -> Iterator[tuple[str, str, str | None]]:
    """(event, data, id) of each event in a text/event-stream, as the WHATWG HTML standard
    parses them: `data:` lines joined by newlines, one space after the colon dropped, lines
    starting with a colon (keep-alive comments) ignored, a blank line ending each event. The id
    is the one the event itself carried (None if it carried none). With `comments`, each
    comment line is also reported, as (`COMMENT`, its text, None), so a reader of an idle
    stream gets control back at each keep-alive."""
    event: str = ""
    event_id: str | None = None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event or "message", "\n".join(data), event_id
            event, event_id, data = "", None, []
            continue
        if line.startswith(":"):
            if comments:
                yield COMMENT, line[1:].removeprefix(" "), None
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            event_id = value
