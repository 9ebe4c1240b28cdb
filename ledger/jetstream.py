"""Ordering by a replicated log (DESIGN.md section 6): a NATS JetStream stream per chain.

Every ledger node of a chain consumes the chain's stream from its start and applies it
through the same rules, so every node reaches the same blocks, state and roots, byte for
byte. The stream holds two kinds of message, in one total order:

- `petra.<chain>.tx`: a transaction, published by whichever node a client submitted it to,
  once it passed the static checks there; its `Nats-Msg-Id` is its txid, so that a client
  retrying through another node within the duplicate window adds nothing to the stream.
- `petra.<chain>.cut`: `{"time": T}`, which closes the block of every transaction since the
  previous cut. The block's time is the later of T and the previous block's: the ledger's
  clock never goes backwards, whatever a node's clock says.

Cuts are published by one node at a time, the holder of a lease in a JetStream key-value
bucket that expires `lease_s` after its holder stops renewing it; any node takes it over
then. The lease is for efficiency only: two nodes cutting at once make more, smaller blocks,
never different ones, since every node applies the stream in its order (and a cut after the
same transaction as another is the same message: `Nats-Msg-Id` `cut-<seq>`).

A submitter is answered once its transaction's block is durable here. The node keeps the
outcomes of the last `RECENT_OUTCOMES` stream messages, to answer a submission that the stream
found a duplicate of one already applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.kv import KeyValue

from assets import Code
from ledger.blocks import SignedHead
from ledger.client import LedgerProtocolError, head_from_wire
from ledger.ledger import BlockResult, Divergence, Ledger, Outcome
from ledger.pipeline import BlockPipeline
from ledger.sequencer import SequencerClosed, SequencerUnavailable, Ticket, why_stopped
from ledger.static import StaticVerdict, check_batch
from service.clock import now as ledger_now

REPLICAS = 3
DUPLICATE_WINDOW_S = 600.0  # longer than any client's retries (BidStoreClient, LedgerClient)
LEASE_S = 2.0  # a silent lease holder is replaced this long after its last renewal
CUT_LINGER_S = 0.005  # how long the cutter lets a block gather after its first transaction
MAX_BLOCK = 2_000  # the cutter cuts at once when this many wait
PUBLISH_TIMEOUT_S = 5.0
# How long a transaction is published again while the stream answers nobody (an election
# takes NATS a few seconds), and the first pause between tries (doubled up to a second).
PUBLISH_PATIENCE_S = 10.0
PUBLISH_PAUSE_S = 0.05
CONNECT_TIMEOUT_S = 30.0
RECENT_OUTCOMES = 100_000
KEPT_REJECTIONS = 100_000  # the most rejections kept by txid for the duplicate window
KEPT_VERDICTS = 100_000  # the most static verdicts kept for transactions published from here
FEED_DEPTH = 8  # blocks cut and waiting for the pipeline before the event loop waits too
LEASE_KEY = "cutter"
KEPT_HEADS = 10_000  # heights whose co-signatures a node keeps in memory, to serve and judge

log = logging.getLogger(__name__)


def stream_name(chain: bytes) -> str:
    return f"PETRA-{chain.hex()}"


def lease_bucket(chain: bytes) -> str:
    return f"PETRA-CUT-{chain.hex()}"


def heads_stream(chain: bytes) -> str:
    return f"PETRA-HEADS-{chain.hex()}"


def heads_subjects(chain: bytes) -> str:
    """Every subject of the chain's heads stream."""
    return f"petra-heads.{chain.hex()}.>"


def head_subject(chain: bytes, height: int, key: bytes) -> str:
    """Where the node signing with `key` publishes its head at `height` (one message each)."""
    return f"petra-heads.{chain.hex()}.{height}.{key.hex()}"


def chain_subjects(chain: bytes) -> str:
    """Every subject of the chain's stream (its transactions and cuts)."""
    return f"petra.{chain.hex()}.>"


def tx_subject(chain: bytes) -> str:
    return f"petra.{chain.hex()}.tx"


def cut_subject(chain: bytes) -> str:
    return f"petra.{chain.hex()}.cut"


