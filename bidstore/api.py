"""The bid store's HTTP API under /v1 (docs/bidstore-api.md): routes only, over `BidStore`.

No route needs an account: an order is signed by the address owning its assets over a fresh
challenge, a proposal carries the buyer's transfer signature, and a trade is read with a
request signed by one of its two parties. Each request is charged to the request budgets of
its TCP connection (behind Tor: its stream), of its client address unless that is loopback (as
behind Tor) and of the service (`bidstore.budget`); at most `max_in_flight` run at once.
Blocking calls (the ledger, signatures) run in threads; a ticker thread drives `BidStore.tick`.
`/healthz` and `/readyz` (the store follows the ledger, reached lately and caught up) are
`service.health`'s.

Whatever a body holds, its route answers a refusal (`decode_body`), never a 500. Request bodies
are described in the OpenAPI document (`bidstore.schemas`) but read raw by their decoders.
Orders and their challenges, most of a store's requests, are served by `OrderRoutes` ahead of
FastAPI.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from assets.canonical import canonical_json, parse_json
from assets.codec import MAX_INT, MAX_TX_BYTES
from assets.schemas import HEX32, request_body
from bidstore import schemas
from bidstore.budget import Budget, InFlight, OverBudget, Rate, RequestBudgets
from bidstore.orders import MAX_ORDER_BYTES
from bidstore.schemas import ORDER, TAKE, TRADE_TRANSFER
from bidstore.service import BidStore, BidStoreError, decode_body
from service.health import install_health
from service.http import (
    NO_TELEMETRY,
    ApiError,
    bounded_asgi_body,
    bounded_body,
    error_response,
    extend_openapi,
    install_error_handlers,
    send_error,
    send_json,
)
from service.ticker import Ticker

MAX_TAKE_BYTES = MAX_ORDER_BYTES + 256  # the taker's order and the resting order's id
MAX_CHALLENGES = 100  # challenges one request may take
ORDERS_PATH = "/v1/orders"
CHALLENGES_PATH = "/v1/challenges"
TICK_S = 0.25

Id = Annotated[str, Path(pattern=HEX32, description="64 lowercase hex digits")]
Interval = Annotated[int, Path(ge=0, le=MAX_INT, description="An interval index")]
_SPENDER = {
    Budget.CONNECTION: "this connection",
    Budget.ADDRESS: "this address",
    Budget.SERVICE: "the service",
}


def create_app(store: BidStore, *, run: bool = True, docs: bool = True) -> FastAPI:
    """The FastAPI application of `store`. With `run`, the app's lifespan follows the ledger
    (`store.start`) and runs a `Ticker`; `docs` serves /openapi.json."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ticker = (
            Ticker(store.tick, TICK_S, "bid store", due_in=store.seconds_to_due) if run else None
        )
        if ticker is not None:
            await run_in_threadpool(store.start)
            ticker.start()
        try:
            yield
        finally:
            if ticker is not None:
                ticker.stop()
                store.close()

    app = FastAPI(
        title="PETra bid store",
        version="1",
        description="Asks and bids with ownership proofs, the order book, its matching and the "
        "trade-proposal relay (DESIGN.md section 9).",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        lifespan=lifespan,
        telemetry=NO_TELEMETRY,
    )
    install_error_handlers(app)
    install_health(app, {"ledger": store.ledger_problem})

    @app.exception_handler(BidStoreError)
    async def bidstore_error(_: Request, exc: BidStoreError) -> JSONResponse:
        store.metrics.refused(exc.code)
        return _answer(exc)

    budgets = RequestBudgets(
        store.wall_clock,
        connection=Rate(store.limits.requests_per_s, store.limits.burst),
        address=Rate(store.limits.address_requests_per_s, store.limits.address_burst),
        service=Rate(store.limits.service_requests_per_s, store.limits.service_burst),
    )
    in_flight = InFlight(store.limits.max_in_flight)

    app.add_middleware(OrderRoutes, store=store, budgets=budgets)  # inside Admission
    app.add_middleware(
        Admission, budgets=budgets, in_flight=in_flight, refused=store.metrics.refused
    )
    _document_order_route(app)

    async def body(request: Request, limit: int) -> bytes:
        too_large = BidStoreError(413, "too_large", f"a body here is at most {limit} bytes")
        try:
            return await bounded_body(request, limit, too_large)
        except ClientDisconnect:
            raise BidStoreError(
                400, "malformed", "the connection closed before the body ended"
            ) from None

    @app.get(
        "/v1/status",
        summary="The chain, the current interval, counts",
        response_model=schemas.Status,
    )
    def status() -> dict[str, Any]:
        return store.status()

    @app.post(
        "/v1/challenges",
        status_code=201,
        summary="Fresh challenges to sign, each used once",
        response_model=schemas.ChallengesView,
    )
    def challenge(
        request: Request,
        count: Annotated[
            int, Query(ge=1, le=MAX_CHALLENGES, description="How many; each costs a request.")
        ] = 1,
    ) -> dict[str, Any]:
        client = request.client
        return _challenges(
            store, budgets, count, None if client is None else (client.host, client.port)
        )

    @app.get(
        "/v1/orders/{order_id}",
        summary="An order: open, or trading and its trades",
        response_model=schemas.OrderView,
    )
    def order(order_id: Id) -> dict[str, Any]:
        return store.order(bytes.fromhex(order_id))

    @app.get(
        "/v1/book",
        summary="Every open order (anonymous), as the DSO reads it",
        response_model=schemas.OpenOrders,
    )
    def book() -> dict[str, Any]:
        return store.open_orders()

    @app.get(
        "/v1/book/{interval}",
        summary="An interval's asks and bids in priority order",
        response_model=schemas.IntervalBook,
    )
    def interval_book(interval: Interval) -> dict[str, Any]:
        return store.interval_book(interval)

    @app.get(
        "/v1/auctions/{interval}",
        summary="How the interval's call auction clears now",
        response_model=schemas.AuctionView,
    )
    def auction(interval: Interval) -> dict[str, Any]:
        return store.auction(interval)

    @app.post(
        "/v1/auctions/{interval}/clear",
        summary="Clear the interval's call auction now: a trade per settleable match",
        response_model=schemas.Clearing,
    )
    def clear(interval: Interval) -> dict[str, Any]:
        return store.clear(interval)

    @app.post(
        "/v1/takes",
        status_code=201,
        summary="Take an open order at its price with the taker's own signed order",
        openapi_extra=request_body(TAKE),
        response_model=schemas.TradeView,
    )
    async def take(request: Request) -> dict[str, Any]:
        raw = await body(request, MAX_TAKE_BYTES)
        resting, taker, power = decode_body("take", _take_request, raw)
        return await run_in_threadpool(store.take, resting, taker, power)

    @app.get(
        "/v1/trades/{trade_id}",
        summary="A trade and its proposal, for one of its parties",
        response_model=schemas.PartyTradeView,
    )
    def trade(
        trade_id: Id,
        x_petra_address: Annotated[str | None, Header()] = None,
        x_petra_challenge: Annotated[str | None, Header()] = None,
        x_petra_signature: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        address = _header_hex(x_petra_address, 32, "X-Petra-Address")
        challenge = _header_hex(x_petra_challenge, 32, "X-Petra-Challenge")
        signature = _header_hex(x_petra_signature, 64, "X-Petra-Signature")
        return store.fetch(bytes.fromhex(trade_id), address, challenge, signature)

    @app.post(
        "/v1/trades/{trade_id}/proposal",
        status_code=201,
        summary="The proposer's transfer for a trade, signed for the proposer's inputs",
        openapi_extra=request_body(TRADE_TRANSFER),
        response_model=schemas.TradeView,
    )
    async def propose(trade_id: Id, request: Request) -> dict[str, Any]:
        raw = await body(request, MAX_TX_BYTES)
        return await run_in_threadpool(store.propose, bytes.fromhex(trade_id), raw)

    return app


def _order_too_large() -> BidStoreError:
    return BidStoreError(413, "too_large", f"a body here is at most {MAX_ORDER_BYTES} bytes")


class OrderRoutes:
    """Pure ASGI middleware serving the order path without FastAPI's per-request work
    (routing, dependencies, validating and encoding the answer through its model), with the
    answers, refusals and metrics of docs/bidstore-api.md as the FastAPI routes gave them:

    - `POST /v1/orders`, and 405 to another method on that path, as FastAPI would;
    - `POST /v1/challenges` with no query or a plain `count` in range; any other query goes on
      to the FastAPI route, whose validation answers it.

    Every other request goes on to `app`."""

    def __init__(self, app: ASGIApp, store: BidStore, budgets: RequestBudgets) -> None:
        self.app, self.store, self.budgets = app, store, budgets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else None
        if path == CHALLENGES_PATH and scope["method"] == "POST":
            count = _plain_count(scope["query_string"])
            client = scope.get("client")
            if count is not None:
                connection = None if client is None else (client[0], client[1])
                try:
                    answer = _challenges(self.store, self.budgets, count, connection)
                except BidStoreError as exc:
                    await self.refuse(exc, scope, receive, send)
                    return
                await send_json(send, 201, answer)
                return
        if path != ORDERS_PATH:
            await self.app(scope, receive, send)
            return
        try:
            if scope["method"] != "POST":
                raise ApiError(405, "bad_request", "Method Not Allowed", {"Allow": "POST"})
            posted = await self.post_order(scope, receive)
        except ApiError as exc:  # the method, or a client gone before its body ended
            await send_error(send, exc)
            return
        except BidStoreError as exc:
            self.store.metrics.orders.labels("refused").inc()
            await self.refuse(exc, scope, receive, send)
            return
        self.store.metrics.orders.labels("accepted").inc()
        await send_json(send, 201, posted)

    async def refuse(self, exc: BidStoreError, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer `exc` as the app's handler of `BidStoreError` does."""
        self.store.metrics.refused(exc.code)
        await _answer(exc)(scope, receive, send)

    async def post_order(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        """The order in the request's body checked and opened: what the book shows of it."""
        order = self.store.decode(
            await bounded_asgi_body(scope, receive, MAX_ORDER_BYTES, _order_too_large)
        )
        if self.store.indexed(order.order):  # no ledger call: a thread costs more than it
            return self.store.post_order(order)
        return await run_in_threadpool(self.store.post_order, order)


def _plain_count(query: bytes) -> int | None:
    """The count of challenges a query string asks for: 1 if none, the count of a lone
    `count=N` with N from 1 to `MAX_CHALLENGES`; None for anything else."""
    if not query:
        return 1
    name, _, value = query.partition(b"=")
    if name != b"count" or not value.isdigit() or len(value) > 3:
        return None
    count = int(value)
    return count if 1 <= count <= MAX_CHALLENGES else None


def _challenges(
    store: BidStore, budgets: RequestBudgets, count: int, client: tuple[str, int] | None
) -> dict[str, Any]:
    """`count` fresh challenges for the TCP connection `client`, which `Admission` charged one
    request: the rest of the count is charged here (429 `rate_limited` if over budget)."""
    if count > budgets.most:
        raise BidStoreError(
            400, "bad_request", f"count is at most {budgets.most} here (a request burst)"
        )
    if count > 1:
        over = budgets.charge(client, count - 1)
        if over is not None:
            raise _rate_limited(over)
    return store.challenge(count)


def _document_order_route(app: FastAPI) -> None:
    """Add `POST /v1/orders`, which `OrderRoutes` serves, to the OpenAPI document."""

    def extend(document: dict[str, Any]) -> None:
        answer = schemas.PostedOrder
        document["paths"][ORDERS_PATH] = {
            "post": {
                "summary": "Post an ask or a bid (its canonical, signed wire)",
                "operationId": "post_order_v1_orders_post",
                **request_body(ORDER),
                "responses": {
                    "201": {
                        "description": "Successful Response",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{answer.__name__}"}
                            }
                        },
                    }
                },
            }
        }
        document["components"]["schemas"][answer.__name__] = answer.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )

    extend_openapi(app, extend)


