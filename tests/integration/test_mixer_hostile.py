"""Hostile requests against the real `petra mixer serve` (issue 14): the shared corpus of
hostile bodies (tests/hostile.py) and hypothesis-generated JSON to every route that takes a
body, then schemathesis over the coordinator's own OpenAPI document, valid and invalid
requests. Nothing may get a 5xx or another error shape, nothing may leave a traceback in the
log, and an honest mix still lands afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hostile import (
    HOSTILE_BODIES,
    assert_no_traceback,
    assert_refused_cleanly,
    hostile_json,
    json_bytes,
    send_corpus,
)
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from assets import Keypair
from ledger.client import LedgerClient
from mixer.client import join_request
from simulation.bench.mixer import DENOMINATION, CoordinatorProcess, mix_all

from .fuzzing import Case, fuzz
from .test_mixer import Chain, assert_paid, chain_fixture, mixing

__all__ = ["chain_fixture"]  # the module's ledger node

PEERS = 3
EXAMPLES_PER_OPERATION = 60
HYPOTHESIS_EXAMPLES = 150


@dataclass
class Service:
    url: str
    log: Path
    running: str  # a pool whose run has started, so its messages reach the real decoder


@pytest.fixture(scope="module")
def service(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`petra mixer serve` for pools of PEERS, with one pool running (its peers joined and
    stay silent)."""
    log = tmp_path_factory.mktemp("mixer-hostile") / "coordinator.log"
    process = CoordinatorProcess(chain.genesis, chain.url, PEERS, log, start_s=600, timeout_s=600)
    try:
        process.wait_until_serving()
        owners = [Keypair.generate() for _ in range(PEERS)]
        pools = {_join(process.url, chain, owner) for owner in owners}
        (running,) = pools
        yield Service(process.url, log, running)
    finally:
        process.stop()


def _join(url: str, chain: Chain, owner: Keypair) -> str:
    (outpoint,) = chain.fund([owner])
    body = join_request(DENOMINATION, outpoint, owner, int(time.time()))
    answer = httpx.post(f"{url}/v1/join", json=body, timeout=10)
    assert answer.status_code == 201, answer.text
    pool: str = answer.json()["pool"]
    return pool


def _body_routes(service: Service) -> list[str]:
    return [
        "/v1/join",
        f"/v1/pools/{service.running}/messages",
        "/v1/pools/nope/messages",
    ]


def test_the_hostile_corpus_is_refused_cleanly_on_every_route(service: Service) -> None:
    failures: list[str] = []
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for path in _body_routes(service):
            failures += send_corpus(client, "POST", path)
    assert not failures, "\n".join(failures)
    assert_no_traceback(service.log)


def test_the_corpus_names_its_attacks() -> None:
    assert len({hostile.name for hostile in HOSTILE_BODIES}) == len(HOSTILE_BODIES)


def test_generated_json_is_refused_cleanly_on_every_route(service: Service) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as client:

        @given(value=hostile_json())
        @settings(
            max_examples=HYPOTHESIS_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def send(value: Any) -> None:
            raw = json_bytes(value)
            for path in _body_routes(service):
                answer = client.post(
                    path, content=raw, headers={"content-type": "application/json"}
                )
                assert_refused_cleanly(answer, f"POST {path} {raw[:200]!r}")
                assert answer.status_code != 202, "a stranger's message was relayed"

        send()
    assert_no_traceback(service.log)


def _check(case: Case, service: Service) -> None:
    if "{pool}" in case.operation.path and case.path_parameters is not None:
        case.path_parameters["pool"] = service.running  # reach the decoders, not a 404
    answer = case.call(base_url=service.url, timeout=40)
    what = case.as_curl_command()
    assert answer.status_code < 500, f"{what}\n-> {answer.status_code} {answer.text}"
    assert "Traceback" not in answer.text, what
    if not 200 <= answer.status_code < 300:
        body = answer.json()
        assert isinstance(body, dict) and set(body) == {"error"}, f"{what}: {body!r}"
        assert isinstance(body["error"].get("code"), str), f"{what}: {body!r}"
        assert isinstance(body["error"].get("message"), str), f"{what}: {body!r}"


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_schemathesis_finds_no_server_error(service: Service, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    document = httpx.get(f"{service.url}/openapi.json", timeout=10).json()
    for path, method in (("/v1/join", "post"), ("/v1/pools/{pool}/messages", "post")):
        body = document["paths"][path][method]["requestBody"]["content"]["application/json"]
        assert body["schema"]["properties"], f"{path} has no request schema"
    fuzz(
        schema,
        mode,
        lambda case: _check(case, service),
        at_least=4,
        examples=EXAMPLES_PER_OPERATION,
    )
    assert_no_traceback(service.log)


def test_an_honest_mix_lands_after_the_onslaught(chain: Chain, service: Service) -> None:
    """Last in the module: after everything above, the service still mixes, and its log has
    no traceback."""
    owners = [Keypair.generate() for _ in range(PEERS)]
    with LedgerClient(chain.url) as ledger:
        clients = mixing(chain, service.url, owners, ledger)
        try:
            _, results = mix_all(clients)
        finally:
            for client in clients:
                client.close()
        assert_paid(ledger, results)
    assert_no_traceback(service.log)
