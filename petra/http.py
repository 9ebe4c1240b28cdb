"""The HTTP conventions every PETra service shares: one error shape,
`{"error": {"code", "message", ...}}`, with a stable code and a message a person can act on,
and no traceback ever in a body."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("petra.http")

_STARLETTE_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "bad_request"}


class ApiError(Exception):
    """An error answered with the common shape; `extra` adds fields beside code and message."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


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


async def bounded_body(request: Request, limit: int, too_large: Exception) -> bytes:
    """The request's body; `too_large` is raised as soon as it is known to exceed `limit`
    bytes, from its Content-Length or while it streams, so no more of it is read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise too_large
    return bytes(raw)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure, including FastAPI's own, with the common error shape."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        # A token's refusal invites a bearer token; a refused signature does not.
        headers = {"WWW-Authenticate": "Bearer"} if exc.code == "unauthorized" else None
        return error_response(exc.status, exc.code, exc.message, headers, **exc.extra)

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
        return error_response(500, "internal", "the service failed to answer; its log has why")
