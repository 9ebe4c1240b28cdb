"""Signature verification, serial or spread over every core (static checks run in parallel)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Protocol

from assets import verify
from ledger.rules import SignatureCheck

_Item = tuple[tuple[bytes, ...], bytes, bytes]


def _verify_items(items: Sequence[_Item]) -> list[bool]:
    return [any(verify(key, message, sig) for key in keys) for keys, message, sig in items]


class SignatureVerifier(Protocol):
    def verify_all(self, checks: Sequence[SignatureCheck]) -> list[bool]:
        """One verdict per check, in order."""
        ...

    def close(self) -> None: ...


class SerialVerifier:
    """Verifies in the calling thread."""

    def verify_all(self, checks: Sequence[SignatureCheck]) -> list[bool]:
        return _verify_items([(c.public_keys, c.message, c.signature) for c in checks])

    def close(self) -> None:
        pass


class ParallelVerifier:
    """Verifies in worker processes, one per core; small batches stay in the caller."""

    def __init__(self, workers: int | None = None, min_parallel: int = 64) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.min_parallel = min_parallel
        self._pool: Executor | None = None

    def _executor(self) -> Executor:
        if self._pool is None:
            # spawn: the ledger runs threads, and forking a threaded process is unsafe
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
        return self._pool

    def verify_all(self, checks: Sequence[SignatureCheck]) -> list[bool]:
        items = [(c.public_keys, c.message, c.signature) for c in checks]
        if len(items) < self.min_parallel or self.workers < 2:
            return _verify_items(items)
        size = -(-len(items) // self.workers)
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        verdicts: list[bool] = []
        for part in self._executor().map(_verify_items, chunks):
            verdicts.extend(part)
        return verdicts

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
