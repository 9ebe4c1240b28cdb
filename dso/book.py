"""The bid store's order book as the grid controller reads it: `GET /v1/book` answers
`{"orders": [{"side": "ask"|"bid", "power", "start", "end", "price"}, ...]}` (docs/dso-api.md),
open orders only. The bid store serves it; until it is reachable the forecast goes without."""

from __future__ import annotations

from typing import Any

import httpx

from bidstore import BidStoreClient, BidStoreClientError
from dso.controller import BookEntry

MAX_ORDERS = 100_000


class BookUnavailable(Exception):
    """The book could not be read: the store is unreachable or answered something else."""


def book_from_wire(wire: Any) -> list[BookEntry]:
    """The open orders of a `/v1/book` answer; BookUnavailable if it is not one."""
    orders = wire.get("orders") if isinstance(wire, dict) else None
    if not isinstance(orders, list) or len(orders) > MAX_ORDERS:
        raise BookUnavailable(f"the book is not a list of at most {MAX_ORDERS} orders")
    entries = []
    for n, order in enumerate(orders):
        try:
            values = {k: order[k] for k in ("side", "power", "start", "end", "price")}
            if any(type(values[k]) is not int for k in ("power", "start", "end", "price")):
                raise TypeError("power, start, end and price are whole numbers")
            entries.append(BookEntry(**values))
        except (KeyError, TypeError, ValueError) as exc:
            raise BookUnavailable(f"order {n} of the book is not valid: {exc}") from None
    return entries


class StoreBook:
    """The order book of the bid store at `base_url`, read through the bid store's own client
    (`bidstore.BidStoreClient`), which every other reader of the store uses too."""

    def __init__(
        self, base_url: str, timeout_s: float = 5.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.client = BidStoreClient(base_url, timeout_s=timeout_s, transport=transport)
        self.base_url = self.client.url

    def close(self) -> None:
        self.client.close()

    def open_orders(self) -> list[BookEntry]:
        try:
            wire = self.client.book()
        except BidStoreClientError as exc:
            raise BookUnavailable(f"cannot read the book at {self.base_url}: {exc}") from None
        return book_from_wire(wire)
