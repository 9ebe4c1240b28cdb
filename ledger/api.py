"""The ledger node's HTTP API (docs/api.md): a thin FastAPI layer over `Ledger` and its
sequencer. Every error answers `{"error": {"code", "message", "txid"?}}` with a stable code."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send

from assets import Code, Outpoint
from assets.codec import MAX_INT, MAX_OUTPUTS, MAX_TX_BYTES, asset_to_wire, genesis_to_wire
from assets.schemas import TRANSACTION, request_body
from ledger.batch import MAX_BATCH, MAX_BATCH_BYTES, NDJSON, split_batch
from ledger.blocks import SignedHead
from ledger.head_watch import HeadWatch
from ledger.ledger import BlockResult, Ledger, Outcome
from ledger.metrics import LedgerMetrics
from ledger.replica import Follower
from ledger.schedule import RegulationSchedule
from ledger.sequencer import (
    InProcessSequencer,
    Sequencer,
    SequencerBusy,
    SequencerClosed,
    SequencerUnavailable,
    Ticket,
    why_stopped,
)
from ledger.store import StoredOutput
from service.health import Check, install_health
from service.http import (
    NO_TELEMETRY,
    ApiError,
    DirectRoute,
    Reply,
    bounded_asgi_body,
    draining,
    extend_openapi,
    install_error_handlers,
    internal_error,
    send_error,
    send_json,
    serve_directly,
    wait_unless_draining,
)
from service.metrics import new_registry

MAX_BLOCKS_PER_PAGE = 1_000
MIN_PREFIX_DIGITS = 4  # a shorter prefix matches too much of a ledger to name a transaction
MAX_PREFIX_MATCHES = 10
HEX_DIGITS = "0123456789abcdef"
_STATUS = {Code.MALFORMED: 400, Code.TOO_LARGE: 413}  # other rejections: 422

KEEPALIVE_S = 5.0  # an idle block stream sends a comment this often
MAX_STREAMS = 256  # block streams served at once; readers beyond are told to come back
BUSY_WAIT_S = 2.0  # how long a submission waits for room in a full sequencer
BUSY_POLL_S = 0.01
RETRY_AFTER_S = 1
SUBMIT_PATH = "/v1/transactions"
BATCH_PATH = "/v1/transactions/batch"
Queued = TypeVar("Queued", Ticket, list[Ticket])

log = logging.getLogger(__name__)


def _tx_error(status: int, code: str, message: str, txid: bytes | None = None) -> ApiError:
    """An error about a submitted transaction: it names the transaction's id (null if none)."""
    return ApiError(status, code, message, txid=None if txid is None else txid.hex())


