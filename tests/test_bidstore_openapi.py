"""The bid store's OpenAPI document describes every answer: each route's 2xx answer has a
response schema naming a model with its fields (issue 15)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bidstore.api import create_app
from bidstore.service import BidStore
from ledger.client import LedgerClient
from simulation.scenario import Scenario


@pytest.fixture
def document() -> Iterator[dict[str, Any]]:
    """The store's /openapi.json, over no ledger: the document needs none."""
    with LedgerClient("http://127.0.0.1:9", retries=0) as ledger:
        store = BidStore(ledger, Scenario().genesis)
        with TestClient(create_app(store, run=False)) as http:
            answer = http.get("/openapi.json")
            assert answer.status_code == 200
            yield answer.json()


def test_every_answer_of_every_route_has_a_schema(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    routes = 0
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            routes += 1
            answers = {c: r for c, r in operation["responses"].items() if c.startswith("2")}
            assert answers, f"{method} {path} documents no 2xx answer"
            for code, answer in answers.items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                assert schema, f"{method} {path} {code}: no JSON schema"
                name = schema["$ref"].rsplit("/", 1)[-1]
                assert components[name]["properties"], f"{name} has no fields"
    assert routes == 11
