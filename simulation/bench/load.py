"""The benches' load generator: closed-loop clients, one thread, one keep-alive HTTP/1.1
connection and one request in flight each, every answer checked by the caller.

The clients share the machine's cores with the services they measure, so they must cost far
less than those services (as wrk does): a full client library (httpx) spent as much CPU per
request as a node spends on the request itself. `http.client` serves the benches that read
and post; `LeanConnection`, which speaks only what a POST and its answer need, the ledger's
submissions, thousands a second.
"""

from __future__ import annotations

import http.client
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


class LeanConnection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol to post a body
    and read its answer (status and body, by Content-Length)."""

    def __init__(self, url: str) -> None:
        where = urlsplit(url)
        host = where.hostname or "127.0.0.1"
        self.host = host
        self.socket = socket.create_connection((host, where.port), timeout=REQUEST_TIMEOUT_S)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def post(self, path: str, body: bytes, content_type: str = JSON) -> tuple[int, bytes]:
        """(status, body) of the answer to POST `body` to `path`."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.socket.sendall(head.encode() + body)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._receive()
        lines = self.buffer[:end].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        lengths = [int(line[15:]) for line in lines[1:] if line[:15].lower() == b"content-length:"]
        length = lengths[0] if lengths else None
        if length is None:
            raise ConnectionError(f"an answer of status {status} came without a Content-Length")
        start = end + 4
        while len(self.buffer) < start + length:
            self._receive()
        answer, self.buffer = self.buffer[start : start + length], self.buffer[start + length :]
        return status, answer

    def _receive(self) -> None:
        chunk = self.socket.recv(1 << 20)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.socket.close()


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
