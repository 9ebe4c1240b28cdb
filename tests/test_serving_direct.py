"""`service.http.DirectRoute`: a route the server answers itself, ahead of the application, on
a real uvicorn server in a thread of the test (loopback), spoken to over raw sockets so that
every byte of an answer is seen. Its answers are the bytes the application gives the same
request; it keeps HTTP/1.1's rules (keep-alive, `Connection: close`, pipelining, `Expect:
100-continue`, chunked bodies) and the server's limits (bodies, requests in flight, the stop),
and a route that fails answers 500 without a traceback."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send
from test_serving import serve_in_thread
from waiting import wait_until

from service.http import (
    ApiError,
    DirectRoute,
    Reply,
    bounded_body,
    direct_routes,
    install_error_handlers,
    send_error,
    send_json,
    serve_directly,
)
from service.serving import ServeLimits

LIMIT = 64


def too_large() -> ApiError:
    return ApiError(413, "too_large", f"the body is over {LIMIT} bytes", txid=None)


def answer_of(body: bytes) -> dict[str, int]:
    """What the route answers `body`: its length; some bodies are refused, one fails."""
    if body == b"refuse":
        raise ApiError(422, "refused", "this body is refused", {"Retry-After": "3"}, txid="ab")
    if body == b"fail":
        raise RuntimeError("the route failed")
    return {"bytes": len(body)}


@dataclass
class Echo:
    """A direct route answering `answer_of(body)`, at once, or once released while `hold`."""

    hold: bool = False
    held: list[tuple[bytes, Reply]] = field(default_factory=list)
    calls: list[bytes] = field(default_factory=list)
    loop: asyncio.AbstractEventLoop | None = None  # the server's, where replies are made

    def take(self, body: bytes, reply: Reply) -> None:
        self.loop = asyncio.get_running_loop()
        self.calls.append(body)
        if self.hold:
            self.held.append((body, reply))
            return
        self.answer(body, reply)

    @staticmethod
    def answer(body: bytes, reply: Reply) -> None:
        try:
            document = answer_of(body)
        except ApiError as exc:
            reply.error(exc)
            return
        reply.json(200, document)


def echo_app(echo: Echo) -> FastAPI:
    """`/echo` served directly, and by a pure ASGI route with the same answers (reached by a
    request the server does not take directly: one with a query string)."""
    app = FastAPI()
    install_error_handlers(app)
    serve_directly(app, {"/echo": DirectRoute(LIMIT, too_large, echo.take)})

    class AsgiEcho:
        """`/echo` for the application: a pure ASGI route, as `ledger.api.SubmissionRoutes`."""

        def __init__(self, inner: ASGIApp) -> None:
            self.inner = inner

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["path"] != "/echo":
                await self.inner(scope, receive, send)
                return
            try:
                body = await bounded_body(Request(scope, receive), LIMIT, too_large())
                document = answer_of(body)
            except ApiError as exc:
                await send_error(send, exc)
                return
            await send_json(send, 200, document)

    app.add_middleware(AsgiEcho)
    return app


@dataclass
class Served:
    host: str
    port: int
    stop: threading.Event
    thread: threading.Thread
    echo: Echo

    def connect(self) -> Connection:
        return Connection(socket.create_connection((self.host, self.port), timeout=5))

    def release(self) -> None:
        """Answer every held request, on the server's event loop."""

        def answer_all() -> None:
            held, self.echo.held[:] = list(self.echo.held), []
            for body, reply in held:
                Echo.answer(body, reply)

        assert self.echo.loop is not None
        self.echo.loop.call_soon_threadsafe(answer_all)


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    limits = getattr(request, "param", ServeLimits())
    echo = Echo()
    url, stop, thread = serve_in_thread(echo_app(echo), limits)
    host, port = url.removeprefix("http://").split(":")
    yield Served(host, int(port), stop, thread, echo)
    stop.set()
    thread.join(timeout=15)
    assert not thread.is_alive(), "setting stop did not end the server"


