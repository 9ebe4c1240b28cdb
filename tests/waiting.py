"""The suite's one way to wait for something another thread or process does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.05
) -> T:
    """`condition()`'s first truthy value, asked every `interval_s` seconds; fails the test,
    naming `what`, if none comes within `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)
    return found
