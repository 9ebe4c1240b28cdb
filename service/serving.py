"""Serving a PETra HTTP service with uvicorn under limits no client can talk it out of.

- Connections: at most `max_connections` open at once; one beyond is closed at once.
- Requests in flight: at most `max_in_flight`; one beyond is answered 503 `busy` with
  `Retry-After`, in the common error shape.
- Reading a request: its headers and body must arrive within `request_timeout_s` of its first
  byte (or of the connection, for a connection that sends nothing), so half-sent requests
  (slowloris) cannot hold connections; an idle keep-alive connection closes after
  `keep_alive_s`.
- Shutdown: SIGTERM and SIGINT stop the server within `shutdown_s`, then return to the caller,
  whose clean-up runs and whose process exits 0 (uvicorn itself re-raises the signal, which
  skips every `finally`). Idle connections close at once, and so do those whose request body
  is still arriving (nothing was done with it yet); long polls and streams end (`draining`);
  requests being answered have `shutdown_s` to finish.
- Logging: one line per request at INFO once it is answered (`RequestLog`), never the client's
  address; uvicorn's own lines go through the process's logging, its access log is off.
- Direct routes (`service.http.DirectRoute`, which the application names): a `POST` to one of
  their paths is answered by the protocol itself, without a task, the middleware or ASGI's
  messages, under the same limits and logged the same way; one it cannot take so (pipelined
  behind an unanswered request, a path with a query) goes to the application, which serves
  the same route.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.http import (
    DRAINING,
    ApiError,
    DirectRoute,
    RawHeaders,
    declared_length,
    direct_routes,
    error_answer,
    internal_error,
    json_answer,
    send_error,
)

log = logging.getLogger("petra.service.serving")
request_log = logging.getLogger("petra.requests")
MAX_LOGGED_PATH = 200  # characters of a path written to the log; a longer one is cut

RETRY_AFTER_S = 1
PROBES = ("/healthz", "/readyz")  # `service.health`'s routes


@dataclass(frozen=True, slots=True)
class ServeLimits:
    """What one service process takes on at once; every field can be set by an environment
    variable `PETRA_<FIELD>` (for example `PETRA_REQUEST_TIMEOUT_S=10`)."""

    max_connections: int = 2_000
    max_in_flight: int = 1_000
    request_timeout_s: float = 30.0
    keep_alive_s: float = 5.0
    shutdown_s: float = 0.5  # with the clean-up after it, a service exits within 1 s

    @classmethod
    def from_env(cls) -> ServeLimits:
        """The defaults, with what the environment sets; a bad value is refused by name."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            name = f"PETRA_{field.name.upper()}"
            text = os.environ.get(name)
            if text is None:
                continue
            kind = int if field.type in (int, "int") else float
            try:
                value = kind(text)
            except ValueError:
                raise ValueError(f"{name}={text!r} is not a {kind.__name__}") from None
            if value <= 0:
                raise ValueError(f"{name} must be above 0, got {text}")
            values[field.name] = value
        return cls(**values)


class InFlightLimit:
    """A pure ASGI middleware: at most `limit` HTTP requests in the app at once; one beyond
    is answered 503 `busy` with `Retry-After` instead of queueing on the event loop."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0
        self.draining = asyncio.Event()  # handed to every request: set when stopping

    def busy(self) -> ApiError:
        """The answer to a request beyond the limit."""
        return ApiError(
            503,
            "busy",
            f"the service is answering {self.limit} requests: try again in a moment",
            {"Retry-After": str(RETRY_AFTER_S)},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[DRAINING] = self.draining
        if self.in_flight >= self.limit:
            await send_error(send, self.busy())
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class RequestLog:
    """A pure ASGI middleware: one INFO line per HTTP request once it ends, `GET /v1/head 200
    1.2 ms`: method, path (not the query string, which may carry signatures), status (`-` if
    none was sent) and milliseconds from its arrival, a stream's whole life. Never the client's
    address: the bid store is reached over Tor, and no service needs one in its log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not request_log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status: int | None = None

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            status = status or 500  # uvicorn answers 500 to what the app let escape
            raise
        finally:
            log_request(scope["method"], logged_path(scope), status, began)


def log_request(method: str, path: str, status: int | None, began: float) -> None:
    """The request's line: method, path, status (`-` if none was sent) and milliseconds since
    `began` (`time.perf_counter()`)."""
    took_ms = (time.perf_counter() - began) * 1000
    # A supervisor probes every few seconds: an answered probe is worth a line at debug
    level = logging.DEBUG if path in PROBES and status == 200 else logging.INFO
    request_log.log(level, "%s %s %s %.1f ms", method, path, status or "-", took_ms)


