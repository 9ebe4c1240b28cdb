"""The DSO node's OpenAPI document describes every answer: each route's 2xx answer has a
response schema, and a JSON one names a model with its fields (issue 15)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

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
    components = document["components"]["schemas"]
    routes = 0
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            routes += 1
            answers = {c: r for c, r in operation["responses"].items() if c.startswith("2")}
            assert answers, f"{method} {path} documents no 2xx answer"
            for code, answer in answers.items():
                content = answer.get("content")
                assert content, f"{method} {path} {code} has no content"
                for media_type, body in content.items():
                    schema = body.get("schema")
                    assert schema, f"{method} {path} {code} {media_type}: empty schema"
                    if media_type == "application/json":
                        name = schema["$ref"].rsplit("/", 1)[-1]
                        assert components[name]["properties"], f"{name} has no fields"
    assert routes == 28
