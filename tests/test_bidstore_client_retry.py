"""`BidStoreClient` through a SOCKS5 port whose circuits fail: a request that never left is
tried again on a new connection, one that may have reached the store never is.

The SOCKS5 server here speaks RFC 1928 on loopback and answers the failures Tor answers when a
circuit to an onion service cannot be built (reply 0x06, "TTL expired"); the real Tor network
is in tests/integration/test_bidstore_tor.py."""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

import bidstore.client
from bidstore.client import TOR_ATTEMPTS, BidStoreClient, BidStoreClientError

TTL_EXPIRED = 0x06


class Store(BaseHTTPRequestHandler):
    """A stand-in for the store's status route, counting the requests that reached it."""

    reached = 0

    def do_GET(self) -> None:
        type(self).reached += 1
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


class Socks5(socketserver.ThreadingTCPServer):
    """Refuses the first `failures` CONNECTs with TTL expired, then relays to the target."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, failures: int) -> None:
        super().__init__(("127.0.0.1", 0), _SocksHandler)
        self.failures = failures
        self.connects = 0
        self.lock = threading.Lock()


class _SocksHandler(socketserver.BaseRequestHandler):
    server: Socks5

    def handle(self) -> None:
        client: socket.socket = self.request
        version, count = _read(client, 2)
        _read(client, count)  # the methods offered: "no authentication" is among them
        client.sendall(bytes([5, 0]))
        _, command, _, kind = _read(client, 4)
        if kind == 1:
            host = socket.inet_ntoa(_read(client, 4))
        elif kind == 3:
            host = _read(client, _read(client, 1)[0]).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET6, _read(client, 16))
        (port,) = struct.unpack("!H", _read(client, 2))
        assert (version, command) == (5, 1)
        with self.server.lock:
            self.server.connects += 1
            fail = self.server.connects <= self.server.failures
        if fail:
            client.sendall(bytes([5, TTL_EXPIRED, 0, 1, 0, 0, 0, 0, 0, 0]))
            return
        with socket.create_connection((host, port)) as target:
            client.sendall(bytes([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]))
            _relay(client, target)


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the client left")
        data += chunk
    return data


def _relay(a: socket.socket, b: socket.socket) -> None:
    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            sink.close()

    back = threading.Thread(target=pump, args=(b, a), daemon=True)
    back.start()
    pump(a, b)
    back.join(5)


@pytest.fixture
def store() -> Iterator[int]:
    Store.reached = 0
    server = HTTPServer(("127.0.0.1", 0), Store)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def socks(failures: int) -> Socks5:
    server = Socks5(failures)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bidstore.client, "TOR_RETRY_PAUSES_S", (0.0,))


@pytest.mark.parametrize("failures", range(TOR_ATTEMPTS))
def test_a_failed_circuit_is_tried_again_and_the_request_sent_once(
    store: int, failures: int
) -> None:
    proxy = socks(failures)
    try:
        client = BidStoreClient(
            f"http://127.0.0.1:{store}", tor_socks=proxy.server_address[1], timeout_s=5
        )
        assert client.status() == {"status": "ok"}
        assert (proxy.connects, Store.reached) == (failures + 1, 1)
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_after_every_attempt_failed_the_store_is_unreachable(store: int) -> None:
    proxy = socks(TOR_ATTEMPTS)
    try:
        client = BidStoreClient(
            f"http://127.0.0.1:{store}", tor_socks=proxy.server_address[1], timeout_s=5
        )
        with pytest.raises(BidStoreClientError) as refused:
            client.status()
        assert refused.value.code == "unreachable"
        assert "through Tor" in refused.value.message
        assert (proxy.connects, Store.reached) == (TOR_ATTEMPTS, 0)
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_without_tor_a_refused_connection_is_not_tried_again(store: int) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, never listening: connections are refused
        client = BidStoreClient(f"http://127.0.0.1:{port}", timeout_s=5)
        with pytest.raises(BidStoreClientError) as refused:
            client.status()
    assert refused.value.code == "unreachable"
