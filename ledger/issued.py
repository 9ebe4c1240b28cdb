"""Power a meter has issued, per interval: a step function over interval indices."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator


class StepFunction:
    """A whole-valued function of the interval index, piecewise constant, zero by default.

    Stored as sorted breakpoints: the value is `_levels[i]` from `_starts[i]` up to the next
    breakpoint, so memory grows with the number of issues, not with the intervals they cover.
    """

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._levels: list[int] = []

    def value_at(self, interval: int) -> int:
        i = bisect_right(self._starts, interval) - 1
        return self._levels[i] if i >= 0 else 0

    def _split_at(self, interval: int) -> int:
        """Make `interval` a breakpoint; return its position."""
        i = bisect_right(self._starts, interval) - 1
        if i >= 0 and self._starts[i] == interval:
            return i
        self._starts.insert(i + 1, interval)
        self._levels.insert(i + 1, self._levels[i] if i >= 0 else 0)
        return i + 1

    def add(self, start: int, end: int, power: int) -> None:
        """Add `power` to every interval from `start` to `end`, inclusive."""
        first = self._split_at(start)
        last = self._split_at(end + 1)
        for i in range(first, last):
            self._levels[i] += power

    def pieces(self, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        """(first, last, value) runs of constant value covering [start, end] exactly."""
        i = bisect_right(self._starts, start) - 1
        first = start
        while first <= end:
            value = self._levels[i] if i >= 0 else 0
            following = self._starts[i + 1] if i + 1 < len(self._starts) else end + 1
            last = min(end, following - 1)
            yield first, last, value
            first = last + 1
            i += 1

    def nonzero_pieces(self) -> Iterator[tuple[int, int, int]]:
        """(first, last, value) runs where the value is not zero, in order."""
        if self._starts:
            for piece in self.pieces(self._starts[0], self._starts[-1] - 1):
                if piece[2]:
                    yield piece
