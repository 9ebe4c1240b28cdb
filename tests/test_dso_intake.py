"""The DSO's intake queue (`dso/intake.py`): items put at once from many threads are handed to
the batch function together, and each caller gets its own outcome or its own exception."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from dso.intake import IntakeQueue

CALLERS = 12


class Refused(Exception):
    pass


def test_items_arriving_while_a_batch_runs_go_together_into_the_next() -> None:
    first_started, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def process(items: Sequence[int]) -> list[int | BaseException]:
        batches.append(list(items))
        if len(batches) == 1:
            first_started.set()
            assert release.wait(10)
        return [Refused(f"odd {i}") if i % 2 else i * 10 for i in items]

    queue: IntakeQueue[int, int] = IntakeQueue(process)

    def put(item: int) -> int | str:
        try:
            return queue.put(item)
        except Refused as exc:
            return str(exc)

    with ThreadPoolExecutor(CALLERS) as pool:
        leader = pool.submit(put, 0)
        assert first_started.wait(10)
        others = [pool.submit(put, i) for i in range(1, CALLERS)]
        while sum(len(b) for b in batches) + len(queue._waiting) < CALLERS:
            threading.Event().wait(0.01)  # every other caller is waiting behind the first batch
        release.set()
        answers = [leader.result(10), *(f.result(10) for f in others)]
    assert answers == [f"odd {i}" if i % 2 else i * 10 for i in range(CALLERS)]
    assert batches[0] == [0]
    assert batches[1] == list(range(1, CALLERS))  # one batch for all who waited


def test_a_batch_that_fails_fails_each_of_its_callers_and_the_queue_goes_on() -> None:
    calls = 0

    def process(items: Sequence[str]) -> list[str | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Refused("the store is gone")
        return [item.upper() for item in items]

    queue: IntakeQueue[str, str] = IntakeQueue(process)
    with pytest.raises(Refused, match="the store is gone"):
        queue.put("a")
    assert queue.put("b") == "B"


def test_no_batch_is_larger_than_the_bound() -> None:
    sizes: list[int] = []
    gate = threading.Lock()

    def process(items: Sequence[int]) -> list[int | BaseException]:
        with gate:
            sizes.append(len(items))
        return list(items)

    queue: IntakeQueue[int, int] = IntakeQueue(process, max_batch=3)
    with ThreadPoolExecutor(CALLERS) as pool:
        assert sorted(pool.map(queue.put, range(40))) == list(range(40))
    assert sum(sizes) == 40 and max(sizes) <= 3
