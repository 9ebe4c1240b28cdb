"""The DSO's intake queue: bills arriving at once are stored and reconciled together, in one
database transaction (one commit, so one sync to disk, for the lot), each request answered with
its own outcome once its batch is committed.

No thread of its own: the request that finds no batch under way leads one, taking every bill
waiting (up to `MAX_BATCH`); the others wait for their outcome, and the first of those still
waiting when a batch ends leads the next, so that no request serves more than one batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

MAX_BATCH = 256  # bills per database transaction: bounds how long one batch holds the writer


class _Waiting(Generic[Item, Outcome]):
    """One request's item, and what became of it (set once, under the queue's lock)."""

    __slots__ = ("done", "error", "item", "lead", "outcome")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = threading.Event()  # set when the outcome is known or this one must lead
        self.lead = False
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None


class IntakeQueue(Generic[Item, Outcome]):
    """Gather the items put from many threads into batches for `process`, which returns one
    outcome per item, in order (an exception in the list is raised to that item's caller)."""

    def __init__(
        self,
        process: Callable[[Sequence[Item]], Sequence[Outcome | BaseException]],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._process = process
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Waiting[Item, Outcome]] = []
        self._busy = False  # a batch is under way

    def put(self, item: Item) -> Outcome:
        """`item`'s outcome, once the batch holding it is done; its exception if it has one."""
        entry: _Waiting[Item, Outcome] = _Waiting(item)
        with self._lock:
            self._waiting.append(entry)
            entry.lead = not self._busy
            self._busy = True
        while True:
            if entry.lead:
                entry.lead = False
                self._run_batch()
            else:
                entry.done.wait()
            with self._lock:
                if entry.lead and entry.outcome is None and entry.error is None:
                    entry.done.clear()
                    continue
            if entry.error is not None:
                raise entry.error
            assert entry.outcome is not None
            return entry.outcome

    def _run_batch(self) -> None:
        with self._lock:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
        try:
            outcomes: Sequence[Outcome | BaseException] = self._process([e.item for e in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
        except BaseException as exc:  # every request of the batch gets it, none waits forever
            outcomes = [exc] * len(batch)
        with self._lock:
            for entry, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    entry.error = outcome
                else:
                    entry.outcome = outcome
                entry.done.set()
            if self._waiting:
                successor = self._waiting[0]
                successor.lead = True
                successor.done.set()
            else:
                self._busy = False
