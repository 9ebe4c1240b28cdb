"""Appending blocks in three overlapping stages: static checks of block k+2 run on worker
processes while block k+1 is built (validated and applied in memory) and block k is written
durably. Each stage keeps submission order."""

from __future__ import annotations

import gc
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future

from ledger.ledger import BlockResult, BuiltBlock, Ledger
from ledger.static import StaticPool, StaticVerdict

# The collector's youngest generation, in allocations: a block keeps tens of objects per
# transaction alive until it is durable, and at Python's default (700) the collector scanned
# them again every few dozen transactions, a fifth of the builder's time or more.
COLLECTOR_THRESHOLD = 100_000

_Job = tuple[
    Sequence[bytes],
    int,
    int | None,
    Sequence[StaticVerdict | None] | None,
    Future[list[StaticVerdict]],
    Future[BlockResult],
]


class PipelineStopped(Exception):
    """The pipeline was closed, or stopped after a storage failure."""


class BlockPipeline:
    """Appends batches to `ledger` in submission order, checking ahead on every core."""

    def __init__(
        self, ledger: Ledger, workers: int | None = None, depth: int = 2, warm: bool = True
    ) -> None:
        """`warm`: start the worker processes now (a service), rather than on the first large
        batch (a short replay may never need them)."""
        self.ledger = ledger
        threshold, *older = gc.get_threshold()
        if 0 < threshold < COLLECTOR_THRESHOLD:  # process-wide: never lowered, never enabled
            gc.set_threshold(COLLECTOR_THRESHOLD, *older)
        self.static = StaticPool(ledger.genesis, workers)
        if warm:
            self.static.warm_up()
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=depth)
        self._built: queue.Queue[tuple[BuiltBlock, Future[BlockResult]] | None] = queue.Queue(
            maxsize=1
        )
        self._failure: BaseException | None = None
        self._builder = threading.Thread(target=self._build_loop, name="ledger-build", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name="ledger-write", daemon=True)
        self._builder.start()
        self._writer.start()

    def submit(
        self,
        raws: Sequence[bytes],
        time: int,
        source_offset: int | None = None,
        known: Sequence[StaticVerdict | None] = (),
    ) -> Future[BlockResult]:
        """Queue a block of `raws` at `time` (unix seconds, never below the previous block's);
        blocks while `depth` blocks are already waiting. The future holds the block's result
        once it is durable. `source_offset`: see `Ledger.build`. `known`: the static verdicts
        already reached on these very bytes (`check_batch`'s, a pure function of the genesis
        and the bytes), None for each raw to check; by default every raw is checked."""
        if self._failure is not None:
            raise PipelineStopped(f"the ledger stopped after a storage failure: {self._failure}")
        result: Future[BlockResult] = Future()
        if not known:
            self._jobs.put((raws, time, source_offset, None, self.static.submit(raws), result))
            return result
        unknown = [raw for raw, verdict in zip(raws, known, strict=True) if verdict is None]
        self._jobs.put((raws, time, source_offset, known, self.static.submit(unknown), result))
        return result

    def _build_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            raws, time, source_offset, known, checked, result = job
            if self._failure is not None:
                result.set_exception(PipelineStopped(f"not appended: {self._failure}"))
                continue
            try:
                verdicts = checked.result()
                if known is not None:  # the verdicts reached before, the others in order
                    found = iter(verdicts)
                    verdicts = [next(found) if v is None else v for v in known]
                built = self.ledger.build(raws, time, verdicts, source_offset)
            except BaseException as exc:
                self._failure = exc
                result.set_exception(exc)
                continue
            self._built.put((built, result))
        self._built.put(None)

    def _write_loop(self) -> None:
        while (item := self._built.get()) is not None:
            built, result = item
            if self._failure is not None:
                result.set_exception(PipelineStopped(f"not appended: {self._failure}"))
                continue
            try:
                result.set_result(self.ledger.write(built))
            except BaseException as exc:  # nothing of this block, or of any built on it, kept
                self._failure = exc
                result.set_exception(exc)

    def close(self) -> None:
        """Finish every queued block, then stop the workers (after a storage failure, the
        ledger is reloaded from what is durable)."""
        self._jobs.put(None)
        self._builder.join()
        self._writer.join()
        self.static.close()
        if self._failure is not None:
            self.ledger.reload()  # forget what was built but never written