def post(path: str, body: bytes, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"POST {path} HTTP/{version}", "Host: test", f"Content-Length: {len(body)}"]
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode() + body


class Connection:
    """A client's connection speaking raw HTTP/1.1, reading answers one at a time however
    they arrive (pipelined answers may come in one segment)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.unread = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def settimeout(self, seconds: float) -> None:
        self.sock.settimeout(seconds)

    def recv(self, size: int) -> bytes:
        """What arrived after the answers read, up to `size` bytes (b"": closed)."""
        if self.unread:
            data, self.unread = self.unread[:size], self.unread[size:]
            return data
        return self.sock.recv(size)

    def answer(self) -> bytes:
        """The next whole answer: its head and a body of its Content-Length."""
        while b"\r\n\r\n" not in self.unread:
            self._more()
        head, _, rest = self.unread.partition(b"\r\n\r\n")
        found = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
        assert found, head
        length = int(found[1])
        while len(rest) < length:
            self._more()
            head, _, rest = self.unread.partition(b"\r\n\r\n")
        self.unread = rest[length:]
        return head + b"\r\n\r\n" + rest[:length]

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"the connection closed before a whole answer: {self.unread!r}"
        self.unread += chunk


def without_date(answer: bytes) -> bytes:
    return re.sub(rb"date: [^\r]*\r\n", b"", answer)


def exchange(served: Served, request: bytes) -> bytes:
    with served.connect() as sock:
        sock.sendall(request)
        return sock.answer()


@pytest.mark.parametrize("body", [b"abc", b"refuse", b"fail", b"x" * (LIMIT + 1)])
def test_a_direct_answer_is_the_bytes_the_application_answers(served: Served, body: bytes) -> None:
    direct = exchange(served, post("/echo", body))
    by_app = exchange(served, post("/echo?by=app", body))
    assert without_date(direct) == without_date(by_app)
    assert served.echo.calls == ([] if len(body) > LIMIT else [body])  # only the direct one
    status = int(direct.split(b" ", 2)[1])
    assert status == {b"abc": 200, b"refuse": 422, b"fail": 500}.get(body, 413)
    assert b"Traceback" not in direct and b"RuntimeError" not in direct


def test_the_route_sees_whole_bodies_sent_in_pieces_or_chunks(served: Served) -> None:
    with served.connect() as sock:
        request = post("/echo", b"0123456789")
        for piece in (request[:30], request[30:-4], request[-4:]):
            sock.sendall(piece)
            time.sleep(0.05)
        assert sock.answer().endswith(b'{"bytes":10}')
        chunked = (
            b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        sock.sendall(chunked)
        assert sock.answer().endswith(b'{"bytes":5}')
    assert served.echo.calls == [b"0123456789", b"abcde"]


def test_a_chunked_body_over_the_limit_is_refused_before_the_route_sees_it(
    served: Served,
) -> None:
    chunk = b"x" * 40
    with served.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(2):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = sock.answer()
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert b'"code":"too_large"' in answer
        sock.sendall(b"0\r\n\r\n")  # the rest of the refused body is read and dropped
        sock.sendall(post("/echo", b"next"))
        assert sock.answer().endswith(b'{"bytes":4}')  # the connection is still good
    assert served.echo.calls == [b"next"]


def test_connections_are_kept_alive_unless_the_client_closes_them(served: Served) -> None:
    with served.connect() as sock:
        for body in (b"a", b"bb", b"ccc"):
            sock.sendall(post("/echo", body))
            answer = sock.answer()
            assert b"connection: close" not in answer
        sock.sendall(post("/echo", b"last", "Connection: close"))
        assert b"connection: close" in sock.answer()
        assert sock.recv(10) == b""  # closed by the server
    with served.connect() as sock:  # HTTP/1.0 closes unless asked otherwise
        sock.sendall(post("/echo", b"old", version="1.0"))
        assert b"connection: close" in sock.answer()
        assert sock.recv(10) == b""


def test_expect_100_continue_is_answered_before_the_body_is_sent(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(post("/echo", b"", "Expect: 100-continue").replace(b"0\r\n", b"4\r\n", 1))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        assert sock.answer().endswith(b'{"bytes":4}')


def test_pipelined_requests_are_answered_in_the_order_sent(served: Served) -> None:
    served.echo.hold = True
    with served.connect() as sock:
        sock.sendall(
            post("/echo", b"first")
            + post("/echo", b"second!")
            + b"GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n"
        )
        wait_until(lambda: len(served.echo.held) == 1, 5, "the first request to be held")
        time.sleep(0.2)
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(10)  # nothing may overtake the first answer
        sock.settimeout(5)
        served.echo.hold = False
        served.release()
        assert sock.answer().endswith(b'{"bytes":5}')
        assert sock.answer().endswith(b'{"bytes":7}')  # by the application, in turn
        assert sock.answer().startswith(b"HTTP/1.1 404 ")
    assert served.echo.calls == [b"first"]  # the second waited its turn in the application


@pytest.mark.parametrize("served", [ServeLimits(max_in_flight=1)], indirect=True)
def test_direct_requests_count_in_flight(served: Served) -> None:
    served.echo.hold = True
    with served.connect() as first, served.connect() as second:
        first.sendall(post("/echo", b"held"))
        wait_until(lambda: len(served.echo.held) == 1, 5, "the first request to be held")
        second.sendall(post("/echo", b"refused"))
        busy = second.answer()
        assert busy.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in busy
        assert b'"code":"busy"' in busy
        served.echo.hold = False
        served.release()
        assert first.answer().endswith(b'{"bytes":4}')
        second.sendall(post("/echo", b"again"))
        assert second.answer().endswith(b'{"bytes":5}')  # its place was given back


@pytest.mark.parametrize("served", [ServeLimits(max_in_flight=1)], indirect=True)
def test_a_client_gone_before_its_answer_costs_nothing(served: Served) -> None:
    served.echo.hold = True
    with served.connect() as gone:
        gone.sendall(post("/echo", b"never read"))
        wait_until(lambda: len(served.echo.held) == 1, 5, "the request to be held")
    time.sleep(0.1)
    served.echo.hold = False
    served.release()  # answering a closed connection writes nothing and raises nothing
    wait_until(lambda: not served.echo.held, 5, "the held request to be answered")
    assert exchange(served, post("/echo", b"next")).endswith(b'{"bytes":4}')


def test_a_request_being_answered_at_the_stop_is_answered_then_closed(served: Served) -> None:
    served.echo.hold = True
    with served.connect() as sock:
        sock.sendall(post("/echo", b"held"))
        wait_until(lambda: len(served.echo.held) == 1, 5, "the request to be held")
        served.stop.set()
        time.sleep(0.3)
        served.echo.hold = False
        served.release()
        answer = sock.answer()
        assert answer.endswith(b'{"bytes":4}') and b"connection: close" in answer
        assert sock.recv(10) == b""
    served.thread.join(timeout=10)
    assert not served.thread.is_alive()


def test_a_direct_request_is_logged_as_any_other(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="petra.requests"):
        exchange(served, post("/echo", b"refuse"))
        wait_until(lambda: any(r.name == "petra.requests" for r in caplog.records), 5, "the line")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "petra.requests"]
    assert re.fullmatch(r"POST /echo 422 \d+\.\d ms", line), line


def test_an_application_without_direct_routes_has_none() -> None:
    assert direct_routes(FastAPI()) == {}
    app = FastAPI()
    route = DirectRoute(1, too_large, lambda body, reply: None)
    serve_directly(app, {"/a": route})
    serve_directly(app, {"/b": route})
    assert direct_routes(app) == {"/a": route, "/b": route}