def logged_path(scope: Scope) -> str:
    """The request's path as sent, printable and at most `MAX_LOGGED_PATH` characters: a path
    is the client's text, and must not forge or flood log lines."""
    raw = scope.get("raw_path") or scope["path"].encode()
    text = raw.split(b"?", 1)[0].decode("ascii", "backslashreplace")
    text = "".join(c if c.isprintable() and c != " " else f"%{ord(c):02X}" for c in text)
    return text if len(text) <= MAX_LOGGED_PATH else text[:MAX_LOGGED_PATH] + "…"


class _NobodyWaits:
    """A direct request's `message_event`: uvicorn's protocol sets it when the connection is
    lost; nothing waits on it (the route is called instead)."""

    def set(self) -> None:
        pass


class _DirectRequest:
    """A request answered by a `DirectRoute`, kept as the protocol's `cycle` while it is read
    and answered (with the attributes uvicorn's protocol reads of a cycle), and the route's
    `Reply`: the whole answer leaves in one write."""

    message_event = _NobodyWaits()

    def __init__(
        self,
        protocol: HttpToolsProtocol,
        route: DirectRoute,
        path: str,
        keep_alive: bool,
        in_flight: InFlightLimit,
    ) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self.route = route
        self.path = path
        self.keep_alive = keep_alive
        self.in_flight = in_flight
        self.began = time.perf_counter()
        self.body = bytearray()
        self.more_body = True
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.counted = False

    def admit(self, declared: int | None, expect_continue: bool) -> None:
        """Count the request in flight, or answer it now: busy, or its body too large."""
        if self.in_flight.in_flight >= self.in_flight.limit:
            self.error(self.in_flight.busy())
            return
        self.in_flight.in_flight += 1
        self.counted = True
        if declared is not None and declared > self.route.limit:
            self.error(self.route.too_large())
        elif expect_continue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def take(self, chunk: bytes) -> None:
        if self.response_complete:
            return  # answered already (too large): the rest of the body is dropped
        self.body += chunk
        if len(self.body) > self.route.limit:
            self.error(self.route.too_large())

    def complete(self) -> None:
        """The body has arrived: hand it to the route."""
        self.more_body = False
        if self.response_complete:
            return
        try:
            self.route.answer(bytes(self.body), self)
        except Exception:
            log.exception("a direct route failed to answer")
            if not self.response_complete:
                self.error(internal_error())

    def json(self, status: int, document: Any, headers: Mapping[str, str] | None = None) -> None:
        self._answer(status, *json_answer(document, headers))

    def error(self, exc: ApiError) -> None:
        self._answer(exc.status, *error_answer(exc))

    def _answer(self, status: int, headers: RawHeaders, body: bytes) -> None:
        """Write the answer as uvicorn would write the same ASGI messages, in one write."""
        if self.response_complete:
            raise RuntimeError("a direct request was answered twice")
        self.response_started = self.response_complete = True
        if self.counted:
            self.in_flight.in_flight -= 1
        protocol = self.protocol
        if not self.disconnected and not self.transport.is_closing():
            content = [STATUS_LINE[status]]
            for name, value in (*protocol.server_state.default_headers, *headers):
                content += (name, b": ", value, b"\r\n")
            if not self.keep_alive:
                content.append(b"connection: close\r\n")
            content += (b"\r\n", body)
            self.transport.write(b"".join(content))
            if not self.keep_alive:
                self.transport.close()
            protocol.on_response_complete()
        if request_log.isEnabledFor(logging.INFO):
            log_request("POST", self.path, status, self.began)


