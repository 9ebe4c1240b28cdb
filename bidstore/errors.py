"""The bid store's refusals: an HTTP status, a stable code and one sentence each, and the
decoding of an outsider's body that turns any failure into one."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from assets import Rejected
from assets.model import Outpoint
from bidstore.orders import OrderRefused

log = logging.getLogger("petra.bidstore")

Value = TypeVar("Value")


class BidStoreError(Exception):
    """A refusal with an HTTP status, a stable code and one sentence; `retry_after_s` (the
    Retry-After header) when coming back later will do."""

    def __init__(
        self, status: int, code: str, message: str, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.retry_after_s = retry_after_s


# The HTTP status of each refusal code of the pure core.
_STATUS = {
    "malformed": 400,
    "bad_power": 400,
    "bad_signature": 401,
    "bad_challenge": 401,
    "not_owner": 403,
    "unknown_order": 404,
    "unknown_asset": 409,
    "spent": 409,
    "wrong_asset": 422,
    "underfunded": 422,
    "interval_passed": 422,
    "terms_mismatch": 422,
}


def refusal(exc: OrderRefused) -> BidStoreError:
    """The pure core's refusal `exc` with its HTTP status."""
    return BidStoreError(_STATUS.get(exc.code, 400), exc.code, exc.message)


def decode_body(what: str, decode: Callable[[bytes], Value], raw: bytes) -> Value:
    """`decode(raw)` of a body an outsider sent (`what`: "order", "take", "transfer"). Any
    failure is a refusal, 400 `malformed` unless the decoder said otherwise: a gap in a decoder
    (a lone surrogate, nesting deeper than the stack) must never answer 500. Such a gap is
    logged in one line, without a traceback."""
    try:
        return decode(raw)
    except BidStoreError:
        raise
    except OrderRefused as exc:
        raise refusal(exc) from None
    except Rejected as exc:
        raise BidStoreError(400, "malformed", exc.message) from None
    except Exception as exc:
        log.warning("refused a %s the decoders let through: %s", what, type(exc).__name__)
        raise BidStoreError(400, "malformed", _unreadable(what, exc)) from None


def _unreadable(what: str, exc: Exception) -> str:
    if isinstance(exc, UnicodeError):
        return f"the {what} holds a lone surrogate (a \\ud800-\\udfff escape alone): not text"
    if isinstance(exc, RecursionError):
        return f"the {what} is nested too deep"
    return f"the {what} is not one this store can read ({type(exc).__name__})"


def where(outpoint: Outpoint) -> str:
    """An outpoint as a refusal names it: txid:index."""
    return f"{outpoint.txid.hex()}:{outpoint.index}"
