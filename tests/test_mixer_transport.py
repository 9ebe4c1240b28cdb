"""The mixer client's keep-alive transport (`mixer.transport`): requests and answers as httpx
sends and reads them, one connection kept while the server keeps it, a new one once the
server closed it, and failures raised as httpx's transport errors; a `MixClient` writing its
own requests onto it (`KeepAliveTransport.exchange`) is read by a server as httpx's are."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from assets import Fa, Keypair, Outpoint
from ledger.client import LedgerClient
from mixer.client import MixClient
from mixer.transport import KeepAliveTransport
from simulation.processes import free_port


class Echo(http.server.BaseHTTPRequestHandler):
    """Answers each request with its method, path, body and the client's port; closes the
    connection after a request to /close."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        port = self.client_address[1]
        kind = self.headers.get("Content-Type", "")
        answer = f'{{"method":"{self.command}","path":"{self.path}","port":{port},'.encode()
        answer += f'"type":"{kind}",'.encode()
        answer += b'"body":"' + body + b'"}'
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        if self.path == "/close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = _answer

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    serving = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=serving.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{serving.server_address[1]}"
    serving.shutdown()
    serving.server_close()


def test_requests_share_one_connection_until_the_server_closes_it(server: str) -> None:
    with httpx.Client(base_url=server, transport=KeepAliveTransport()) as client:
        first = client.get("/a", params={"x": "1"})
        second = client.post("/b", content=b"hello")
        closing = client.get("/close")
        after = client.get("/c")
    assert first.status_code == 201
    assert first.json()["path"] == "/a?x=1"
    assert second.json()["method"] == "POST"
    assert second.json()["body"] == "hello"
    assert first.json()["port"] == second.json()["port"] == closing.json()["port"]
    assert after.json()["port"] != closing.json()["port"]  # a new connection after the close


def test_a_refused_connection_is_httpx_connect_error() -> None:
    with (
        httpx.Client(
            base_url=f"http://127.0.0.1:{free_port()}", transport=KeepAliveTransport()
        ) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.get("/")


def test_a_mix_clients_own_requests_reach_the_server_as_httpxs_do(server: str) -> None:
    query: dict[str, str | int] = {"after": 3, "key": "ab" * 32, "signature": "cd" * 64, "wait": 20}
    body = b"a-message"
    with (
        LedgerClient("http://127.0.0.1:9", retries=0) as ledger,
        MixClient(
            f"{server}/mixer", ledger, bytes(32), Keypair.generate(), Outpoint(bytes(32), 0), Fa(1)
        ) as client,
        httpx.Client(base_url=f"{server}/mixer/v1") as plain,
    ):
        requests: list[tuple[str, dict[str, str | int] | None, bytes | None]] = [
            ("/pools/p1/events", query, None),
            ("/pools/odd id/messages", None, body),
            ("/join", None, body),
        ]
        for path, params, content in requests:
            own = client._exchange("POST" if content else "GET", path, params, content)
            headers = {"Content-Type": "application/json"} if content else None
            made = plain.request(
                "POST" if content else "GET", path, params=params, content=content, headers=headers
            )
            assert own.status_code == made.status_code == 201
            mine, theirs = own.json(), made.json()
            assert mine.pop("port") != theirs.pop("port")  # each on its own connection
            assert mine == theirs, (mine, theirs)
        assert client._exchange("GET", "/close", None, None).status_code == 201
        assert client._exchange("GET", "/again", None, None).json()["path"] == "/mixer/v1/again"


def test_a_mix_clients_own_request_to_no_server_is_httpx_connect_error() -> None:
    with (
        LedgerClient("http://127.0.0.1:9", retries=0) as ledger,
        MixClient(
            f"http://127.0.0.1:{free_port()}",
            ledger,
            bytes(32),
            Keypair.generate(),
            Outpoint(bytes(32), 0),
            Fa(1),
        ) as client,
        pytest.raises(httpx.ConnectError),
    ):
        client._exchange("GET", "/forming", None, None)
