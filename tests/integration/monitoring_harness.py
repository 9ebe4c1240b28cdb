"""The monitoring service under test: its store on a temporary SQLite file, served by uvicorn
on loopback in a thread (`served`), for the browser, MQTT and fuzzing tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI
from waiting import wait_until

from simulation.processes import free_port


@contextmanager
def served(app: FastAPI, what: str = "the monitoring service") -> Iterator[str]:
    """`app` under uvicorn on a free loopback port, in a thread; its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-monitor-http", daemon=True)
    thread.start()

    def up_or_ended() -> bool:
        return bool(server.started) or not thread.is_alive()

    wait_until(up_or_ended, 30, f"{what} on port {port}")
    assert server.started, f"{what} did not start on port {port}"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive()
