"""`dso.throttle.TokenThrottle`: failed tokens per client address, a window at a time."""

from __future__ import annotations

import logging

import pytest

from dso.throttle import OTHER_CLIENTS, TokenThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "petra.dso"]


def test_a_client_is_throttled_after_the_limit_until_its_window_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttle = TokenThrottle(limit=3, window_s=60, clock=clock)
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1") is None
        throttle.failed("10.0.0.1", "unknown")
    clock.now += 10
    assert throttle.retry_after("10.0.0.1") == 50
    assert throttle.retry_after("10.0.0.2") is None  # another address is not throttled
    clock.now += 49.5
    assert throttle.retry_after("10.0.0.1") == 1  # rounded up, never 0
    assert records(caplog) == []  # nothing logged within the window
    clock.now += 0.5
    assert throttle.retry_after("10.0.0.1") is None
    assert records(caplog) == [
        "operator tokens refused from 10.0.0.1: 5 within 60 s "
        "(refused unchecked while throttled: 2, unknown: 3)"
    ]


def test_one_line_per_client_per_window_however_many_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    clock = Clock()
    throttle = TokenThrottle(limit=5, window_s=60, clock=clock)
    for _ in range(300):
        if throttle.retry_after("a") is None:
            throttle.failed("a", "unknown")
    throttle.failed("b", "operator bob's revoked token")
    assert records(caplog) == []
    clock.now += 60
    throttle.flush()
    assert sorted(records(caplog)) == [
        "operator tokens refused from a: 300 within 60 s "
        "(refused unchecked while throttled: 295, unknown: 5)",
        "operator tokens refused from b: 1 within 60 s (operator bob's revoked token: 1)",
    ]
    throttle.failed("a", "unknown")
    throttle.close()  # an unfinished window is logged on shutdown
    assert len(records(caplog)) == 3


def test_clients_beyond_the_table_share_one_count() -> None:
    clock = Clock()
    throttle = TokenThrottle(limit=2, window_s=60, max_clients=2, clock=clock)
    throttle.failed("a", "unknown")
    throttle.failed("b", "unknown")
    throttle.failed("c", "unknown")
    throttle.failed("d", "unknown")
    assert throttle.retry_after("e") is not None  # e counts with c and d
    assert throttle.retry_after("a") is None
    assert OTHER_CLIENTS in throttle._windows
