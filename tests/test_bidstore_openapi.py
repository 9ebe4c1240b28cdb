"""The bid store's OpenAPI document describes every answer: each route's 2xx answer has a
response schema naming a model with its fields (issue 15)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openapi_answers import assert_every_answer_has_a_schema

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
    assert assert_every_answer_has_a_schema(document, json_required=True) == 11
