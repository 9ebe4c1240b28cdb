"""The DSO node's OpenAPI document describes every answer: each route's 2xx answer has a
response schema, and a JSON one names a model with its fields (issue 15)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openapi_answers import assert_every_answer_has_a_schema

from dso.api import create_app
from dso.service import DsoService
from dso.store import DsoStore
from ledger.client import LedgerClient
from simulation.scenario import Scenario


@pytest.fixture
def document(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The node's /openapi.json, over no ledger: the document needs none."""
    scenario = Scenario()
    store = DsoStore(f"sqlite:///{tmp_path / 'dso.sqlite'}")
    with LedgerClient("http://127.0.0.1:9", retries=0) as ledger:
        service = DsoService(store, ledger, scenario.genesis, scenario.dso)
        try:
            with TestClient(create_app(service, docs=True)) as http:
                answer = http.get("/openapi.json")
                assert answer.status_code == 200
                yield answer.json()
        finally:
            service.close()
            store.close()


def test_every_answer_of_every_route_has_a_schema(document: dict[str, Any]) -> None:
    assert assert_every_answer_has_a_schema(document, json_required=False) == 28