def _hex_param(value: str, size: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != size or raw.hex() != value:
        raise ApiError(400, "bad_request", f"{what} must be {2 * size} lowercase hex digits")
    return raw


def output_to_wire(stored: StoredOutput) -> dict[str, Any]:
    return {
        "tx": stored.outpoint.txid.hex(),
        "index": stored.outpoint.index,
        "address": stored.output.address.hex(),
        "asset": asset_to_wire(stored.output.asset),
        "seq": stored.seq,
        "spent_by": stored.spent_by,
    }


def regulation_to_wire(schedule: RegulationSchedule, interval: int) -> dict[str, Any]:
    """What is in force at `interval`: prices, and every meter a regulation named."""
    prices = schedule.prices_at(interval)
    meters = []
    for meter in schedule.meters():
        status = schedule.meter_at(meter, interval)
        if status is not None:
            meters.append(
                {
                    "meter": meter,
                    "public_key": status.public_key.hex() if status.public_key else None,
                    "max_epa": status.max_epa,
                    "max_eca": status.max_eca,
                    "banned": status.banned,
                }
            )
    return {
        "interval": interval,
        "prices": {"consumption": prices.consumption, "production": prices.production},
        "meters": meters,
    }


async def _queue(queue: Callable[[], Queued]) -> Queued:
    """Queue with `queue` (a sequencer's `submit` or `submit_many`, not waiting) without ever
    blocking the event loop: while the ledger is behind, wait for room up to `BUSY_WAIT_S`,
    then answer 503 `busy` with `Retry-After` (nothing was queued, so sending it again is
    safe)."""
    waited = 0.0
    while True:
        try:
            return queue()
        except SequencerClosed as exc:
            raise ApiError(503, "unavailable", str(exc)) from None
        except SequencerBusy:
            if waited >= BUSY_WAIT_S:
                raise ApiError(
                    503,
                    "busy",
                    "the ledger is behind and queued nothing more: submit again shortly",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                ) from None
        await asyncio.sleep(BUSY_POLL_S)
        waited += BUSY_POLL_S


def _outcome_to_wire(outcome: Outcome, result: BlockResult) -> dict[str, Any]:
    """An accepted transaction's answer, or a rejected one's error object."""
    if outcome.code is not None:
        txid = None if outcome.txid is None else outcome.txid.hex()
        return {"error": {"code": outcome.code.value, "message": outcome.message, "txid": txid}}
    assert outcome.txid is not None and result.head is not None
    return {"txid": outcome.txid.hex(), "seq": outcome.seq, "height": result.head.header.height}


class _Waiting:
    """What waits on one block: the requests awaiting `LedgerNode.durable`, and the callbacks
    of `LedgerNode.when_durable`."""

    __slots__ = ("future", "then")

    def __init__(self) -> None:
        self.future: asyncio.Future[BlockResult] | None = None
        self.then: list[Callable[[Future[BlockResult]], None]] = []


class LedgerNode:
    """The ledger, its sequencer (none on a replica: `primary` is then where to submit), the
    notification of new blocks to streams, and the node's metrics (`registry`) and readiness
    (`checks`)."""

    def __init__(
        self,
        ledger: Ledger,
        primary: str | None = None,
        on_fatal: Callable[[], None] = lambda: None,
        max_streams: int = MAX_STREAMS,
        nats_servers: Sequence[str] = (),
        node_name: str = "",
        nats_replicas: int = 3,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """`on_fatal`: called once storage failed and the sequencer stopped; the process
        should then exit non-zero, so that its supervisor restarts it. `nats_servers`: order
        through the chain's JetStream stream on these servers (`ledger.jetstream`), as the
        node `node_name`, its stream replicated `nats_replicas` times; else in-process.
        `registry`: where its metrics go (default: a registry of its own)."""
        self.ledger = ledger
        self.primary = primary
        self.on_fatal = on_fatal
        self.fatal: BaseException | None = None
        self.max_streams = max_streams
        self.streams = 0
        self.head_watch: HeadWatch | None = None  # a replica's watch of its primary
        self.registry = new_registry() if registry is None else registry
        self.metrics = LedgerMetrics(
            self.registry, ledger, lambda: self.streams, lambda: self.head_watch
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._new_block = asyncio.Event()
        self._durable: dict[Future[BlockResult], _Waiting] = {}
        self.sequencer: Sequencer | None = None
        if nats_servers:
            from ledger.jetstream import JetStreamSequencer  # loads nats-py only when asked

            self.sequencer = JetStreamSequencer(
                ledger,
                nats_servers,
                node_name,
                replicas=nats_replicas,
                on_block=self._on_block,
                on_failure=self._on_failure,
                on_latency=self.metrics.count_block,
            )
        elif primary is None:
            self.sequencer = InProcessSequencer(
                ledger,
                on_block=self._on_block,
                on_failure=self._on_failure,
                on_latency=self.metrics.count_block,
            )

    def watch(self, follower: Follower, head_watch: HeadWatch | None = None) -> None:
        """On a replica: watch the primary `follower` follows, for readiness (caught up, the
        primary heard from lately) and the lag metrics; `head_watch` replaces the watch made
        here (tests). Started at once, stopped by `close`."""
        self.head_watch = head_watch or HeadWatch.of_node(follower.client.base_url)
        self.head_watch.start()

    def checks(self) -> dict[str, Check]:
        """The readiness checks: the store answers; a primary's sequencer runs, a replica
        follows its primary and is caught up."""
        checks: dict[str, Check] = {"store": self._store_problem}
        if self.sequencer is not None:
            checks["sequencer"] = self._sequencer_problem
        else:
            checks["primary"] = self._primary_problem
        return checks

    def _store_problem(self) -> str | None:
        try:
            self.ledger.store.head()
        except SQLAlchemyError as exc:
            return f"the ledger's store does not answer: {type(exc).__name__}"
        return None

    def _sequencer_problem(self) -> str | None:
        if self.fatal is not None:
            return f"{self.why_stopped()}; restart the node"
        return None if self.sequencer is None else self.sequencer.problem()

    def why_stopped(self) -> str:
        """Why the node stopped (after `on_fatal`), in one sentence."""
        return why_stopped(self.fatal)

    def _primary_problem(self) -> str | None:
        if self.head_watch is None:
            return f"the replica does not follow its primary {self.primary} yet"
        head = self.ledger.durable_head
        return self.head_watch.problem(0 if head is None else head.header.height)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._new_block = asyncio.Event()

    async def durable(self, ticket: Ticket) -> BlockResult:
        """The result of `ticket`'s block once durable (raised: why it could not be stored).
        Every request waiting on one block is woken by one call into the loop, not one each."""
        waiting = self._waiting(ticket)
        if waiting.future is None:
            waiting.future = asyncio.get_running_loop().create_future()
        return await asyncio.shield(waiting.future)  # one cancelled leaves the others waiting

    def when_durable(self, ticket: Ticket, then: Callable[[Future[BlockResult]], None]) -> None:
        """Call `then` with `ticket`'s block, done, on the event loop once it is durable or
        could not be stored: `durable` without a task (`DirectSubmission`)."""
        self._waiting(ticket).then.append(then)

    def _waiting(self, ticket: Ticket) -> _Waiting:
        block = ticket.block
        waiting = self._durable.get(block)
        if waiting is None:
            loop = asyncio.get_running_loop()
            waiting = self._durable[block] = _Waiting()
            block.add_done_callback(lambda done: loop.call_soon_threadsafe(self._settled, done))
        return waiting

    def _settled(self, block: Future[BlockResult]) -> None:  # the event loop
        waiting = self._durable.pop(block)
        future, failure = waiting.future, block.exception()
        if future is not None and failure is not None:
            future.set_exception(failure)
            future.exception()  # retrieved here: a block nobody waits on any more is no error
        elif future is not None:
            future.set_result(block.result())
        for then in waiting.then:
            try:
                then(block)
            except Exception:  # one waiter's fault leaves the others answered
                log.exception("a callback on a durable block failed")

    def _on_failure(self, exc: BaseException) -> None:  # the sequencer's threads
        self.fatal = exc
        log.critical("%s", self.why_stopped(), exc_info=exc)
        self.on_fatal()

    def _on_block(self, _: BlockResult) -> None:  # the ledger's writer thread
        self.notify_block()

    def notify_block(self) -> None:
        """Wake the block streams; safe from any thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        event, self._new_block = self._new_block, asyncio.Event()
        event.set()

    async def next_block(self, timeout_s: float) -> None:
        """Return after the next durable block, or after `timeout_s`."""
        event = self._new_block
        with suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)

    def cosignatures(self, head: SignedHead) -> list[dict[str, str]]:
        """The other sequencers' signatures on `head`'s header that this node gathered (a
        replicated ledger's nodes each sign the heads they compute; none in-process)."""
        gathered = getattr(self.sequencer, "cosignatures", None)
        if gathered is None:
            return []
        return [
            {"sequencer_key": h.sequencer_key.hex(), "signature": h.signature.hex()}
            for h in gathered(head.header.height)
        ]

    def block_wire(self, head: SignedHead) -> dict[str, Any]:
        bodies = self.ledger.store.block_transactions(head)
        return {"head": head.to_wire(), "transactions": [t.body.hex() for t in bodies]}

    def close(self) -> None:
        if self.sequencer is not None:
            self.sequencer.close()
        if self.head_watch is not None:
            self.head_watch.stop()


def create_app(node: LedgerNode) -> FastAPI:
    """The FastAPI application serving `node` under /v1."""
    store = node.ledger.store

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        node.bind(asyncio.get_running_loop())
        yield

    app = FastAPI(
        title="PETra ledger node",
        version="1",
        description="Submit transactions, read the ledger, and audit it with Merkle proofs.",
        lifespan=lifespan,
        telemetry=NO_TELEMETRY,
    )

    install_error_handlers(app)
    install_health(app, node.checks())
    app.add_middleware(SubmissionRoutes, node=node)
    serve_directly(app, {SUBMIT_PATH: DirectSubmission(node).route()})
    _document_submissions(app)

    @app.get("/v1/transactions", summary="The ids of the transactions starting with a prefix")
    def transactions_by_prefix(prefix: str) -> dict[str, Any]:
        given = prefix.lower()
        if not MIN_PREFIX_DIGITS <= len(given) <= 64 or not set(given) <= set(HEX_DIGITS):
            raise ApiError(
                400, "bad_request", f"prefix must be {MIN_PREFIX_DIGITS} to 64 hex digits"
            )
        found = store.txids_with_prefix(given, MAX_PREFIX_MATCHES + 1)
        return {
            "prefix": given,
            "txids": [txid.hex() for txid in found[:MAX_PREFIX_MATCHES]],
            "more": len(found) > MAX_PREFIX_MATCHES,
        }

    @app.get("/v1/transactions/{txid}", summary="A transaction with its block and position")
    def transaction(txid: str) -> dict[str, Any]:
        stored = store.transaction(_hex_param(txid, 32, "txid"))
        if stored is None:
            raise ApiError(404, "not_found", f"no transaction {txid} on this ledger")
        return {
            "txid": txid,
            "seq": stored.seq,
            "height": stored.height,
            "type": stored.type,
            "transaction": json.loads(stored.body),
        }

    @app.get("/v1/outputs/{txid}/{index}", summary="An output and whether it was spent")
    def output(txid: str, index: Annotated[int, Path(ge=0, le=MAX_INT)]) -> dict[str, Any]:
        outpoint = Outpoint(_hex_param(txid, 32, "txid"), index)
        found = store.outputs({outpoint}) if 0 <= index < MAX_OUTPUTS else {}
        if outpoint not in found:
            raise ApiError(404, "not_found", f"no output {txid}:{index} on this ledger")
        return output_to_wire(found[outpoint])

    @app.get("/v1/addresses/{address}/unspent", summary="An address's unspent outputs")
    def unspent(address: str) -> dict[str, Any]:
        owner = _hex_param(address, 32, "address")
        return {"address": address, "outputs": [output_to_wire(o) for o in store.unspent(owner)]}

    @app.get("/v1/head", summary="The latest signed tree head")
    def head() -> dict[str, Any]:
        current = store.head()
        if current is None:
            raise ApiError(404, "not_found", "the ledger has no block yet")
        return {**current.to_wire(), "cosignatures": node.cosignatures(current)}

    @app.get("/v1/blocks/{height}", summary="A block: its signed head and transactions")
    def block(height: Annotated[int, Path(ge=1, le=MAX_INT)]) -> dict[str, Any]:
        found = store.block(height)
        if found is None:
            raise ApiError(404, "not_found", f"no block at height {height}")
        return node.block_wire(found)

    @app.get("/v1/blocks", summary="Blocks from a height on")
    def blocks(
        from_: Annotated[int, Query(alias="from", ge=1, le=MAX_INT)] = 1,
        limit: Annotated[int, Query(ge=1, le=MAX_BLOCKS_PER_PAGE)] = 100,
    ) -> dict[str, Any]:
        return {"blocks": [node.block_wire(h) for h in store.blocks_from(from_, limit)]}

    def durable_size() -> int:
        current = store.head()
        return 0 if current is None else current.header.tree_size

    @app.get("/v1/proofs/inclusion", summary="RFC 9162 inclusion proof of a transaction")
    def inclusion(
        txid: str | None = None,
        index: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
        size: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    ) -> dict[str, Any]:
        if (txid is None) == (index is None):
            raise ApiError(400, "bad_request", "give exactly one of txid and index")
        if txid is not None:
            stored = store.transaction(_hex_param(txid, 32, "txid"))
            if stored is None:
                raise ApiError(404, "not_found", f"no transaction {txid} on this ledger")
            index = stored.seq
        assert index is not None
        tree_size = durable_size() if size is None else size
        if not index < tree_size <= durable_size():
            raise ApiError(
                400, "bad_request", f"need index < size <= {durable_size()} (the durable size)"
            )
        return {
            "index": index,
            "size": tree_size,
            "leaf_hash": store.perfect_node(0, index).hex(),
            "proof": [h.hex() for h in node.ledger.inclusion_proof(index, tree_size)],
        }

    @app.get("/v1/proofs/consistency", summary="RFC 9162 consistency proof between two sizes")
    def consistency(
        old: Annotated[int, Query(ge=0, le=MAX_INT)],
        new: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    ) -> dict[str, Any]:
        new_size = durable_size() if new is None else new
        if not old <= new_size <= durable_size():
            raise ApiError(
                400, "bad_request", f"need old <= new <= {durable_size()} (the durable size)"
            )
        proof = node.ledger.consistency_proof(old, new_size)
        return {"old_size": old, "new_size": new_size, "proof": [h.hex() for h in proof]}

    @app.get("/v1/regulation/{interval}", summary="Prices, meters and limits in force")
    def regulation(interval: Annotated[int, Path(ge=-MAX_INT, le=MAX_INT)]) -> dict[str, Any]:
        return regulation_to_wire(node.ledger.state.schedule, interval)

    @app.get("/v1/genesis", summary="The genesis this ledger belongs to")
    def genesis() -> dict[str, Any]:
        return genesis_to_wire(node.ledger.genesis)

    @app.get("/v1/stream/blocks", summary="Server-Sent Events: every block, in order")
    async def stream(
        request: Request,
        from_: Annotated[int | None, Query(alias="from", ge=1, le=MAX_INT)] = None,
    ) -> StreamingResponse:
        if node.streams >= node.max_streams:
            raise ApiError(
                503,
                "busy",
                f"this node already streams blocks to {node.max_streams} readers: "
                "try again later, or read /v1/blocks",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        current = store.head()
        next_height = 1 if current is None else current.header.height + 1
        start = next_height if from_ is None else from_
        node.streams += 1  # counted from here: the generator's finally gives it back

        stopping = draining(request)

        async def events() -> AsyncIterator[bytes]:
            height = start
            try:
                while not stopping.is_set() and not await request.is_disconnected():
                    heads = await asyncio.to_thread(store.blocks_from, height, 100)
                    for found in heads:
                        data = json.dumps(await asyncio.to_thread(node.block_wire, found))
                        yield (
                            f"event: block\nid: {found.header.height}\ndata: {data}\n\n"
                        ).encode()
                        height = found.header.height + 1
                    if not heads:
                        yield b": waiting\n\n"  # keeps proxies from closing an idle stream
                        await wait_unless_draining(node.next_block(KEEPALIVE_S), stopping)
            finally:
                node.streams -= 1

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _tx_too_large() -> ApiError:
    return _tx_error(413, "too_large", f"the body is over {MAX_TX_BYTES} bytes")


def _batch_too_large() -> ApiError:
    return ApiError(
        413,
        "too_large",
        f"a batch holds at most {MAX_BATCH} transactions and {MAX_BATCH_BYTES} bytes: split it",
    )


class SubmissionRoutes:
    """A pure ASGI middleware serving the two submission routes, `POST /v1/transactions` and
    `POST /v1/transactions/batch`, before FastAPI's routing, validation and encoding (a
    submission is most of a node's requests); every other request goes on to `app`. Answers
    and errors are those of docs/api.md, byte for byte."""

    def __init__(self, app: ASGIApp, node: LedgerNode) -> None:
        self.app = app
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            try:
                if path == SUBMIT_PATH:
                    await send_json(send, 200, await self.submit(scope, receive))
                    return
                if path == BATCH_PATH:
                    await send_json(send, 200, await self.submit_batch(scope, receive))
                    return
            except ApiError as exc:
                await send_error(send, exc)
                return
        await self.app(scope, receive, send)

    async def submit(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        """One transaction: its answer once its block is durable, or its rejection raised."""
        raw = await bounded_asgi_body(scope, receive, MAX_TX_BYTES, _tx_too_large)
        return await _submitted(self.node, raw)

    async def submit_batch(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        """A batch (`ledger.batch`): each transaction's answer or error object, in order, once
        every block holding one is durable. A transaction over `MAX_TX_BYTES` is refused
        `too_large` alone, as a single submission of it would be."""
        raws = split_batch(
            await bounded_asgi_body(scope, receive, MAX_BATCH_BYTES, _batch_too_large)
        )
        if not raws:
            raise ApiError(400, "bad_request", "the batch holds no transaction")
        if len(raws) > MAX_BATCH:
            raise _batch_too_large()
        sequencer = _sequencer(self.node)
        fitting = [raw for raw in raws if len(raw) <= MAX_TX_BYTES]
        tickets = iter(await _queue(partial(sequencer.submit_many, fitting, wait=False)))
        oversized = {
            "error": {
                "code": Code.TOO_LARGE.value,
                "message": f"the body is over {MAX_TX_BYTES} bytes",
                "txid": None,
            }
        }
        results: list[dict[str, Any]] = []
        for raw in raws:
            if len(raw) > MAX_TX_BYTES:
                results.append(oversized)
                continue
            ticket = next(tickets)
            result = await _durable(self.node, ticket)
            results.append(_outcome_to_wire(result.outcomes[ticket.index], result))
        return {"results": results}


class DirectSubmission:
    """`POST /v1/transactions` answered by the HTTP server itself (`service.http.DirectRoute`),
    with the answers of `SubmissionRoutes.submit`: queued at once, answered when its block is
    durable by one callback per block, without a task, middleware or ASGI messages per
    request (which cost a busy node more than its checks). A submission that must wait for
    room in the sequencer takes the ASGI route's way, on a task of its own."""

    def __init__(self, node: LedgerNode) -> None:
        self.node = node
        self._waiting: set[asyncio.Task[None]] = set()  # the waits for room, kept alive

    def route(self) -> DirectRoute:
        return DirectRoute(MAX_TX_BYTES, _tx_too_large, self.submit)

    def submit(self, raw: bytes, reply: Reply) -> None:
        try:
            ticket = _sequencer(self.node).submit(raw, wait=False)
        except SequencerBusy:
            task = asyncio.get_running_loop().create_task(self._submit_later(raw, reply))
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)
            return
        except SequencerClosed as exc:
            reply.error(ApiError(503, "unavailable", str(exc)))
            return
        except ApiError as exc:
            reply.error(exc)
            return
        self.node.when_durable(ticket, partial(self._reply, ticket, reply))

    def _reply(self, ticket: Ticket, reply: Reply, block: Future[BlockResult]) -> None:
        try:
            answer = _answer(ticket, _stored(block))
        except Exception as exc:
            _refuse(reply, exc)
            return
        reply.json(200, answer)

    async def _submit_later(self, raw: bytes, reply: Reply) -> None:
        try:
            answer = await _submitted(self.node, raw)
        except Exception as exc:
            _refuse(reply, exc)
            return
        reply.json(200, answer)


def _refuse(reply: Reply, exc: Exception) -> None:
    """Answer a submission that could not be answered 200: its error, or 500 `internal`."""
    if isinstance(exc, ApiError):
        reply.error(exc)
        return
    log.error("a submission's answer could not be made", exc_info=exc)
    reply.error(internal_error())


async def _submitted(node: LedgerNode, raw: bytes) -> dict[str, Any]:
    """One transaction's answer once its block is durable, or its rejection raised."""
    ticket = await _queue(partial(_sequencer(node).submit, raw, wait=False))
    return _answer(ticket, await _durable(node, ticket))


def _answer(ticket: Ticket, result: BlockResult) -> dict[str, Any]:
    """A single submission's answer in its durable block, or its rejection raised."""
    outcome = result.outcomes[ticket.index]
    if outcome.code is not None:
        status = _STATUS.get(outcome.code, 422)
        raise _tx_error(status, outcome.code, outcome.message, outcome.txid)
    return _outcome_to_wire(outcome, result)


def _sequencer(node: LedgerNode) -> Sequencer:
    if node.sequencer is None:
        raise _tx_error(503, "read_only", f"this node is a replica: submit to {node.primary}")
    return node.sequencer


async def _durable(node: LedgerNode, ticket: Ticket) -> BlockResult:
    try:
        return await node.durable(ticket)
    except Exception as exc:
        raise _unstored(exc) from None


def _stored(block: Future[BlockResult]) -> BlockResult:
    """A done block's result, or why it could not be stored raised as the answer's error."""
    failure = block.exception()
    if failure is not None:
        raise _unstored(failure)
    return block.result()


def _unstored(exc: BaseException) -> ApiError:
    """The answer to a submission whose block could not be stored (`exc`)."""
    if isinstance(exc, SequencerUnavailable):
        return ApiError(503, "unavailable", f"{exc}: submit it again", headers={"Retry-After": "1"})
    return ApiError(503, "unavailable", f"the ledger could not store the block: {exc}")


def _document_submissions(app: FastAPI) -> None:
    """Add the two submission routes `SubmissionRoutes` serves to the OpenAPI document."""

    def extend(document: dict[str, Any]) -> None:
        answered = {"200": {"description": "Every transaction's outcome once durable"}}
        document["paths"].setdefault(SUBMIT_PATH, {})["post"] = {
            "summary": "Submit a transaction; answers once its block is durable",
            "operationId": "submit_v1_transactions_post",
            **request_body(TRANSACTION),
            "responses": {"200": {"description": "Accepted, once its block is durable"}},
        }
        document["paths"][BATCH_PATH] = {
            "post": {
                "summary": f"Submit up to {MAX_BATCH} transactions, one per line (NDJSON)",
                "operationId": "submit_batch_v1_transactions_batch_post",
                # described, not typed: OpenAPI tools have no serializer for NDJSON
                "description": f"Body ({NDJSON}): one transaction's canonical JSON per line.",
                "responses": answered,
            }
        }

    extend_openapi(app, extend)
