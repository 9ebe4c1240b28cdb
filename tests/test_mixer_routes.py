"""`mixer.api.PeerRoutes`: the two routes every peer calls, served ahead of FastAPI, document
and answer as the FastAPI routes did (their answers to peers:
tests/integration/test_mixer_api.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from assets.schemas import request_body
from mixer.api import create_app
from mixer.coordinator import Coordinator
from mixer.schemas import ENVELOPE, POLL_QUERY

CHAIN = b"c" * 32


@pytest.fixture
def coordinator() -> Coordinator:
    return Coordinator(object(), CHAIN, ledger_watch=None)  # type: ignore[arg-type]


@pytest.fixture
def http(coordinator: Coordinator) -> Iterator[TestClient]:
    with TestClient(create_app(coordinator, ticker=False), raise_server_exceptions=False) as client:
        yield client


def as_fastapi_documented_them() -> dict[str, Any]:
    """The OpenAPI paths of the two routes declared as FastAPI routes, as they were."""
    app = FastAPI()

    @app.get(
        "/v1/pools/{pool}/events",
        summary="A peer's events of a pool (long poll, signed by the peer)",
        openapi_extra=POLL_QUERY,
    )
    async def events(pool: str, request: Request) -> None: ...

    @app.post(
        "/v1/pools/{pool}/messages",
        status_code=202,
        summary="Relay a message to the pool",
        openapi_extra=request_body(ENVELOPE),
    )
    async def message(pool: str, request: Request) -> dict[str, Any]:
        return {}

    paths: dict[str, Any] = app.openapi()["paths"]
    events_answer = paths["/v1/pools/{pool}/events"]["get"]["responses"]["200"]
    events_answer["content"]["application/json"]["schema"] = {}  # it answered a Response
    return paths


def test_the_openapi_document_is_as_fastapi_made_it(coordinator: Coordinator) -> None:
    document = create_app(coordinator, ticker=False).openapi()
    assert {p: document["paths"][p] for p in as_fastapi_documented_them()} == (
        as_fastapi_documented_them()
    )
    assert list(document["paths"])[:4] == [
        "/v1/join",
        "/v1/pools/{pool}/events",
        "/v1/pools/{pool}/messages",
        "/v1/pools/{pool}",
    ]


def refusals(coordinator: Coordinator, code: str) -> float:
    value = coordinator.registry.get_sample_value("petra_mixer_refusals_total", {"code": code})
    return value or 0.0


def test_refusals_answer_the_error_shape_and_are_counted(
    http: TestClient, coordinator: Coordinator
) -> None:
    answer = http.post("/v1/pools/nowhere/messages", content=b"{}")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "malformed"
    answer = http.post("/v1/pools/nowhere/messages", json={"message": {"kind": "announce"}})
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found")
    answer = http.get("/v1/pools/nowhere/events", params={"peer": "ab"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "malformed")
    assert answer.headers["content-type"] == "application/json"
    assert refusals(coordinator, "malformed") == 2
    assert refusals(coordinator, "not_found") == 1


def test_other_methods_are_refused_with_allow(http: TestClient) -> None:
    answer = http.put("/v1/pools/p/messages")
    assert (answer.status_code, answer.headers["allow"]) == (405, "POST")
    assert answer.json() == {"error": {"code": "bad_request", "message": "Method Not Allowed"}}
    answer = http.post("/v1/pools/p/events")
    assert (answer.status_code, answer.headers["allow"]) == (405, "GET, HEAD")


def test_other_paths_go_on_to_fastapi(http: TestClient) -> None:
    assert http.get("/v1/pools/nowhere").json()["error"]["code"] == "not_found"
    assert http.get("/v1/pools/nowhere/events/more").status_code == 404
    assert http.get("/v1/pools//events").status_code == 404
