"""The mixer coordinator's HTTP API under /v1 (docs/mixer-api.md): routes only, over
`Coordinator`. No route needs a token: a join is signed by the input's owner, a message by its
sender, and what a pool's events reveal is what its peers see anyway.

Blocking calls (the ledger, long polls) run in threads, long polls in their own pool so that
fifty waiting peers never hold up a join or a message; a ticker thread drives the
coordinator's clock (`Coordinator.tick`) while the app runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from assets import Rejected
from assets.canonical import parse_json
from mixer.coordinator import MAX_WAIT_S, Coordinator, MixerError
from petra.http import bounded_body, error_response, install_error_handlers
from petra.ticker import Ticker

MAX_BODY_BYTES = 4 * 1024 * 1024  # a message: a blame carries every message of its run
MAX_JOIN_BYTES = 4 * 1024  # a join request is a few hundred bytes
DEFAULT_WAIT_S = 20.0
TICK_S = 0.25  # how often the ticker drives the coordinator's timeouts
LONG_POLLS = 1024  # long polls waiting at once (threads, mostly asleep)


def create_app(coordinator: Coordinator, *, ticker: bool = True) -> FastAPI:
    """The FastAPI application of `coordinator`; with `ticker`, the app's lifespan runs a
    `Ticker` (else whoever runs the app calls `tick`)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        running = Ticker(coordinator.tick, TICK_S, "mixer coordinator") if ticker else None
        if running is not None:
            running.start()
        try:
            yield
        finally:
            coordinator.close()
            if running is not None:
                running.stop()

    app = FastAPI(
        title="PETra mixer coordinator",
        version="1",
        description="Pools, relay and timeouts of CoinShuffle (DESIGN.md section 8).",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    long_polls = anyio.CapacityLimiter(LONG_POLLS)

    @app.exception_handler(MixerError)
    async def mixer_error(_: Request, exc: MixerError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    async def json_body(request: Request, limit: int) -> Any:
        too_large = MixerError(413, "too_large", f"a body here is at most {limit} bytes")
        raw = await bounded_body(request, limit, too_large)
        try:
            return parse_json(raw)
        except Rejected as exc:
            raise MixerError(400, "malformed", exc.message) from None

    @app.post("/v1/join", status_code=201, summary="Join the forming pool of a denomination")
    async def join(request: Request) -> dict[str, Any]:
        body = await json_body(request, MAX_JOIN_BYTES)
        return await run_in_threadpool(coordinator.join, body)

    @app.get("/v1/pools/{pool}/events", summary="A peer's events of a pool (long poll)")
    async def events(pool: str, request: Request) -> Response:
        query = request.query_params
        peer = _peer(query.get("peer"))
        after, wait = _after(query.get("after")), _wait(query.get("wait"))
        body = await anyio.to_thread.run_sync(
            coordinator.events_json, pool, peer, after, wait, limiter=long_polls
        )
        return Response(body, media_type="application/json")

    @app.post("/v1/pools/{pool}/messages", status_code=202, summary="Relay a message to the pool")
    async def message(pool: str, request: Request) -> dict[str, Any]:
        body = await json_body(request, MAX_BODY_BYTES)
        return {"seq": await run_in_threadpool(coordinator.post, pool, body)}

    @app.get("/v1/pools/{pool}", summary="A pool's state: counts and phase only")
    def state(pool: str) -> dict[str, Any]:
        return coordinator.pool_state(pool)

    return app


def _peer(value: str | None) -> bytes:
    try:
        raw = bytes.fromhex(value) if value is not None and len(value) == 64 else b""
    except ValueError:
        raw = b""
    if len(raw) != 32 or raw.hex() != value:
        raise MixerError(400, "malformed", "peer must be an owner key as 64 lowercase hex digits")
    return raw


def _after(value: str | None) -> int:
    if value is None:
        return 0
    if not value.isdigit() or not value.isascii() or len(value) > 16:
        raise MixerError(400, "malformed", "after must be a seq: a whole number from 0")
    return int(value)


def _wait(value: str | None) -> float:
    """The long poll's wait in seconds: DEFAULT_WAIT_S unless given, at most MAX_WAIT_S."""
    if value is None:
        return DEFAULT_WAIT_S
    try:
        wait = float(value) if len(value) <= 20 else -1.0
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= 10**9:  # refuses NaN and infinities too
        raise MixerError(400, "malformed", "wait must be a number of seconds from 0")
    return min(wait, MAX_WAIT_S)