class Admission:
    """Pure ASGI middleware: each HTTP request is charged to its request budgets and counted
    in flight before the application sees it. (Starlette's BaseHTTPMiddleware, behind
    `@app.middleware`, costs a task group and memory streams per request.)"""

    def __init__(
        self,
        app: ASGIApp,
        budgets: RequestBudgets,
        in_flight: InFlight,
        refused: Callable[[str], None],
    ) -> None:
        self.app, self.budgets, self.in_flight = app, budgets, in_flight
        self.refused = refused  # counts each refusal answered here by its code

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        over = self.budgets.charge(None if client is None else (client[0], client[1]))
        if over is not None:
            self.refused("rate_limited")
            await _answer(_rate_limited(over))(scope, receive, send)
            return
        if not self.in_flight.enter():
            self.refused("busy")
            busy = BidStoreError(503, "busy", "too many requests being handled; retry in 1 s", 1)
            await _answer(busy)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight.leave()


def _answer(exc: BidStoreError) -> JSONResponse:
    """The refusal `exc` in the common error shape, with Retry-After if it has one."""
    headers = None
    if exc.retry_after_s is not None:
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    return error_response(exc.status, exc.code, exc.message, headers)


def _rate_limited(over: OverBudget) -> BidStoreError:
    return BidStoreError(
        429,
        "rate_limited",
        f"over the request budget of {_SPENDER[over.budget]}; retry in {over.wait_s:.1f} s",
        over.wait_s,
    )


