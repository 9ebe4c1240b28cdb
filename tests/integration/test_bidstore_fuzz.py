"""Schemathesis over every operation of the bid store's own schema (docs/bidstore-api.md),
valid and invalid requests, against a store on a real ledger node: no answer is a 5xx, and every
refusal has the common error shape. Every body has a request schema (`bidstore.schemas`), so
valid generated bodies get past the shape checks to the decoders behind them (issue 14)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis import GenerationMode

from assets.keyfile import dump_keys
from bidstore.api import create_app
from bidstore.service import BidStore, Limits
from ledger.client import LedgerClient
from simulation.processes import stop
from simulation.scenario import Scenario

from .fuzzing import Case, fuzz
from .nodes import serve_ledger

OPERATIONS = 11  # every route of docs/bidstore-api.md
BODY_OPERATIONS = {"/v1/orders", "/v1/takes", "/v1/trades/{trade_id}/proposal"}
EXAMPLES_PER_OPERATION = 60


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The store's app over a real ledger node (not run: no follower or ticker needed)."""
    tmp = tmp_path_factory.mktemp("bidstore-fuzz")
    scenario = Scenario(epoch=int(time.time()) - 10, interval_s=1)
    genesis, keys = tmp / "genesis.json", tmp / "keys.json"
    genesis.write_bytes(scenario.genesis_raw)
    keys.write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    url, process = serve_ledger(genesis, keys, f"sqlite:///{tmp / 'ledger.sqlite'}", tmp / "l.log")
    ledger = LedgerClient(url)
    limits = Limits(
        requests_per_s=10_000,
        burst=10_000,
        address_requests_per_s=10_000,
        address_burst=10_000,
        service_requests_per_s=10_000,
        service_burst=10_000,
    )
    try:
        yield create_app(BidStore(ledger, scenario.genesis, limits=limits), run=False)
    finally:
        ledger.close()
        stop(process)


def _assert_error_shape(body: Any, what: str) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, f"{what}: {body!r}"
    error = body["error"]
    assert isinstance(error, dict), f"{what}: {body!r}"
    assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str), what


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_generated_requests_get_no_server_error_and_the_error_shape(
    app: FastAPI, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    deep: defaultdict[str, int] = defaultdict(int)  # bodies refused past their shape checks

    def check(case: Case) -> None:
        what = f"{case.method.upper()} {case.formatted_path} {case.as_curl_command()}"
        try:
            answer = case.call(timeout=30)
        except Exception as exc:  # the app raised: a real server would have answered 500
            raise AssertionError(f"{what}\n-> raised {exc!r}") from exc
        assert answer.status_code < 500, f"{what}\n-> {answer.status_code} {answer.text}"
        if not 200 <= answer.status_code < 300:
            _assert_error_shape(answer.json(), what)
            error = answer.json()["error"]
            if error["code"] != "malformed" or "canonical" in error["message"]:
                deep[case.operation.path] += 1

    fuzz(schema, mode, check, at_least=OPERATIONS, examples=EXAMPLES_PER_OPERATION)
    if mode is GenerationMode.POSITIVE:
        reached = {path for path in BODY_OPERATIONS if deep[path]}
        assert reached == BODY_OPERATIONS, f"bodies that never got past their shape: {deep}"
