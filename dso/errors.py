"""The DSO node's refusals, and the checks of a request every domain of the node shares."""

from __future__ import annotations

from assets.codec import METER_ID

MAX_VIEW_INTERVALS = 10_000  # per schedule, bill or forecast query


class DsoError(Exception):
    """A refusal with an HTTP status, a stable code and a sentence a person can act on."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Throttled(DsoError):
    """Too many failed tokens from one client address: 429, try again in `retry_after_s`."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            429,
            "too_many_requests",
            f"too many invalid operator tokens from this address: try again in {retry_after_s} s",
        )
        self.retry_after_s = retry_after_s


def check_meter(meter: str) -> None:
    """Refuse a meter id the ledger would never accept (400)."""
    if METER_ID.fullmatch(meter) is None:
        raise DsoError(400, "bad_request", "a meter id is 1-64 of A-Z a-z 0-9 . _ -")


def check_range(first: int, last: int) -> None:
    """Refuse an interval range that is empty or longer than `MAX_VIEW_INTERVALS` (400)."""
    if last < first or last - first >= MAX_VIEW_INTERVALS:
        raise DsoError(
            400,
            "bad_request",
            f"need first <= last and at most {MAX_VIEW_INTERVALS} intervals, got {first}..{last}",
        )
