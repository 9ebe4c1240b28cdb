"""The mixer coordinator's HTTP API under /v1 (docs/mixer-api.md): routes only, over
`Coordinator`. No route needs a token: a join is signed by the input's owner, a message by its
sender, and a read of a pool's events by the peer whose events they are.

What every peer calls in every phase, `GET /v1/pools/{pool}/events` (the long poll) and
`POST /v1/pools/{pool}/messages`, is served by `PeerRoutes` ahead of FastAPI, with the same
answers. Blocking calls (the ledger, a blame's verdict, a large message) run in threads; a
small message is relayed on the event loop; long polls are awaited on the event loop
(`mixer.polls`), at most `POLLS_PER_PEER` per peer and pool, so no peer can hold up another's;
a ticker thread drives the coordinator's clock (`Coordinator.tick`) and its watch asks the
ledger its head while the app runs. `/healthz` and `/readyz` (the ledger answered lately) are
`service.health`'s. The OpenAPI document is served at /openapi.json, with the schema of every
request body.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from assets import Rejected
from assets.canonical import parse_json
from assets.schemas import request_body
from mixer.coordinator import Coordinator, MixerError, parse_forming, parse_poll
from mixer.polls import long_poll
from mixer.schemas import ENVELOPE, FORMING_QUERY, JOIN, POLL_QUERY
from service.health import install_health
from service.http import (
    NO_TELEMETRY,
    bounded_asgi_body,
    bounded_body,
    draining,
    error_response,
    extend_openapi,
    install_error_handlers,
    send_json,
)
from service.ticker import Ticker

MAX_BODY_BYTES = 4 * 1024 * 1024  # a message: a blame carries every message of its run
MAX_JOIN_BYTES = 4 * 1024  # a join request is a few hundred bytes
TICK_S = 0.25  # how often the ticker drives the coordinator's timeouts
# A message up to this size is decoded and relayed on the event loop (about a millisecond at
# most); a larger one, or any blame (its verdict replays the run), in a thread.
RELAY_ON_LOOP_BYTES = 256 * 1024
POOLS_PREFIX = "/v1/pools/"


def create_app(coordinator: Coordinator, *, ticker: bool = True) -> FastAPI:
    """The FastAPI application of `coordinator`; with `ticker`, the app's lifespan runs a
    `Ticker` (else whoever runs the app calls `tick`)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        running = Ticker(coordinator.tick, TICK_S, "mixer coordinator") if ticker else None
        if running is not None:
            running.start()
        if coordinator.ledger_watch is not None:
            coordinator.ledger_watch.start()
        try:
            yield
        finally:
            coordinator.close()
            if coordinator.ledger_watch is not None:
                coordinator.ledger_watch.stop()
            if running is not None:
                running.stop()

    app = FastAPI(
        title="PETra mixer coordinator",
        version="1",
        description="Pools, relay and timeouts of CoinShuffle (DESIGN.md section 8).",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        telemetry=NO_TELEMETRY,
    )
    install_error_handlers(app)
    install_health(app, {"ledger": coordinator.ledger_problem})

    @app.exception_handler(MixerError)
    async def mixer_error(_: Request, exc: MixerError) -> JSONResponse:
        coordinator.metrics.refusals.labels(exc.code).inc()
        headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
        return error_response(exc.status, exc.code, exc.message, headers)

    app.add_middleware(PeerRoutes, coordinator=coordinator)
    _document_peer_routes(app)

    async def json_body(request: Request, limit: int) -> Any:
        return _parse(await bounded_body(request, limit, _too_large(limit)))

    @app.post(
        "/v1/join",
        status_code=201,
        summary="Join the forming pool of a denomination",
        openapi_extra=request_body(JOIN),
    )
    async def join(request: Request) -> dict[str, Any]:
        body = await json_body(request, MAX_JOIN_BYTES)
        return await run_in_threadpool(coordinator.join, body)

    @app.get("/v1/pools/{pool}", summary="A pool's state: counts and phase only")
    def state(pool: str) -> dict[str, Any]:
        return coordinator.pool_state(pool)

    @app.get(
        "/v1/forming",
        summary="The pools forming now: denominations and counts only",
        openapi_extra=FORMING_QUERY,
    )
    def forming(request: Request) -> dict[str, Any]:
        return coordinator.forming(parse_forming(request.query_params))

    return app


