"""The benches' load generator: closed-loop clients, one keep-alive HTTP/1.1 connection and
one request in flight each, every answer checked by the caller.

The clients share the machine's cores with the services they measure, so they must cost far
less than those services (as wrk does): a full client library (httpx) spent as much CPU per
request as a node spends on the request itself. `drive` gives each client a thread and
`http.client`, for the benches that read and post hundreds a second; `drive_posts` serves
the ledger's submissions, thousands a second, from one thread waiting on every connection
and speaking only what a POST and its answer need.
"""

from __future__ import annotations

import http.client
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

REQUEST_TIMEOUT_S = 60
JSON = "application/json"
Item = TypeVar("Item")


class Connection(Protocol):
    def close(self) -> None: ...


Conn = TypeVar("Conn", bound=Connection)


def http_connection(url: str) -> http.client.HTTPConnection:
    """A connection to `url`'s host and port, made now (outside any clock)."""
    where = urlsplit(url)
    connection = http.client.HTTPConnection(
        where.hostname or "127.0.0.1", where.port, timeout=REQUEST_TIMEOUT_S
    )
    connection.connect()
    return connection


def exchange(
    connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    """One request on `connection` (kept alive): the answer's status and body."""
    headers = {"Content-Type": JSON} if body is not None else {}
    connection.request(method, path, body=body, headers=headers)
    answer = connection.getresponse()
    return answer.status, answer.read()


class _Post:
    """One of `drive_posts`'s connections: its socket, what it has still to send, what it has
    received of the answer, and the item in flight with when it was sent."""

    __slots__ = ("item", "received", "sent", "socket", "unsent")

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.unsent = b""
        self.received = b""
        self.item: object = None
        self.sent = 0.0


def _answer(received: bytes) -> tuple[int, bytes] | None:
    """(status, body) of the HTTP/1.1 answer `received` holds, or None while it is incomplete.
    The body is delimited by Content-Length: the services measured always send one."""
    end = received.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = received[:end].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    lengths = [int(line[15:]) for line in lines[1:] if line[:15].lower() == b"content-length:"]
    if not lengths:
        raise ConnectionError(f"an answer of status {status} came without a Content-Length")
    start = end + 4
    if len(received) < start + lengths[0]:
        return None
    if len(received) > start + lengths[0]:
        raise ConnectionError("the server answered more than the one request in flight")
    return status, received[start:]


def drive_posts(
    url: str,
    path: str,
    content_type: str,
    items: Sequence[Item],
    clients: int,
    body: Callable[[Item], bytes],
    check: Callable[[Item, int, bytes], str | None],
    tick: Callable[[Item], None],
    error: type[Exception],
) -> tuple[float, list[float]]:
    """POST `body(item)` to `path` for every item, in order, from `clients` keep-alive
    connections (made before the clock starts) with one request in flight each, all served by
    one thread waiting on them together (epoll), as wrk does: a thread per connection would
    spend the cores the service needs on switching between them. (wall seconds, each item's
    round trip in seconds). `check(item, status, answer)` returns why an item failed, or None; the
    first failure, or a connection's, stops the run and is raised as `error`. `tick` follows
    each item."""
    where = urlsplit(url)
    host = where.hostname or "127.0.0.1"
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
    feed = iter(items)
    latencies: list[float] = []
    selector = selectors.DefaultSelector()
    posts: list[_Post] = []
    try:
        try:
            for _ in range(clients):
                sock = socket.create_connection((host, where.port), timeout=REQUEST_TIMEOUT_S)
                posts.append(_Post(sock))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(False)
        except OSError as exc:
            raise error(f"cannot connect the bench's clients: {exc}") from None

        def send_next(post: _Post) -> None:
            item = next(feed, None)
            if item is None:
                selector.unregister(post.socket)
                return
            content = body(item)
            post.item, post.received = item, b""
            post.unsent = f"{head}Content-Length: {len(content)}\r\n\r\n".encode() + content
            post.sent = time.perf_counter()
            write(post)

        def write(post: _Post) -> None:
            post.unsent = post.unsent[post.socket.send(post.unsent) :]
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if post.unsent else 0)
            if selector.get_key(post.socket).events != wanted:
                selector.modify(post.socket, wanted, post)

        for post in posts:
            selector.register(post.socket, selectors.EVENT_READ, post)
        start = time.perf_counter()
        try:
            for post in posts:
                send_next(post)
            while selector.get_map():
                ready = selector.select(REQUEST_TIMEOUT_S)
                if not ready:
                    raise error(f"no answer came within {REQUEST_TIMEOUT_S} s")
                for key, events in ready:
                    post = key.data
                    if events & selectors.EVENT_WRITE:
                        write(post)
                    if not events & selectors.EVENT_READ:
                        continue
                    chunk = post.socket.recv(1 << 20)
                    if not chunk:
                        raise ConnectionResetError("the server closed the connection")
                    post.received += chunk
                    answer = _answer(post.received)
                    if answer is None:
                        continue
                    latencies.append(time.perf_counter() - post.sent)
                    failure = check(post.item, *answer)
                    if failure is not None:
                        raise error(failure)
                    tick(post.item)
                    send_next(post)
        except (OSError, ValueError) as exc:
            raise error(f"{type(exc).__name__}: {exc}") from None
        return time.perf_counter() - start, latencies
    finally:
        selector.close()
        for post in posts:
            post.socket.close()


def drive(
    connect: Callable[[], Conn],
    items: Sequence[Item],
    clients: int,
    send: Callable[[Conn, Item], str | None],
    tick: Callable[[Item], None],
    error: type[Exception],
) -> tuple[float, list[float]]:
    """`send` every item, in order, from `clients` threads, each on its own connection (made by
    `connect` before the clock starts) with one item in flight; (wall seconds, each item's round
    trip in seconds). `send` returns why an item failed, or None; the first failure, or a
    connection's, stops every thread and is raised as `error`. `tick` follows each item."""
    feed = iter(items)
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    try:
        connections = [connect() for _ in range(clients)]
    except OSError as exc:
        raise error(f"cannot connect the bench's clients: {exc}") from None
    ready = threading.Barrier(clients + 1)

    def client_thread(connection: Conn) -> None:
        ready.wait()
        mine: list[float] = []
        try:
            while not failures:
                with lock:
                    item = next(feed, None)
                if item is None:
                    break
                sent = time.perf_counter()
                failure = send(connection, item)
                mine.append(time.perf_counter() - sent)
                if failure is not None:
                    failures.append(failure)
                    break
                tick(item)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()
            with lock:
                latencies.extend(mine)

    threads = [
        threading.Thread(target=client_thread, args=(c,), name=f"bench-client-{n}", daemon=True)
        for n, c in enumerate(connections)
    ]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise error(failures[0])
    return elapsed, latencies