def _take_request(raw: bytes) -> tuple[bytes, bytes, int | None]:
    """The resting order's id, the taker's order bytes and the power of a take request."""
    wire = parse_json(raw)
    if not isinstance(wire, dict) or not {"order", "taker"} <= wire.keys() <= {
        "order",
        "taker",
        "power_w",
    }:
        raise BidStoreError(
            400, "malformed", 'a take is {"order": id, "taker": order, "power_w"?: watts}'
        )
    resting = wire["order"]
    if not isinstance(resting, str) or len(resting) != 64 or resting.strip("0123456789abcdef"):
        raise BidStoreError(400, "malformed", "order must be an order id: 64 lowercase hex")
    power = wire.get("power_w")
    if power is not None and (type(power) is not int or not 1 <= power <= MAX_INT):
        raise BidStoreError(400, "malformed", "power_w must be a whole number of watts from 1")
    if not isinstance(wire["taker"], dict):
        raise BidStoreError(400, "malformed", "taker must be an order object")
    return bytes.fromhex(resting), canonical_json(wire["taker"]), power


def _header_hex(value: str | None, size: int, name: str) -> bytes:
    if value is None:
        raise BidStoreError(
            401,
            "unauthenticated",
            "a trade is read with X-Petra-Address, X-Petra-Challenge and X-Petra-Signature",
        )
    if len(value) != 2 * size or value.strip("0123456789abcdef"):
        raise BidStoreError(400, "malformed", f"{name} must be {2 * size} lowercase hex digits")
    return bytes.fromhex(value)
