"""`service.serving`: the limits every service is served under, on a real uvicorn server in a
thread of the test (loopback): requests in flight beyond the bound are answered 503 `busy`
with Retry-After; the ledger's block streams are capped; `stop` ends the server, even with a
request body that never ends; each request is logged once, without its query or its client."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.types import ASGIApp
from waiting import wait_until

from ledger import open_ledger
from ledger.api import LedgerNode, create_app
from service.serving import ServeLimits, server
from simulation.processes import free_port
from simulation.scenario import Scenario


def serve_in_thread(
    app: ASGIApp, limits: ServeLimits
) -> tuple[str, threading.Event, threading.Thread]:
    port = free_port()
    stop = threading.Event()
    running = server(app, "127.0.0.1", port, limits, stop)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    wait_until(lambda: running.started, 10, "the server to start", interval_s=0.02)
    return f"http://127.0.0.1:{port}", stop, thread


@pytest.fixture
def slow_app() -> Iterator[tuple[str, threading.Event]]:
    app = FastAPI()
    release = asyncio.Event()

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        await asyncio.wait_for(release.wait(), 5)
        return {"ok": True}

    @app.get("/fast")
    async def fast() -> dict[str, bool]:
        return {"ok": True}

    url, stop, thread = serve_in_thread(app, ServeLimits(max_in_flight=2))
    yield url, stop
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive(), "setting stop did not end the server"


def test_requests_beyond_the_in_flight_bound_are_told_to_retry(
    slow_app: tuple[str, threading.Event],
) -> None:
    url, _ = slow_app
    holders = [threading.Thread(target=httpx.get, args=(f"{url}/slow",), kwargs={"timeout": 10})]
    holders.append(
        threading.Thread(target=httpx.get, args=(f"{url}/slow",), kwargs={"timeout": 10})
    )
    for holder in holders:
        holder.start()
    time.sleep(0.5)
    answer = httpx.get(f"{url}/fast", timeout=5)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "busy"
    assert answer.headers["retry-after"] == "1"
    for holder in holders:
        holder.join()
    assert httpx.get(f"{url}/fast", timeout=5).status_code == 200


def test_block_streams_beyond_the_cap_are_refused_with_retry_after(tmp_path: Path) -> None:
    scenario = Scenario()
    ledger = open_ledger(f"sqlite:///{tmp_path}/l.sqlite", scenario.genesis_raw, scenario.sequencer)
    node = LedgerNode(ledger, max_streams=2)
    url, stop, thread = serve_in_thread(create_app(node), ServeLimits())
    try:
        with (
            httpx.stream("GET", f"{url}/v1/stream/blocks", timeout=10) as first,
            httpx.stream("GET", f"{url}/v1/stream/blocks", timeout=10) as second,
        ):
            readers = [first.iter_lines(), second.iter_lines()]  # kept: dropping one closes it
            assert [next(lines) for lines in readers] == [": waiting", ": waiting"]
            third = httpx.get(f"{url}/v1/stream/blocks", timeout=10)
            assert third.status_code == 503 and third.json()["error"]["code"] == "busy"
            assert third.headers["retry-after"] == "1"
        wait_until(lambda: node.streams == 0, 10, "the closed streams to give back their slots")
    finally:
        stop.set()
        thread.join(timeout=10)
        node.close()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PETRA_MAX_CONNECTIONS", "many", "is not a int"),
        ("PETRA_REQUEST_TIMEOUT_S", "-1", "must be above 0"),
    ],
)
def test_limits_from_the_environment_are_checked(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        ServeLimits.from_env()


def test_limits_from_the_environment_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PETRA_MAX_CONNECTIONS", "17")
    monkeypatch.setenv("PETRA_REQUEST_TIMEOUT_S", "2.5")
    limits = ServeLimits.from_env()
    assert (limits.max_connections, limits.request_timeout_s) == (17, 2.5)


def test_each_request_is_logged_once_without_query_or_client_address(
    slow_app: tuple[str, threading.Event], caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = slow_app
    with caplog.at_level(logging.INFO, logger="petra.requests"):
        assert httpx.get(f"{url}/fast?signature=secret", timeout=5).status_code == 200
        assert httpx.get(f"{url}/nowhere/%0Aforged%20line", timeout=5).status_code == 404
        wait_until(
            lambda: len(_request_lines(caplog)) >= 2, 5, "the request lines", interval_s=0.02
        )
    lines = _request_lines(caplog)
    assert len(lines) == 2
    assert re.fullmatch(r"GET /fast 200 \d+\.\d ms", lines[0]), lines
    assert re.fullmatch(r"GET /nowhere/%0Aforged%20line 404 \d+\.\d ms", lines[1]), lines
    assert not any("127.0.0.1" in line or "secret" in line for line in lines)


def test_a_request_whose_body_never_ends_does_not_hold_up_the_stop() -> None:
    app = FastAPI()

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    url, stop, thread = serve_in_thread(app, ServeLimits(shutdown_s=10))
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as stalled:
        stalled.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.2)
        began = time.monotonic()
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert time.monotonic() - began < 2  # not the ten seconds of grace
        assert stalled.recv(1024) == b""  # closed unanswered: nothing was done with it


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The request log's lines so far (another logger's records do not count)."""
    return [r.getMessage() for r in caplog.records if r.name == "petra.requests"]
