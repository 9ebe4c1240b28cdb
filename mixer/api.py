"""The mixer coordinator's HTTP API under /v1 (docs/mixer-api.md): routes only, over
`Coordinator`. No route needs a token: a join is signed by the input's owner, a message by its
sender, and a read of a pool's events by the peer whose events they are.

Blocking calls (the ledger, relaying) run in threads; long polls are awaited on the event loop
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
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from assets import Rejected
from assets.canonical import parse_json
from assets.schemas import request_body
from mixer.coordinator import Coordinator, MixerError, parse_forming, parse_poll
from mixer.polls import long_poll
from mixer.schemas import ENVELOPE, FORMING_QUERY, JOIN, POLL_QUERY
from service.health import install_health
from service.http import bounded_body, draining, error_response, install_error_handlers
from service.ticker import Ticker

MAX_BODY_BYTES = 4 * 1024 * 1024  # a message: a blame carries every message of its run
MAX_JOIN_BYTES = 4 * 1024  # a join request is a few hundred bytes
TICK_S = 0.25  # how often the ticker drives the coordinator's timeouts


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
    )
    install_error_handlers(app)
    install_health(app, {"ledger": coordinator.ledger_problem})

    @app.exception_handler(MixerError)
    async def mixer_error(_: Request, exc: MixerError) -> JSONResponse:
        coordinator.metrics.refusals.labels(exc.code).inc()
        headers = None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
        return error_response(exc.status, exc.code, exc.message, headers)

    async def json_body(request: Request, limit: int) -> Any:
        too_large = MixerError(413, "too_large", f"a body here is at most {limit} bytes")
        raw = await bounded_body(request, limit, too_large)
        try:
            return parse_json(raw)
        except Rejected as exc:
            raise MixerError(400, "malformed", exc.message) from None

    @app.post(
        "/v1/join",
        status_code=201,
        summary="Join the forming pool of a denomination",
        openapi_extra=request_body(JOIN),
    )
    async def join(request: Request) -> dict[str, Any]:
        body = await json_body(request, MAX_JOIN_BYTES)
        return await run_in_threadpool(coordinator.join, body)

    @app.get(
        "/v1/pools/{pool}/events",
        summary="A peer's events of a pool (long poll, signed by the peer)",
        openapi_extra=POLL_QUERY,
    )
    async def events(pool: str, request: Request) -> Response:
        poll = asyncio.ensure_future(long_poll(coordinator, pool, parse_poll(request.query_params)))
        gone = asyncio.ensure_future(_disconnected(request))
        stopping = asyncio.ensure_future(draining(request).wait())
        try:
            await asyncio.wait([poll, gone, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            stopping.cancel()
            if not poll.done():  # the peer hung up: its poll stops counting against it
                poll.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poll
        if poll.cancelled() and draining(request).is_set():
            raise MixerError(
                503, "unavailable", "the coordinator is stopping: poll again shortly", retry_after=1
            )
        if poll.cancelled():
            return Response(status_code=204)  # nobody reads it
        return Response(poll.result(), media_type="application/json")

    @app.post(
        "/v1/pools/{pool}/messages",
        status_code=202,
        summary="Relay a message to the pool",
        openapi_extra=request_body(ENVELOPE),
    )
    async def message(pool: str, request: Request) -> dict[str, Any]:
        with coordinator.arriving(pool):  # from the first byte: its timeout waits for it
            body = await json_body(request, MAX_BODY_BYTES)
            return {"seq": await run_in_threadpool(coordinator.post, pool, body)}

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


async def _disconnected(request: Request) -> None:
    """Return once the client has hung up (a GET has no body left to read)."""
    with contextlib.suppress(Exception):  # the server could not tell: treat it as gone
        while (await request.receive())["type"] != "http.disconnect":
            pass
