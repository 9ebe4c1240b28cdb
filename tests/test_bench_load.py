"""The benches' one-thread load generator (simulation/bench/load.py, `drive_posts`) against a
plain HTTP/1.1 server on loopback: every item posted once and answered on its own connection,
bodies larger than a socket takes at once, and each way a run fails."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from simulation.bench.load import drive_posts


class BenchFailed(Exception):
    pass


class _Echo(BaseHTTPRequestHandler):
    """Answers a POST with its body's length and first byte; `/close` hangs up instead."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/close":
            self.close_connection = True
            return
        answer = f"{len(body)} {body[:1].decode()}".encode()
        self.send_response(200 if self.headers["Content-Type"] == "text/plain" else 415)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hung up before its answer (the failing runs do, on purpose) is no
        error of the server's; anything else is printed as the standard library does."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@pytest.fixture
def url() -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_every_item_is_posted_once_and_checked_against_its_own_answer(url: str) -> None:
    items = [bytes([65 + n % 26]) * (1 + n * 37 % 5_000) for n in range(300)]
    items.append(b"z" * (8 << 20))  # more than a loopback socket takes in one send
    checked: list[bytes] = []
    ticked: list[bytes] = []

    def check(item: bytes, status: int, answer: bytes) -> str | None:
        checked.append(item)
        expected = f"{len(item)} {item[:1].decode()}".encode()
        return None if (status, answer) == (200, expected) else f"{status} {answer!r}"

    elapsed, latencies = drive_posts(
        url, "/echo", "text/plain", items, 7, bytes, check, ticked.append, BenchFailed
    )

    assert sorted(checked) == sorted(items) and sorted(ticked) == sorted(items)
    assert len(latencies) == len(items) and all(0 < t <= elapsed for t in latencies)


def test_the_first_failed_check_stops_the_run_with_its_reason(url: str) -> None:
    with pytest.raises(BenchFailed, match="415"):
        drive_posts(
            url,
            "/echo",
            "application/json",  # the server answers 415
            [b"a"] * 20,
            3,
            bytes,
            lambda _, status, answer: None if status == 200 else f"refused: {status}",
            lambda _: None,
            BenchFailed,
        )


def test_a_server_that_hangs_up_fails_the_run(url: str) -> None:
    with pytest.raises(BenchFailed, match="closed the connection"):
        drive_posts(
            url,
            "/close",
            "text/plain",
            [b"a"] * 5,
            2,
            bytes,
            lambda *_: None,
            lambda _: None,
            BenchFailed,
        )


def test_no_server_fails_before_the_clock_starts() -> None:
    with pytest.raises(BenchFailed, match="cannot connect"):
        drive_posts(
            "http://127.0.0.1:9",
            "/",
            "text/plain",
            [b"a"],
            1,
            bytes,
            lambda *_: None,
            lambda _: None,
            BenchFailed,
        )
