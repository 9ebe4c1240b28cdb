"""Schema-driven hostile requests against the real `petra ledger serve` process (SQLite).

Schemathesis (its Python API: its pytest loader `schemathesis.pytest.from_fixture` fails
under pytest 9) reads the node's own `/openapi.json` and, for every operation, sends a bounded
number of generated requests, valid and invalid ones. Whatever it sends, the node must never
answer 5xx, and every answer that is not 2xx must have the common error shape of docs/api.md:
`{"error": {"code": str, "message": str, ...}}`. Then every integer parameter gets integers
beyond 64 bits, deterministically.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import GenerationMode

from assets import Authorization, Fa, Keypair, encode_transaction
from assets.keyfile import dump_keys
from simulation.processes import stop
from simulation.scenario import Scenario, pay

from .fuzzing import Case, fuzz
from .nodes import authorize_now, serve_ledger

EXAMPLES_PER_OPERATION = 100
STREAM_PATH = "/v1/stream/blocks"
STREAM_FIRST_EVENT_S = 5.0  # the stream sends a block or a ": waiting" comment at once
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Every integer parameter of the API, with what else its operation needs.
_TXID = "00" * 32
INTEGER_PARAMETERS: list[tuple[str, str, dict[str, Any]]] = [
    ("/v1/outputs/{txid}/{index}", "index", {"txid": _TXID}),
    ("/v1/blocks/{height}", "height", {}),
    ("/v1/blocks", "from", {}),
    ("/v1/blocks", "limit", {}),
    ("/v1/proofs/inclusion", "index", {}),
    ("/v1/proofs/inclusion", "size", {}),
    ("/v1/proofs/consistency", "old", {}),
    ("/v1/proofs/consistency", "new", {}),
    ("/v1/regulation/{interval}", "interval", {}),
    (STREAM_PATH, "from", {}),
]


def _submit(url: str, raw: bytes) -> httpx.Response:
    return httpx.post(f"{url}/v1/transactions", content=raw, timeout=30)


@pytest.fixture(scope="module")
def node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A node over a fresh SQLite store holding a few blocks: a regulation authorizing meter
    `m1` (one-second intervals, so that it is in force at once) and two issues."""
    tmp_path = tmp_path_factory.mktemp("hostile-node")
    scenario = Scenario(epoch=int(time.time()) - 10, interval_s=1)
    meter = Keypair.generate()
    (tmp_path / "genesis.json").write_bytes(scenario.genesis_raw)
    (tmp_path / "keys.json").write_bytes(dump_keys({"sequencer-0": scenario.sequencer}, None))
    url, process = serve_ledger(
        tmp_path / "genesis.json",
        tmp_path / "keys.json",
        f"sqlite:///{tmp_path}/ledger.sqlite",
        tmp_path / "node.log",
    )
    try:
        authorize_now(url, scenario, [Authorization("m1", meter.public_key, 10**6, 10**6)])
        alice = Keypair.generate()
        for nonce in (1, 2):
            issue = scenario.issue("m1", meter, nonce, [pay(Fa(100 * nonce), alice)])
            answer = _submit(url, encode_transaction(issue))
            assert answer.status_code == 200, answer.text
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def node_schema(node_url: str) -> schemathesis.BaseSchema:
    """The node's OpenAPI document, as it serves it."""
    return schemathesis.openapi.from_url(f"{node_url}/openapi.json")


def _assert_error_shape(status: int, body: Any, what: str) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, f"{what}: {status} {body!r}"
    error = body["error"]
    assert isinstance(error, dict), f"{what}: {status} {body!r}"
    assert isinstance(error.get("code"), str), f"{what}: {status} {body!r}"
    assert isinstance(error.get("message"), str), f"{what}: {status} {body!r}"


def _check_stream(case: Case, base_url: str) -> None:
    """The block stream never ends: read its first event only (a block or a keep-alive)."""
    kwargs = case.as_transport_kwargs(base_url=base_url)
    what = f"GET {STREAM_PATH} params={kwargs.get('params')!r}"
    with httpx.stream(
        "GET",
        kwargs["url"],
        params=kwargs.get("params"),
        headers=kwargs.get("headers"),
        timeout=STREAM_FIRST_EVENT_S,
    ) as answer:
        assert answer.status_code < 500, f"{what}: {answer.status_code} {answer.read()!r}"
        if not answer.is_success:
            _assert_error_shape(answer.status_code, json.loads(answer.read()), what)
            return
        try:
            first = next(answer.iter_lines())
        except (httpx.TransportError, StopIteration) as exc:
            raise AssertionError(f"{what}: 200, then the stream broke: {exc!r}") from exc
        assert first.startswith(("event: block", ": waiting")), f"{what}: {first!r}"


def _check(case: Case, base_url: str) -> None:
    if case.operation.path == STREAM_PATH:
        _check_stream(case, base_url)
        return
    answer = case.call(base_url=base_url, timeout=30)
    what = case.as_curl_command()
    assert answer.status_code < 500, f"{what}\n-> {answer.status_code} {answer.text}"
    if not 200 <= answer.status_code < 300:
        _assert_error_shape(answer.status_code, answer.json(), what)


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_no_request_gets_a_server_error_or_another_error_shape(
    node_schema: schemathesis.BaseSchema, node_url: str, mode: GenerationMode
) -> None:
    """Every operation of the node's own schema, with valid (positive) or invalid (negative)
    generated requests; all the operations' failures are reported together."""
    fuzz(
        node_schema,
        mode,
        lambda case: _check(case, node_url),
        at_least=12,
        examples=EXAMPLES_PER_OPERATION,
    )


def _integer_parameters(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, parameter["name"])
        for path, methods in document["paths"].items()
        for operation in methods.values()
        for parameter in operation.get("parameters", [])
        if '"integer"' in json.dumps(parameter.get("schema", {}))
    }


def test_the_boundary_cases_cover_every_integer_parameter(node_url: str) -> None:
    document = httpx.get(f"{node_url}/openapi.json", timeout=30).json()
    assert _integer_parameters(document) == {(p, n) for p, n, _ in INTEGER_PARAMETERS}


@pytest.mark.parametrize(
    ("path", "name", "others"),
    [
        pytest.param(path, name, others, id=f"{path}:{name}")
        for path, name, others in INTEGER_PARAMETERS
    ],
)
def test_integers_beyond_64_bits_are_refused_not_crashed_on(
    node_schema: schemathesis.BaseSchema,
    node_url: str,
    path: str,
    name: str,
    others: dict[str, Any],
) -> None:
    """A JSON integer parameter has no size limit, a SQL INTEGER column has 64 bits."""
    operation = node_schema[path]["GET"]
    in_path = "{" + name + "}" in path
    for value in (INT64_MAX + 1, INT64_MIN - 1, 10**30, INT64_MAX, INT64_MIN):
        if in_path:
            case = operation.Case(path_parameters={**others, name: value})
        else:
            case = operation.Case(path_parameters=others, query={name: value})
        _check(case, node_url)
