"""Static validation (shape, size, chain, signatures) of whole batches, on every core.

Static checks need only the transaction and the genesis, so a batch is split across worker
processes while the ledger applies the previous block. An issue's signature depends on the
key in force for its meter, so it is left to the ledger.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import NamedTuple

from assets import Code, Genesis, Issue, Rejected, chain_id
from ledger import rules

log = logging.getLogger(__name__)


# A batch is split between two threads only when each half holds this many transactions: a
# hand-over to the other thread and back costs about as much as checking one (80-100 µs).
MIN_HALF = 4


class StaticVerdict(NamedTuple):
    """A transaction's static outcome: `code` None means it passed (an issue's signature
    still to be checked). `txid` whenever one could be computed. A tuple: verdicts cross
    between processes by the thousand, and tuples pickle several times faster."""

    code: Code | None
    message: str
    txid: bytes | None


def check_batch(genesis: Genesis, raws: Sequence[bytes]) -> list[StaticVerdict]:
    """The static verdict of each of `raws`, in order."""
    chain = chain_id(genesis)
    verdicts: list[StaticVerdict] = []
    for raw in raws:
        try:
            decoded = rules.check_static(raw, chain)
            if not isinstance(decoded.tx, Issue):
                rules.check_signatures(decoded, genesis)
        except Rejected as rejected:
            verdicts.append(StaticVerdict(rejected.code, rejected.message, rejected.txid))
            continue
        except Exception as exc:  # a fault of this transaction's checks refuses it alone
            log.exception("the static checks of a transaction failed; it is refused")
            verdicts.append(StaticVerdict(Code.MALFORMED, unchecked(exc), None))
            continue
        verdicts.append(StaticVerdict(None, "", decoded.txid))
    return verdicts


def unchecked(exc: Exception) -> str:
    """The refusal's message for a transaction whose checks failed with `exc`."""
    return f"the transaction could not be checked ({type(exc).__name__}); it is refused"


class StaticPool:
    """Runs `check_batch` on worker processes, one per core; a small batch stays in the
    caller's process, on two of its threads."""

    def __init__(self, genesis: Genesis, workers: int | None = None, min_parallel: int = 64):
        self.genesis = genesis
        self.workers = workers or os.cpu_count() or 1
        self.min_parallel = min_parallel
        self._pool: Executor | None = None
        self._helper: ThreadPoolExecutor | None = None

    def _executor(self) -> Executor:
        if self._pool is None:
            # spawn: the ledger runs threads, and forking a threaded process is unsafe
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
        return self._pool

    def warm_up(self) -> None:
        """Start the worker processes now rather than on the first large batch."""
        if self.workers >= 2:
            for part in [self._executor().submit(check_batch, self.genesis, [])] * self.workers:
                part.result()

    def submit(self, raws: Sequence[bytes]) -> Future[list[StaticVerdict]]:
        """Start checking `raws`; the future holds one verdict per raw, in order."""
        result: Future[list[StaticVerdict]] = Future()
        if self.workers < 2 or len(raws) < 2 * MIN_HALF:
            result.set_result(check_batch(self.genesis, raws))
            return result
        if len(raws) < self.min_parallel:
            result.set_result(self._check_on_two_threads(raws))
            return result
        size = -(-len(raws) // self.workers)
        parts = [
            self._executor().submit(check_batch, self.genesis, raws[i : i + size])
            for i in range(0, len(raws), size)
        ]
        remaining = [len(parts)]
        lock = threading.Lock()

        def collect(_: Future[list[StaticVerdict]]) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            try:
                result.set_result([v for part in parts for v in part.result()])
            except BaseException as exc:  # a worker died: the batch cannot be judged
                result.set_exception(exc)

        for part in parts:
            part.add_done_callback(collect)
        return result

    def _check_on_two_threads(self, raws: Sequence[bytes]) -> list[StaticVerdict]:
        """`check_batch` of a batch too small to be worth sending to the workers, half of it
        on a thread of the pool's: the verifications' calls into libsodium release the
        interpreter lock, so the halves' signatures are checked at once on two cores."""
        if self._helper is None:
            self._helper = ThreadPoolExecutor(1, thread_name_prefix="ledger-static")
        half = len(raws) // 2
        first = self._helper.submit(check_batch, self.genesis, raws[:half])
        rest = check_batch(self.genesis, raws[half:])
        return first.result() + rest

    def close(self) -> None:
        if self._helper is not None:
            self._helper.shutdown()
            self._helper = None
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