def _protocol(
    limits: ServeLimits, direct: Mapping[str, DirectRoute], in_flight: InFlightLimit
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a connection cap, a deadline to read a request, and
    the `direct` routes answered by the protocol itself (`service.http.DirectRoute`)."""
    routes = {path.encode("ascii"): (path, route) for path, route in direct.items()}

    class BoundedProtocol(HttpToolsProtocol):
        _read_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= limits.max_connections:
                _refused.note()
                transport.abort()
                return
            super().connection_made(transport)
            self._arm()  # a connection that sends nothing is a request not read in time

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._read_deadline is None:
                self._arm()

        def on_headers_complete(self) -> None:
            request = self._direct_request()
            if request is None:
                super().on_headers_complete()
                return
            self.cycle = request  # type: ignore[assignment]
            request.admit(declared_length(self.headers), self.expect_100_continue)

        def _direct_request(self) -> _DirectRequest | None:
            """A request for a direct route, unless it must go the ASGI way: another method,
            a path written otherwise (a query, escapes), an upgrade, or one pipelined behind
            a request not yet answered (uvicorn keeps their order)."""
            found = routes.get(self.url)
            if found is None or self.parser.get_method() != b"POST":
                return None
            cycle = self.cycle
            if (cycle is not None and not cycle.response_complete) or self.parser.should_upgrade():
                return None
            keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
            return _DirectRequest(self, found[1], found[0], keep_alive, in_flight)

        def on_body(self, body: bytes) -> None:
            if isinstance(self.cycle, _DirectRequest):
                self.cycle.take(body)
            else:
                super().on_body(body)

        def on_message_complete(self) -> None:
            self._disarm()
            if isinstance(self.cycle, _DirectRequest):
                self.cycle.complete()
            else:
                super().on_message_complete()

        def shutdown(self) -> None:
            cycle = self.cycle
            if cycle is not None and cycle.more_body and not cycle.response_started:
                self.transport.close()  # its body is still arriving: nothing was done with it
                return
            super().shutdown()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self in self.connections:
                super().connection_lost(exc)

        def _arm(self) -> None:
            self._read_deadline = self.loop.call_later(limits.request_timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._read_deadline is not None:
                self._read_deadline.cancel()
                self._read_deadline = None

        def _expired(self) -> None:
            self._read_deadline = None
            if not self.transport.is_closing():
                _slow.note()
                self.transport.close()

    return BoundedProtocol


class _Tally:
    """Counts an event and logs it at most once a minute, so a flood costs one log line."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.count = 0
        self.logged = 0.0

    def note(self) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.logged >= 60:
            log.warning(self.message, self.count)
            self.logged, self.count = now, 0


_refused = _Tally("refused %d connections beyond the service's limit")
_slow = _Tally("closed %d connections that did not send a request in time")


class PetraServer(uvicorn.Server):
    """uvicorn's server, stopping on SIGTERM or SIGINT, or when `stop` is set, and then
    returning to its caller instead of re-raising the signal."""

    def __init__(
        self,
        config: uvicorn.Config,
        stop: threading.Event | None = None,
        in_flight: InFlightLimit | None = None,
    ) -> None:
        """`in_flight`: the middleware whose `draining` event is set when stopping."""
        super().__init__(config)
        self.stop = stop or threading.Event()
        self.in_flight = in_flight

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def on_tick(self, counter: int) -> bool:
        return self.stop.is_set() or await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Tell long polls and streams to end (`service.http.draining`), then stop as uvicorn
        does: they answer within the grace period rather than being cancelled."""
        log.info(
            "stopping: no new connections, open requests have %s s",
            self.config.timeout_graceful_shutdown,
        )
        if self.in_flight is not None:
            self.in_flight.draining.set()
        await super().shutdown(sockets)


def raise_open_files_limit() -> None:
    """Let the process hold as many sockets as the system allows it (the soft limit is
    often 1,024, below what `max_connections` needs)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65_536
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def server(
    app: ASGIApp,
    host: str,
    port: int,
    limits: ServeLimits,
    stop: threading.Event | None = None,
    log_level: str | None = None,
) -> PetraServer:
    """A server for `app` on `host:port` under `limits` (`ServeLimits.from_env()` for a
    command's), logging each request (`RequestLog`). uvicorn's own lines go to the process's
    logging (`petra.console.configure_logging`), at `log_level` (default: warning, or debug
    when the process logs debug)."""
    raise_open_files_limit()
    if log_level is None:
        log_level = "debug" if logging.getLogger().isEnabledFor(logging.DEBUG) else "warning"
    in_flight = InFlightLimit(app, limits.max_in_flight)
    config = uvicorn.Config(
        RequestLog(in_flight),
        host=host,
        port=port,
        http=_protocol(limits, direct_routes(app), in_flight),  # httptools' C parser
        loop="uvloop",  # named, not left to "auto": the event loop is most of a request's cost
        log_config=None,  # the process's one format, not uvicorn's
        log_level=log_level,
        access_log=False,  # `RequestLog` writes one line per request, without the address
        timeout_keep_alive=max(1, round(limits.keep_alive_s)),
        # uvicorn waits with asyncio.timeout, which takes fractions of a second
        timeout_graceful_shutdown=limits.shutdown_s,  # type: ignore[arg-type]
        lifespan="on",
    )
    return PetraServer(config, stop, in_flight)
