"""Reading the bid store's order book for the grid controller's forecast."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from dso.book import BookUnavailable, StoreBook, book_from_wire
from dso.controller import BookEntry

ASK = {"side": "ask", "power": 1_500, "start": 10, "end": 12, "price": 90_000}
BID = {"side": "bid", "power": 700, "start": 11, "end": 11, "price": 120_000}


def test_open_orders_are_read() -> None:
    assert book_from_wire({"orders": [ASK, BID]}) == [
        BookEntry("ask", 1_500, 10, 12, 90_000),
        BookEntry("bid", 700, 11, 11, 120_000),
    ]


@pytest.mark.parametrize(
    ("wire", "says"),
    [
        ([], "not a list"),
        ({"orders": {}}, "not a list"),
        ({"orders": [{**ASK, "side": "sell"}]}, "order 0"),
        ({"orders": [ASK, {k: v for k, v in BID.items() if k != "price"}]}, "order 1"),
        ({"orders": [{**ASK, "power": 1.5}]}, "whole numbers"),
        ({"orders": [{**ASK, "power": True}]}, "whole numbers"),
        ({"orders": [{**ASK, "start": 13}]}, "order 0"),
        ({"orders": [{**ASK, "power": 0}]}, "order 0"),
    ],
)
def test_a_book_that_is_not_one_is_refused_with_the_reason(wire: Any, says: str) -> None:
    with pytest.raises(BookUnavailable, match=says):
        book_from_wire(wire)


def _book_answering(answer: httpx.Response | Exception) -> StoreBook:
    def respond(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/book"
        if isinstance(answer, Exception):
            raise answer
        return answer

    return StoreBook("http://bidstore.invalid/v1", transport=httpx.MockTransport(respond))


def test_the_store_book_reads_v1_book() -> None:
    book = _book_answering(httpx.Response(200, json={"orders": [BID]}))
    assert book.open_orders() == [BookEntry("bid", 700, 11, 11, 120_000)]


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(503, json={"error": {"code": "unavailable", "message": "later"}}),
        httpx.Response(200, content=b"<html>"),
        httpx.ConnectError("refused"),
    ],
)
def test_an_unreadable_book_is_unavailable(answer: httpx.Response | Exception) -> None:
    with pytest.raises(BookUnavailable, match="cannot read the book"):
        _book_answering(answer).open_orders()