class JetStreamSequencer:
    """Orders a chain's submissions through its JetStream stream and applies the stream to
    `ledger` (the `Sequencer` interface). `servers`: the cluster's client URLs; `name`: this
    node's name in the lease (unique in the cluster)."""

    def __init__(
        self,
        ledger: Ledger,
        servers: Sequence[str],
        name: str,
        replicas: int = REPLICAS,
        clock: Callable[[], float] = ledger_now,
        on_block: Callable[[BlockResult], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        on_latency: Callable[[BlockResult, float], None] | None = None,
        workers: int | None = None,
        lease_s: float = LEASE_S,
        linger_s: float = CUT_LINGER_S,
        max_block: int = MAX_BLOCK,
    ) -> None:
        self.ledger = ledger
        self.chain = ledger.chain
        self.servers = list(servers)
        self.name = name
        self.replicas = replicas
        self.clock = clock
        self.on_block = on_block
        self.on_failure = on_failure
        self.on_latency = on_latency  # each block and the seconds from its first message here
        self.lease_s = lease_s
        self.linger_s = linger_s
        self.max_block = max_block
        self.holds_lease = False
        self._pipeline = BlockPipeline(ledger, workers)
        self._block_time = ledger.time
        offset = ledger.store.source_offset()
        if ledger.head is not None and offset is None:
            raise ValueError("the store holds blocks from another source than a stream")
        self._applied_through = offset or 0
        self._gathering: list[tuple[int, bytes]] = []  # (stream sequence, transaction)
        self._gathering_since = 0.0  # when the first of them arrived (monotonic)
        self._last_tx_seq = 0
        self._cut_timer: asyncio.TimerHandle | None = None
        self._pending: dict[int, list[Future[BlockResult]]] = {}
        self._recent: OrderedDict[int, BlockResult] = OrderedDict()
        # rejections by txid, for the stream's duplicate window: a resubmission within it is
        # not judged again (the stream drops it) and is answered from here
        self._rejected: OrderedDict[bytes, tuple[float, BlockResult]] = OrderedDict()
        # the static verdicts of what this node published, by its bytes: a transaction this
        # node checked is not checked again when the stream brings it back
        self._checked: OrderedDict[bytes, StaticVerdict] = OrderedDict()
        # batches checked on the workers are published in the order they were submitted,
        # and a single submission after the batch submitted before it
        self._batches_lock = threading.Lock()
        self._last_batch: Future[None] | None = None
        # the other nodes' signed heads, by height and key (signatures checked)
        self._heads: OrderedDict[int, dict[bytes, SignedHead]] = OrderedDict()
        self._dissent: set[tuple[int, bytes]] = set()  # (height, key) already reported
        self._failure: BaseException | None = None
        self._closing = False
        self._closed = False
        # blocks closed on the event loop, handed to the pipeline by a thread of their own:
        # the pipeline blocks while it is full, and the loop must go on renewing the lease
        self._feed: queue.Queue[_Closed | None] = queue.Queue(maxsize=FEED_DEPTH)
        self._feeder = threading.Thread(
            target=self._feed_loop, name="ledger-jetstream-feed", daemon=True
        )
        self._feeder.start()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ledger-jetstream", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._start(), CONNECT_TIMEOUT_S)
        except BaseException as exc:
            self._stop_loop()
            self._stop_feeder()
            self._pipeline.close()
            if isinstance(exc, nats.errors.Error | TimeoutError):
                raise SequencerUnavailable(
                    f"the NATS cluster ({', '.join(self.servers)}) did not set up this "
                    f"node's stream and subscriptions in time: {exc or type(exc).__name__}"
                ) from exc
            raise

    # ------------------------------------------------------------------ the loop's side

    def _call(self, coroutine: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _start(self) -> None:
        self._nc = await nats.connect(
            self.servers,
            name=f"petra-ledger-{self.name}",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            connect_timeout=2,
            allow_reconnect=True,
        )
        self._js = self._nc.jetstream(timeout=PUBLISH_TIMEOUT_S)
        await self._ensure_stream(  # the chain's transactions and cuts, in one order
            name=stream_name(self.chain),
            subjects=[chain_subjects(self.chain)],
            duplicate_window=DUPLICATE_WINDOW_S,
        )
        await self._ensure_stream(  # the nodes' signed heads: one per height and node
            name=heads_stream(self.chain),
            subjects=[heads_subjects(self.chain)],
            max_msgs_per_subject=1,
        )
        self._kv = await self._ensure_bucket()
        # A consumer's creation may time out while a stream just made elects its leader: it
        # is asked again, each time with a configuration (and a delivery inbox) of its own,
        # so that a consumer made by a request that timed out delivers to nobody here.
        self._subscription = await _until_ready(
            lambda: self._js.subscribe(
                chain_subjects(self.chain),
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                config=api.ConsumerConfig(opt_start_seq=self._applied_through + 1),
                cb=self._on_message,
            )
        )
        self._heads_subscription = await _until_ready(
            lambda: self._js.subscribe(
                heads_subjects(self.chain),
                ordered_consumer=True,
                config=api.ConsumerConfig(),
                cb=self._on_head,
            )
        )
        self._lease_task = self._loop.create_task(self._keep_lease())

    async def _ensure_stream(self, **settings: Any) -> None:
        """Create a stream of this node's file storage and replicas (kept when it exists)."""
        config = api.StreamConfig(
            storage=api.StorageType.FILE,
            num_replicas=self.replicas,
            retention=api.RetentionPolicy.LIMITS,
            **settings,
        )
        await _until_ready(lambda: self._js.add_stream(config))

    async def _ensure_bucket(self) -> KeyValue:
        config = api.KeyValueConfig(
            bucket=lease_bucket(self.chain),
            history=1,
            ttl=self.lease_s,
            storage=api.StorageType.FILE,
            replicas=self.replicas,
        )
        return await _until_ready(lambda: self._js.create_key_value(config))  # type: ignore[no-any-return]

    async def _on_message(self, msg: Any) -> None:
        seq = msg.metadata.sequence.stream
        kind = msg.subject.rsplit(".", 1)[1]
        if kind == "tx":
            if not self._gathering:
                self._gathering_since = time.monotonic()
            self._gathering.append((seq, msg.data))
            self._last_tx_seq = seq
            self._plan_cut()
        elif kind == "cut":
            self._close_block(seq, msg.data)

    def _close_block(self, cut_seq: int, body: bytes) -> None:
        if self._failure is not None:
            return  # stopped: nothing more is applied
        if self._cut_timer is not None:  # this cut closes what the timer was to close
            self._cut_timer.cancel()
            self._cut_timer = None
        gathered, self._gathering = self._gathering, []
        if not gathered:
            return  # a cut after a cut: no block
        try:
            cut_time = int(json.loads(body)["time"])
        except (ValueError, KeyError, TypeError):
            cut_time = self._block_time  # a malformed cut closes the block at the last time
        self._block_time = max(self._block_time, cut_time)
        raws = [raw for _, raw in gathered]
        known = [self._checked.pop(raw, None) for raw in raws] if self._checked else ()
        seqs = [seq for seq, _ in gathered]
        self._feed.put(_Closed(raws, self._block_time, cut_seq, known, seqs, self._gathering_since))

    def _feed_loop(self) -> None:
        """Hand each closed block to the pipeline, in the stream's order (the feeder's
        thread); each block's result comes back to the loop (`_applied`)."""
        while (closed := self._feed.get()) is not None:
            try:
                block = self._pipeline.submit(
                    closed.raws, closed.time, closed.cut_seq, closed.known
                )
            except BaseException as exc:
                self._loop.call_soon_threadsafe(self._fail, exc)
                continue
            block.add_done_callback(partial(self._block_done, closed))

    def _block_done(self, closed: _Closed, block: Future[BlockResult]) -> None:
        self._loop.call_soon_threadsafe(
            self._applied, closed.seqs, closed.cut_seq, block, closed.opened
        )

    def _applied(
        self, seqs: list[int], cut_seq: int, block: Future[BlockResult], opened: float
    ) -> None:
        failure = block.exception()
        if failure is not None:
            self._fail(failure)
            return
        result = block.result()
        if self.on_latency is not None:
            self.on_latency(result, time.monotonic() - opened)
        now = self._loop.time()
        for seq, outcome in zip(seqs, result.outcomes, strict=True):
            answer = BlockResult(result.head, [outcome])
            self._recent[seq] = answer
            if outcome.code is not None and outcome.txid is not None:
                self._rejected[outcome.txid] = (now, BlockResult(None, [outcome]))
            for waiting in self._pending.pop(seq, ()):
                waiting.set_result(answer)
        while len(self._recent) > RECENT_OUTCOMES:
            self._recent.popitem(last=False)
        while self._rejected and (
            len(self._rejected) > KEPT_REJECTIONS
            or next(iter(self._rejected.values()))[0] < now - DUPLICATE_WINDOW_S
        ):
            self._rejected.popitem(last=False)
        self._applied_through = cut_seq
        if result.head is not None:
            self._loop.create_task(self._publish_head(result.head))
            self._judge(result.head.header.height)
        if self.on_block is not None:
            self.on_block(result)

    async def _publish_head(self, head: SignedHead) -> None:
        """Publish this node's signature on a head, for the other nodes and for auditors."""
        subject = head_subject(self.chain, head.header.height, head.sequencer_key)
        try:
            await self._js.publish(
                subject, json.dumps(head.to_wire()).encode(), stream=heads_stream(self.chain)
            )
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("could not publish the head of block %d: %s", head.header.height, exc)

    async def _on_head(self, msg: Any) -> None:
        try:
            head = head_from_wire(json.loads(msg.data))
        except (ValueError, LedgerProtocolError) as exc:
            log.warning("a message of the heads stream is no signed head: %s", exc)
            return
        key = head.sequencer_key
        if head.header.chain != self.chain or key == self.ledger.sequencer_key.public_key:
            return
        if not head.verifies(self.ledger.genesis.sequencer_keys):
            log.warning("a head of height %d does not verify: ignored", head.header.height)
            return
        height = head.header.height
        self._heads.setdefault(height, {})[key] = head
        while len(self._heads) > KEPT_HEADS:
            self._heads.popitem(last=False)
        self._judge(height)

    def _judge(self, height: int) -> None:
        """Compare the other nodes' heads at `height` with this node's, once it has one: a
        node that signed another header diverges. When a majority of the chain's sequencers
        agree on a header that is not this node's, this node is the one whose history
        differs (its store tampered with, or fed another history): it stops, with the
        evidence in its log."""
        others = self._heads.get(height)
        if not others or self._failure is not None:
            return
        durable = self.ledger.durable_head
        if durable is None or durable.header.height < height:
            return  # judged when this node's block of that height is durable
        mine = self.ledger.store.block(height)
        if mine is None:
            return
        differing = [h for h in others.values() if h.header != mine.header]
        if not differing:
            return
        agreeing = Counter(h.header for h in differing)
        header, count = agreeing.most_common(1)[0]
        keys = self.ledger.genesis.sequencer_keys
        if count > len(keys) // 2:
            witness = next(h for h in differing if h.header == header)
            evidence = {
                "height": height,
                "mine": mine.to_wire(),
                "theirs": [h.to_wire() for h in differing if h.header == header],
            }
            log.critical("this node's history diverges; evidence: %s", json.dumps(evidence))
            reason = (
                f"{count} of the chain's {len(keys)} sequencers signed another head at height "
                f"{height} than this node's"
            )
            self._fail(Divergence(witness, reason, mine.header))
            return
        for head in differing:
            if (height, head.sequencer_key) not in self._dissent:
                self._dissent.add((height, head.sequencer_key))
                log.error(
                    "sequencer %s signed another head at height %d than this node and the "
                    "others: its node diverges; evidence: %s",
                    head.sequencer_key.hex()[:16],
                    height,
                    json.dumps({"mine": mine.to_wire(), "theirs": head.to_wire()}),
                )

    def cosignatures(self, height: int) -> list[SignedHead]:
        """The other nodes' signed heads at `height` that match this node's (signatures
        checked), as far as this node heard them; none for heights long past."""
        mine = self.ledger.store.block(height)
        others = list(self._heads.get(height, {}).copy().values())  # the loop may add to it
        return [h for h in others if mine is not None and h.header == mine.header]

    def _fail(self, exc: BaseException) -> None:
        first = self._failure is None
        self._failure = exc
        self._raise_pending(exc)
        if first and self.on_failure is not None:
            self.on_failure(exc)

    def _plan_cut(self) -> None:
        if not self.holds_lease or not self._gathering or self._failure is not None:
            return
        if len(self._gathering) >= self.max_block:
            self._cut_now()
        elif self._cut_timer is None:
            self._cut_timer = self._loop.call_later(self.linger_s, self._cut_now)

    def _cut_now(self) -> None:
        if self._cut_timer is not None:
            self._cut_timer.cancel()
            self._cut_timer = None
        if self._gathering:
            self._loop.create_task(self._publish_cut(self._last_tx_seq))

    async def _publish_cut(self, after: int) -> None:
        body = json.dumps({"time": int(self.clock())}).encode()
        try:
            await self._js.publish(
                cut_subject(self.chain),
                body,
                stream=stream_name(self.chain),
                headers={"Nats-Msg-Id": f"cut-{after}"},
            )
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("could not publish a block cut: %s; trying again", exc)
            await asyncio.sleep(0.1)
            if self._gathering and not self._closing:
                self._cut_now()

    async def _keep_lease(self) -> None:
        """Take the cutter's lease when free, renew it while held (every quarter of its
        life), and let it go at close."""
        revision: int | None = None
        renewed = 0.0
        while not self._closing:
            now = self._loop.time()
            try:
                if revision is None:
                    revision = await self._kv.create(LEASE_KEY, self.name.encode())
                    log.info("this node cuts the blocks of chain %s", self.chain.hex()[:16])
                else:
                    revision = await self._kv.update(LEASE_KEY, self.name.encode(), last=revision)
                renewed = now
            except nats.js.errors.KeyWrongLastSequenceError:
                if revision is not None:
                    log.info("another node took the lease to cut blocks")
                revision = None
            except (TimeoutError, nats.errors.Error) as exc:
                log.debug("the lease could not be renewed: %s", exc)
                if revision is not None and now - renewed > self.lease_s / 2:
                    revision = None  # others may take it over soon: stop cutting
            held = revision is not None
            if held and not self.holds_lease:
                self.holds_lease = True
                self._plan_cut()
            self.holds_lease = held
            await asyncio.sleep(self.lease_s / 4)
        if revision is not None and self._nc.is_connected:  # else it expires on its own
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await self._kv.delete(LEASE_KEY, last=revision)

    async def _publish(
        self, raw: bytes, answer: Future[BlockResult], previous: Future[None] | None
    ) -> None:
        """Check `raw` here (one transaction: quicker than a round trip to a worker) and
        publish it once the batch submitted before it (`previous`) was."""
        verdict = check_batch(self.ledger.genesis, [raw])[0]
        await _published_first(previous, [answer])
        await self._publish_checked(raw, verdict, answer)

    async def _publish_batch(
        self,
        raws: Sequence[bytes],
        checked: Future[list[StaticVerdict]],
        answers: list[Future[BlockResult]],
        previous: Future[None] | None,
        published: Future[None],
    ) -> None:
        """Publish `raws` once the workers checked them, all at once, in order and after the
        batch submitted before (`previous`); `published` tells the next batch."""
        try:
            verdicts = checked.result()
        except BaseException:  # a worker died: check them here instead
            log.exception("the workers could not check a batch; it is checked on the loop")
            verdicts = check_batch(self.ledger.genesis, raws)
        try:
            await _published_first(previous, answers)
        except asyncio.CancelledError:
            published.set_result(None)
            raise
        # tasks take their first step in the order they were made: each sends its message
        # there, before the next batch, woken after them, makes its own
        tasks = [
            asyncio.ensure_future(self._publish_checked(raw, verdict, answer))
            for raw, verdict, answer in zip(raws, verdicts, answers, strict=True)
        ]
        published.set_result(None)
        await asyncio.gather(*tasks)

    async def _publish_checked(
        self, raw: bytes, verdict: StaticVerdict, answer: Future[BlockResult]
    ) -> None:
        try:
            await self._publish_verdict(raw, verdict, answer)
        except asyncio.CancelledError:  # at shutdown, before the stream answered
            _unpublished([answer])
            raise

    async def _publish_verdict(
        self, raw: bytes, verdict: StaticVerdict, answer: Future[BlockResult]
    ) -> None:
        if verdict.code is not None:
            outcome = Outcome(verdict.txid, verdict.code, verdict.message)
            answer.set_result(BlockResult(None, [outcome]))
            return
        assert verdict.txid is not None
        self._checked[raw] = verdict
        while len(self._checked) > KEPT_VERDICTS:
            self._checked.popitem(last=False)
        try:
            ack = await self._publish_patiently(raw, verdict.txid)
        except (TimeoutError, nats.errors.Error) as exc:
            answer.set_exception(
                SequencerUnavailable(f"the chain's stream did not take the transaction: {exc}")
            )
            return
        if self._failure is not None:
            answer.set_exception(self._failure)
        elif ack.seq <= self._applied_through:
            self._answer_applied(ack.seq, verdict.txid, answer)
        else:
            self._pending.setdefault(ack.seq, []).append(answer)

    async def _publish_patiently(self, raw: bytes, txid: bytes) -> api.PubAck:
        """Publish a transaction to the chain's stream; while the stream gives no answer (its
        leader stepped down or died and another is being elected), again under the same
        `Nats-Msg-Id`, for up to `PUBLISH_PATIENCE_S`. The stream keeps one copy of a message
        id within its duplicate window, so a copy that did land before its answer was lost is
        not ordered twice. A transaction published again may land after transactions
        submitted after it, as a client's own retry would."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_PATIENCE_S
        pause = PUBLISH_PAUSE_S
        while True:
            try:
                return await self._js.publish(
                    tx_subject(self.chain),
                    raw,
                    stream=stream_name(self.chain),
                    headers={"Nats-Msg-Id": txid.hex()},
                )
            except (
                TimeoutError,
                nats.js.errors.NoStreamResponseError,
                nats.js.errors.ServiceUnavailableError,
            ):
                if self._closing or loop.time() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _answer_applied(self, seq: int, txid: bytes, answer: Future[BlockResult]) -> None:
        """Answer a submission the stream already held and this node already applied."""
        known = self._recent.get(seq)
        if known is not None:
            answer.set_result(known)
            return
        stored = self.ledger.store.transaction(txid)
        head = (
            None
            if stored is None or stored.height is None
            else self.ledger.store.block(stored.height)
        )
        rejected = self._rejected.get(txid)
        if stored is not None and head is not None:
            answer.set_result(BlockResult(head, [Outcome(txid, None, "", stored.seq)]))
        elif rejected is not None:
            answer.set_result(rejected[1])
        else:  # rejected before this node last started
            minutes = round(DUPLICATE_WINDOW_S / 60)
            message = (
                f"the transaction was submitted and rejected in the last {minutes} minutes; "
                f"it is not on the ledger: submit it again after that to have it judged afresh"
            )
            answer.set_result(BlockResult(None, [Outcome(txid, Code.DUPLICATE, message)]))

    # -------------------------------------------------------------- the callers' side

    def submit(self, raw: bytes, wait: bool = True) -> Ticket:
        """Publish `raw` to the chain's stream; its ticket resolves once its block is durable
        here (raised: `SequencerUnavailable` if the stream did not take it)."""
        if self._closing or self._failure is not None:
            raise SequencerClosed(why_stopped(self._failure))
        answer: Future[BlockResult] = Future()
        with self._batches_lock:  # after a batch submitted before it, still being checked
            previous = self._last_batch
        if previous is not None and previous.done():
            previous = None
        asyncio.run_coroutine_threadsafe(self._publish(raw, answer, previous), self._loop)
        return Ticket(answer, 0)

    def submit_many(self, raws: Sequence[bytes], wait: bool = True) -> list[Ticket]:
        """Publish all of `raws` in order. A batch large enough is checked on the pipeline's
        worker processes, on every core, and the loop only publishes it."""
        static = self._pipeline.static
        if len(raws) < static.min_parallel or static.workers < 2:
            return [self.submit(raw, wait) for raw in raws]
        if self._closing or self._failure is not None:
            raise SequencerClosed(why_stopped(self._failure))
        batch = list(raws)
        answers: list[Future[BlockResult]] = [Future() for _ in batch]
        published: Future[None] = Future()
        with self._batches_lock:
            previous, self._last_batch = self._last_batch, published
            checked = static.submit(batch)

        def publish(_: Future[list[StaticVerdict]]) -> None:  # a thread of the worker pool
            try:
                asyncio.run_coroutine_threadsafe(
                    self._publish_batch(batch, checked, answers, previous, published), self._loop
                )
            except RuntimeError:  # the loop closed meanwhile
                published.set_result(None)
                _unpublished(answers)

        checked.add_done_callback(publish)
        return [Ticket(answer, 0) for answer in answers]

    @property
    def applied_through(self) -> int:
        """The stream sequence of the last cut applied here."""
        return self._applied_through

    def problem(self) -> str | None:
        """Why this node cannot order submissions now: it lost the NATS cluster (it is
        reconnecting), or it stopped consuming the chain's stream."""
        if self._closing:
            return "the node is closing its connection to the NATS cluster"
        if not self._nc.is_connected:
            servers = ", ".join(self.servers)
            return f"the node is not connected to the NATS cluster ({servers}): reconnecting"
        return None

    def abandon(self) -> None:
        """Drop the connection to the cluster at once, as a crash would: no more cuts, lease
        renewals or heads from this node, its lease left to expire (fault drills, the
        benchmark's failover). `close` still stops its threads."""
        self._closing = True
        with contextlib.suppress(Exception):
            self._call(self._nc.close(), PUBLISH_TIMEOUT_S)
        # every submission waiting here unconfirmed: its client sends it again to another
        # node, where the stream holds it once
        gone = SequencerUnavailable("the node left the cluster before its block was applied")
        self._loop.call_soon_threadsafe(self._raise_pending, gone)

    def _raise_pending(self, exc: BaseException) -> None:
        """Answer every submission waiting for its block with `exc` (the loop's thread)."""
        for waiting in [f for fs in self._pending.values() for f in fs]:
            if not waiting.done():
                waiting.set_exception(exc)
        self._pending.clear()

    def close(self) -> None:
        """Stop consuming and let the lease go; blocks already cut are finished."""
        if self._closed:
            return
        self._closed = self._closing = True
        with contextlib.suppress(Exception):
            self._call(self._shutdown(), CONNECT_TIMEOUT_S)
        self._stop_loop()
        self._stop_feeder()
        self._pipeline.close()

    def _stop_feeder(self) -> None:
        self._feed.put(None)
        self._feeder.join()

    async def _shutdown(self) -> None:
        if not self._nc.is_connected:
            self._lease_task.cancel()  # its request would only wait out its timeout
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self._lease_task
        for subscription in (self._subscription, self._heads_subscription):
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        with contextlib.suppress(Exception):
            if self._nc.is_connected:
                await self._nc.drain()
            else:  # cut off from the cluster: nothing to flush, no reason to wait for it
                await self._nc.close()

    def _stop_loop(self) -> None:
        """Stop the loop's thread once every task left on it (the NATS client's) ended."""
        with contextlib.suppress(Exception):
            self._call(_settle(), PUBLISH_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


@dataclass(frozen=True, slots=True)
class _Closed:
    """A block cut from the stream, on its way to the pipeline."""

    raws: list[bytes]
    time: int
    cut_seq: int
    known: Sequence[StaticVerdict | None]
    seqs: list[int]  # the stream sequence of each transaction
    opened: float  # when its first transaction arrived (monotonic)


def _unpublished(answers: Sequence[Future[BlockResult]]) -> None:
    """Tell the submitters of `answers` not answered yet that the node closed first."""
    for answer in answers:
        if not answer.done():
            answer.set_exception(SequencerClosed("the node closed before publishing it"))


async def _published_first(
    previous: Future[None] | None, answers: Sequence[Future[BlockResult]]
) -> None:
    """Until the batch submitted before (`previous`) was published; cancelled at shutdown,
    `answers` are told the node closed first."""
    if previous is None:
        return
    try:
        await asyncio.wrap_future(previous)
    except asyncio.CancelledError:
        _unpublished(answers)
        raise


async def _settle() -> None:
    """Cancel every other task of the running loop and wait until they ended."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


NO_PEERS = 10005  # JetStream's "no suitable peers for placement": servers not all known yet


async def _until_ready(make: Callable[[], Any], timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """`await make()`, again while the cluster is not ready for it (just started: no
    JetStream leader yet, or its leader not yet sure the other servers are online)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await make()
        except (
            nats.js.errors.ServiceUnavailableError,
            nats.errors.TimeoutError,
            nats.js.errors.BadRequestError,
        ) as exc:
            starting = not isinstance(exc, nats.js.errors.BadRequestError) or (
                exc.err_code == NO_PEERS
            )
            if not starting:
                raise
            if asyncio.get_running_loop().time() > deadline:
                raise SequencerUnavailable(f"the NATS cluster is not ready: {exc}") from None
            await asyncio.sleep(0.25)