class PeerRoutes:
    """Pure ASGI middleware serving the two routes every peer calls in every phase without
    FastAPI's per-request work (routing, dependencies, its exception middleware), with the
    answers, refusals and metrics of docs/mixer-api.md as the FastAPI routes gave them:
    `GET` (and `HEAD`) `/v1/pools/{pool}/events` and `POST /v1/pools/{pool}/messages`, and a
    405 to another method on those paths. Every other request goes on to `app`."""

    def __init__(self, app: ASGIApp, coordinator: Coordinator) -> None:
        self.app, self.coordinator = app, coordinator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _peer_route(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        pool, action = route
        allowed = "GET, HEAD" if action == "events" else "POST"
        method = scope["method"]
        try:
            if method not in allowed.split(", "):
                await send_json(
                    send,
                    405,
                    {"error": {"code": "bad_request", "message": "Method Not Allowed"}},
                    {"Allow": allowed},
                )
                return
            if action == "events":
                status, body = await self.events(pool, scope, receive)
                await _send_json_bytes(send, status, b"" if method == "HEAD" else body)
                return
            seq = await self.message(pool, scope, receive)
        except MixerError as exc:
            self.coordinator.metrics.refusals.labels(exc.code).inc()
            headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
            await send_json(
                send, exc.status, {"error": {"code": exc.code, "message": exc.message}}, headers
            )
            return
        await send_json(send, 202, {"seq": seq})

    async def events(self, pool: str, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        """A peer's events of `pool`: (200, the JSON answer), or (204, b"") if the peer hung
        up before it came."""
        request = parse_poll(QueryParams(scope["query_string"]))
        stopping_event = draining(Request(scope, receive))
        poll = asyncio.ensure_future(long_poll(self.coordinator, pool, request))
        gone = asyncio.ensure_future(_disconnected(receive))
        stopping = asyncio.ensure_future(stopping_event.wait())
        try:
            await asyncio.wait([poll, gone, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            stopping.cancel()
            if not poll.done():  # the peer hung up: its poll stops counting against it
                poll.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poll
        if poll.cancelled() and stopping_event.is_set():
            raise MixerError(
                503, "unavailable", "the coordinator is stopping: poll again shortly", retry_after=1
            )
        if poll.cancelled():
            return 204, b""  # nobody reads it
        return 200, poll.result()

    async def message(self, pool: str, scope: Scope, receive: Receive) -> int:
        """Relay the posted message: its event's seq."""
        coordinator = self.coordinator
        with coordinator.arriving(pool):  # from the first byte: its timeout waits for it
            raw = await bounded_asgi_body(
                scope, receive, MAX_BODY_BYTES, partial(_too_large, MAX_BODY_BYTES)
            )
            if len(raw) > RELAY_ON_LOOP_BYTES:
                return await run_in_threadpool(_post, coordinator, pool, raw)
            wire = _parse(raw)
            if _kind(wire) == "blame":
                return await run_in_threadpool(coordinator.post, pool, wire)
            seq, settle = coordinator.relay(pool, wire)
            if settle is not None:
                await run_in_threadpool(settle)
            return seq


def _peer_route(path: str) -> tuple[str, str] | None:
    """(pool, "events" or "messages") if `path` is one of the routes `PeerRoutes` serves
    (a pool id is one path segment, as FastAPI matches `{pool}`), else None."""
    if not path.startswith(POOLS_PREFIX):
        return None
    pool, _, action = path[len(POOLS_PREFIX) :].partition("/")
    if not pool or action not in ("events", "messages"):
        return None
    return pool, action


async def _send_json_bytes(send: Send, status: int, body: bytes) -> None:
    """Answer JSON already encoded (a 204 with no header, as Starlette sends it)."""
    headers = (
        []
        if status == 204
        else [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    )
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _too_large(limit: int) -> MixerError:
    return MixerError(413, "too_large", f"a body here is at most {limit} bytes")


def _parse(raw: bytes) -> Any:
    try:
        return parse_json(raw)
    except Rejected as exc:
        raise MixerError(400, "malformed", exc.message) from None


def _post(coordinator: Coordinator, pool: str, raw: bytes) -> int:
    return coordinator.post(pool, _parse(raw))


def _kind(wire: Any) -> Any:
    """The kind a POST .../messages body claims for its message (None if it names none)."""
    message = wire.get("message") if isinstance(wire, dict) else None
    return message.get("kind") if isinstance(message, dict) else None


def _document_peer_routes(app: FastAPI) -> None:
    """Add the two routes `PeerRoutes` serves to the OpenAPI document, as FastAPI documented
    them, in their place after `/v1/join`."""
    pool_parameter = {
        "name": "pool",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "title": "Pool"},
    }
    invalid = {
        "422": {
            "description": "Validation Error",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
            },
        }
    }
    routes = {
        "/v1/pools/{pool}/events": {
            "get": {
                "summary": "A peer's events of a pool (long poll, signed by the peer)",
                "operationId": "events_v1_pools__pool__events_get",
                "parameters": [pool_parameter, *POLL_QUERY["parameters"]],
                "responses": {
                    "200": {
                        "description": "Successful Response",
                        "content": {"application/json": {"schema": {}}},
                    },
                    **invalid,
                },
            }
        },
        "/v1/pools/{pool}/messages": {
            "post": {
                "summary": "Relay a message to the pool",
                "operationId": "message_v1_pools__pool__messages_post",
                "parameters": [pool_parameter],
                "responses": {
                    "202": {
                        "description": "Successful Response",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": True,
                                    "title": "Response Message V1 Pools  Pool  Messages Post",
                                }
                            }
                        },
                    },
                    **invalid,
                },
                **request_body(ENVELOPE),
            }
        },
    }

    def extend(document: dict[str, Any]) -> None:
        paths: dict[str, Any] = {}
        for path, operations in document["paths"].items():
            paths[path] = operations
            if path == "/v1/join":
                paths.update(routes)
        document["paths"] = paths

    extend_openapi(app, extend)


async def _disconnected(receive: Receive) -> None:
    """Return once the client has hung up (a GET has no body left to read)."""
    with contextlib.suppress(Exception):  # the server could not tell: treat it as gone
        while (await receive())["type"] != "http.disconnect":
            pass
