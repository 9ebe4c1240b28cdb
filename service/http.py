"""The HTTP conventions every PETra service shares: one error shape,
`{"error": {"code", "message", ...}}`, with a stable code and a message a person can act on,
and no traceback ever in a body."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

log = logging.getLogger("petra.service.http")

# FastAPI's own OpenTelemetry hooks, off: PETra's metrics are Prometheus' (`service.metrics`),
# and left on they look the providers up on every request (a tenth of a busy node's loop).
# `Any`: older FastAPI releases in the pinned range take it as an extra, unnamed setting.
NO_TELEMETRY: Any = {"tracing": False, "metrics": False, "logs": False}
_STARLETTE_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "bad_request"}


class ApiError(Exception):
    """An error answered with the common shape; `extra` adds fields beside code and message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        """`headers`: sent with the answer (for example `Retry-After` with a 429 or 503)."""
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra
        self.headers = dict(headers or {})


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, **extra}},
        status_code=status,
        headers=headers,
    )


RawHeaders = list[tuple[bytes, bytes]]


def json_answer(
    document: Any, headers: Mapping[str, str] | None = None
) -> tuple[RawHeaders, bytes]:
    """The headers and body of `document` answered as JSON: the bytes `JSONResponse` sends
    (compact, UTF-8), encoded by orjson. Header names are lowercase, as HTTP/1.1 servers
    send them."""
    body = orjson.dumps(document)
    raw_headers = [
        (b"content-length", str(len(body)).encode()),
        (b"content-type", b"application/json"),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return raw_headers, body


def error_answer(exc: ApiError) -> tuple[RawHeaders, bytes]:
    """`json_answer` of `exc` in the common error shape, as `install_error_handlers` answers
    it from a FastAPI route."""
    error = {"code": exc.code, "message": exc.message, **exc.extra}
    return json_answer({"error": error}, error_headers(exc))


def error_headers(exc: ApiError) -> dict[str, str]:
    """The headers answered with `exc`: its own, and a bearer token invited where one is
    refused (a refused signature invites none)."""
    headers = dict(exc.headers)
    if exc.code == "unauthorized":
        headers.setdefault("WWW-Authenticate", "Bearer")
    return headers


async def send_json(
    send: Send, status: int, document: Any, headers: Mapping[str, str] | None = None
) -> None:
    """Answer `document` as JSON (`json_answer`) from a pure ASGI route, without a
    framework's per-request work."""
    raw_headers, body = json_answer(document, headers)
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, exc: ApiError) -> None:
    """Answer `exc` in the common error shape (`error_answer`) from a pure ASGI route."""
    raw_headers, body = error_answer(exc)
    await send({"type": "http.response.start", "status": exc.status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class Reply(Protocol):
    """How a `DirectRoute` answers its request: exactly once, on the event loop."""

    def json(self, status: int, document: Any, headers: Mapping[str, str] | None = None) -> None:
        """Answer `document` as JSON (`json_answer`) with `status`."""

    def error(self, exc: ApiError) -> None:
        """Answer `exc` in the common error shape (`error_answer`)."""


@dataclass(frozen=True)
class DirectRoute:
    """A `POST` route the HTTP server answers itself (`service.serving`), ahead of the ASGI
    application, its middleware and a task per request: for the one request a service takes
    thousands of times a second, whose framework costs more than its work.

    `answer(body, reply)` is called on the event loop with the whole body and calls `reply`
    exactly once, then or later, on the event loop. A body over `limit` bytes is answered
    `too_large()` as soon as that is known, and `answer` never sees it. The application must
    serve the same route with the same answers: a request the server does not take this way
    (pipelined behind another, its path written otherwise, another server, a test client)
    reaches it there."""

    limit: int
    too_large: Callable[[], ApiError]
    answer: Callable[[bytes, Reply], None]


_DIRECT_ROUTES = "petra_direct_routes"


def serve_directly(app: FastAPI, routes: Mapping[str, DirectRoute]) -> None:
    """Ask `app`'s server to answer `routes` (by path) itself (`DirectRoute`)."""
    setattr(app.state, _DIRECT_ROUTES, {**direct_routes(app), **routes})


def direct_routes(app: Any) -> dict[str, DirectRoute]:
    """The direct routes an application asks its server for, by path: a FastAPI
    application's (`serve_directly`), or those of any ASGI application with a
    `direct_routes()` method (one routing to several)."""
    own = getattr(app, "direct_routes", None)
    if callable(own):
        return dict(own())
    state = getattr(app, "state", None)
    return dict(getattr(state, _DIRECT_ROUTES, None) or {})


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The body's length a request's raw headers (lowercase names) declare, in bytes; None if
    they declare none a bound can be checked against."""
    for name, value in headers:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


async def bounded_asgi_body(
    scope: Scope, receive: Receive, limit: int, too_large: Callable[[], Exception]
) -> bytes:
    """`bounded_body` for a pure ASGI route: the body, refused with `too_large()` as soon as
    it is known to exceed `limit` bytes, from its Content-Length or while it streams (made
    only then: a hot route answers thousands of bodies that fit)."""
    declared = declared_length(scope["headers"])
    if declared is not None and declared > limit:
        raise too_large()
    raw = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "bad_request", "the client hung up before its body ended")
        raw += message.get("body", b"")
        if len(raw) > limit:
            raise too_large()
        if not message.get("more_body", False):
            return bytes(raw)


async def bounded_body(request: Request, limit: int, too_large: Exception) -> bytes:
    """The request's body; `too_large` is raised as soon as it is known to exceed `limit`
    bytes, from its Content-Length or while it streams, so no more of it is read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    raw = bytearray()
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise too_large
    except ClientDisconnect:  # nobody reads the answer, but the log stays quiet
        raise ApiError(400, "bad_request", "the client hung up before its body ended") from None
    return bytes(raw)


# The scope key under which `service.serving` hands each request the event it sets when the
# service begins to stop: long polls and streams end then, instead of being cancelled.
DRAINING = "petra.draining"


def draining(request: Request) -> asyncio.Event:
    """The event set when the service begins to stop (never set outside `service.serving`)."""
    event = request.scope.get(DRAINING)
    return event if isinstance(event, asyncio.Event) else asyncio.Event()


async def wait_unless_draining(awaitable: Any, stopping: asyncio.Event) -> bool:
    """Await `awaitable` unless `stopping` is set first; False if the service is stopping."""
    task = asyncio.ensure_future(awaitable)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stop):
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
    return not stopping.is_set()


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure, including FastAPI's own, with the common error shape."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, error_headers(exc), **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return error_response(400, "bad_request", f"invalid request: {where}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STARLETTE_CODES.get(exc.status_code, "bad_request")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)  # e.g. Allow

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        failed = internal_error()
        return error_response(failed.status, failed.code, failed.message)


def internal_error() -> ApiError:
    """The answer to a request whose handling failed unexpectedly (its log has the why)."""
    return ApiError(500, "internal", "the service failed to answer; its log has why")


def extend_openapi(app: FastAPI, extend: Callable[[dict[str, Any]], None]) -> None:
    """Have `extend` add to `app`'s OpenAPI document, once, when it is first generated: what a
    route served ahead of FastAPI (a lean ASGI layer) is, as FastAPI would have described it."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            extend(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
